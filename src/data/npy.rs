//! float32 `.npy` files (NumPy's format) for `predict`'s input and output batches.

use crate::checkpoint;
use crate::error::{Error, Result};
use std::path::Path;

/// Read a float32 C-order `.npy` as (shape, values).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    parse_npy(&bytes, &path.display().to_string())
}

/// [`read_npy`] of a file's bytes; `path` names it in errors.
pub fn parse_npy(bytes: &[u8], path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    check_header(bytes, path)?;
    let npy = npyz::NpyFile::new(bytes).map_err(|e| Error::file(path, format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(Error::file(path, "array is in Fortran order; save it in C order (np.ascontiguousarray)"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        _ => "structured".to_string(),
    };
    if descr != "<f4" {
        return Err(Error::file(path, format!("array dtype is {}, expected float32 (np.float32)", dtype_name(&descr))));
    }
    // Check the size the header promises against the bytes present before reading, so a
    // header that claims 2^40 values is refused without allocating for them.
    let promised = shape.iter().try_fold(4u128, |acc, &d| acc.checked_mul(d as u128)).unwrap_or(u128::MAX);
    let present = (bytes.len() - header_len(bytes)) as u128;
    if promised != present {
        return Err(Error::file(
            path,
            format!(
                "the header promises shape {shape:?} of float32 ({promised} bytes of data) but the file holds {present} bytes after the header"
            ),
        ));
    }
    let data = npy.into_vec::<f32>().map_err(|e| Error::file(path, format!("reading the float32 values: {e}")))?;
    Ok((shape, data))
}

/// What npyz would trust before reading the header: its length field (npyz allocates that
/// many bytes first) against the file's size; the nesting of brackets (its parser takes time
/// exponential in the depth of unclosed ones: 200 of them never finish); and the shape's
/// product (npyz multiplies the dimensions unchecked) against 64 bits, where every unquoted
/// integer of the header counts, with zeros as ones: no product of the dimensions, in any
/// order, is larger.
fn check_header(bytes: &[u8], path: &str) -> Result<()> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Ok(()); // npyz reports it
    }
    let (declared, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else if bytes.len() >= 12 {
        (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
    } else {
        return Ok(());
    };
    if declared > bytes.len() - start {
        return Err(Error::file(
            path,
            format!("not a .npy file: its header length is {declared} bytes, but only {} bytes follow", bytes.len() - start),
        ));
    }
    let text = &bytes[start..start + declared];
    const MAX_DEPTH: usize = 8;
    let (mut depth, mut product) = (0usize, 1u64);
    let mut quote = None;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if matches!(c, b'(' | b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Error::file(
                        path,
                        format!("not a .npy file: its header nests brackets more than {MAX_DEPTH} deep (a NumPy header nests 2)"),
                    ));
                }
            }
            None if matches!(c, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            None if c.is_ascii_digit() && (i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_')) => {
                let end = text[i..].iter().position(|b| !(b.is_ascii_alphanumeric() || *b == b'_')).map_or(text.len(), |n| i + n);
                let lit: String = text[i..end].iter().filter(|&&b| b != b'_').map(|&b| b as char).collect::<String>().to_lowercase();
                let value = match lit.get(..2) {
                    Some("0x") => u128::from_str_radix(&lit[2..], 16),
                    Some("0o") => u128::from_str_radix(&lit[2..], 8),
                    Some("0b") => u128::from_str_radix(&lit[2..], 2),
                    _ => lit.trim_end_matches('l').parse::<u128>(),
                };
                // Literals past 64 bits npyz refuses itself.
                if let Ok(v) = value.map(|v| u64::try_from(v).unwrap_or(1).max(1)) {
                    product = product.checked_mul(v).ok_or_else(|| {
                        Error::file(path, "not a .npy file: the shape in its header has more than 2^64 elements".to_string())
                    })?;
                }
                i = end;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    Ok(())
}

/// Bytes before the data: magic (6), version (2), header length (2 in version 1, 4 after), header.
fn header_len(bytes: &[u8]) -> usize {
    let n = if bytes.get(6) == Some(&1) {
        bytes.get(8..10).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize + 10)
    } else {
        bytes.get(8..12).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize + 12)
    };
    n.min(bytes.len())
}

/// NumPy's name for a type string: "<f8" -> "float64", "|u1" -> "uint8", ">f4" -> "big-endian float32".
fn dtype_name(descr: &str) -> String {
    let (order, rest) = descr.split_at(descr.len().min(1));
    let (kind, size) = rest.split_at(rest.len().min(1));
    let bits = size.parse::<usize>().ok().and_then(|b| b.checked_mul(8)).map(|b| b.to_string()).unwrap_or_default();
    let name = match kind {
        "f" => format!("float{bits}"),
        "i" => format!("int{bits}"),
        "u" => format!("uint{bits}"),
        "c" => format!("complex{bits}"),
        "b" => "bool".to_string(),
        _ => return format!("'{descr}'"),
    };
    if order == ">" && size != "1" { format!("big-endian {name}") } else { name }
}

/// Write a float32 C-order `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| Error::file(path, e))?;
        w.extend(data.iter().copied()).map_err(|e| Error::file(path, e))?;
        w.finish().map_err(|e| Error::file(path, e))?;
    }
    checkpoint::write_atomic(path, &buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    fn read(name: &str, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
        let p = std::env::temp_dir().join(format!("webdistill-npy-{}-{name}.npy", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let r = read_npy(&p);
        let _ = std::fs::remove_file(&p);
        r
    }

    #[test]
    fn float32_files_read_and_bad_ones_say_what_is_wrong() {
        let vals: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(read("ok", &npy_bytes("<f4", "(1, 2)", &vals)).unwrap(), (vec![1, 2], vec![1.5, -2.0]));

        let e = read("f64", &npy_bytes("<f8", "(2,)", &[0; 16])).unwrap_err().to_string();
        assert!(e.contains("dtype is float64, expected float32") && !e.contains("TypeStr"), "{e}");
        let e = read("u8", &npy_bytes("|u1", "(2,)", &[0; 2])).unwrap_err().to_string();
        assert!(e.contains("dtype is uint8"), "{e}");
        // A size whose bits overflow (the name was computed with an unchecked multiply).
        let e = read("wide", &npy_bytes("|V9223372036854775807", "(2,)", &[0; 2])).unwrap_err().to_string();
        assert!(e.contains("dtype is '|V9223372036854775807', expected float32"), "{e}");

        // A float32 header that promises more than the file holds: a size problem, not a dtype one.
        let e = read("short", &npy_bytes("<f4", "(3, 2)", &vals)).unwrap_err().to_string();
        assert!(e.contains("[3, 2]") && e.contains("24 bytes") && e.contains("holds 8 bytes"), "{e}");
        // 2^40 promised values are refused by arithmetic, not by an allocation.
        let e = read("huge", &npy_bytes("<f4", "(1099511627776,)", &vals)).unwrap_err().to_string();
        assert!(e.contains("4398046511104 bytes"), "{e}");
    }

    #[test]
    fn headers_npyz_would_trust_are_checked_first() {
        // A header length of 4 GiB in a 12-byte file (npyz allocated it before reading).
        let e = parse_npy(b"\x93NUMPY\x02\x00\xff\xff\xff\xff", "big.npy").unwrap_err().to_string();
        assert!(e.contains("big.npy") && e.contains("header length is 4294967295 bytes, but only 0 bytes follow"), "{e}");
        // A shape of 2^64 elements (npyz multiplies it unchecked: a panic with overflow checks).
        let e = parse_npy(&npy_bytes("<f4", "(4294967296, 4294967296)", &[]), "wide.npy").unwrap_err().to_string();
        assert!(e.contains("more than 2^64 elements"), "{e}");
        let e = parse_npy(&npy_bytes("<f4", "(0x100000000, 0, 4_294_967_296)", &[]), "wide.npy").unwrap_err().to_string();
        assert!(e.contains("more than 2^64 elements"), "{e}");
        // 200 unclosed brackets (npyz's parser never finished).
        let e = parse_npy(&npy_bytes("<f4", &"[".repeat(200), &[]), "deep.npy").unwrap_err().to_string();
        assert!(e.contains("nests brackets more than 8 deep"), "{e}");
        // Numbers inside strings are not dimensions; a large but honest shape still reads.
        let vals: Vec<u8> = [1.0f32; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse_npy(&npy_bytes("<f4", "(2, 3)", &vals), "ok.npy").unwrap().0, vec![2, 3]);
        let e = parse_npy(&npy_bytes("<f4", "(4294967296, 4294967295)", &[]), "big.npy").unwrap_err().to_string();
        assert!(e.contains("the header promises shape [4294967296, 4294967295]"), "{e}");
    }
}
