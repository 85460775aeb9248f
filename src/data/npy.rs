//! float32 `.npy` files (NumPy's format) for `predict`'s input and output batches.

use crate::checkpoint;
use crate::error::{Error, Result};
use std::path::Path;

/// Read a float32 C-order `.npy` as (shape, values).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| Error::file(path, format!("not a .npy file: {e}")))?;
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
    let present = (bytes.len() - header_len(&bytes)) as u128;
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
    let bits = size.parse::<usize>().map(|b| (b * 8).to_string()).unwrap_or_default();
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

        // A float32 header that promises more than the file holds: a size problem, not a dtype one.
        let e = read("short", &npy_bytes("<f4", "(3, 2)", &vals)).unwrap_err().to_string();
        assert!(e.contains("[3, 2]") && e.contains("24 bytes") && e.contains("holds 8 bytes"), "{e}");
        // 2^40 promised values are refused by arithmetic, not by an allocation.
        let e = read("huge", &npy_bytes("<f4", "(1099511627776,)", &vals)).unwrap_err().to_string();
        assert!(e.contains("4398046511104 bytes"), "{e}");
    }
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
