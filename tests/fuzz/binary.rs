//! Harnesses of the binary data formats: IDX (raw and gzip), CIFAR batches, safetensors
//! (parse, metadata, loading into a model's store) and float32 .npy.

use crate::engine::{Harness, MIB};
use crate::mutate::{Rng, havoc, write_int};
use crate::text::{json_mutate, sig};
use std::collections::HashMap;
use std::io::{Read, Write};
use webdistill::checkpoint::{self, LoadOptions};
use webdistill::data::formats;
use webdistill::train::ModelCard;

// ---------------------------------------------------------------- gzip helpers

pub fn is_gz(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == 0x1f && b[1] == 0x8b
}

pub fn gzip(b: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The first `cap` bytes a gzip stream decodes to (fewer where it ends or breaks).
pub fn gunzip_prefix(b: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(b).take(cap as u64).read_to_end(&mut out);
    out
}

// ---------------------------------------------------------------- IDX

fn idx(magic_dims: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, magic_dims];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(1);
    let images = idx(3, &[3, 4, 5], &rng.bytes(60));
    let labels = idx(1, &[3], &[0, 9, 4]);
    let one = idx(3, &[1, 1, 1], &[7]);
    let big = idx(3, &[2, 28, 28], &rng.bytes(2 * 784));
    let mut v = vec![images.clone(), labels.clone(), one.clone(), big.clone()];
    for (b, level) in [(&images, 6), (&labels, 9), (&one, 0), (&big, 1)] {
        v.push(gzip(b, level));
    }
    v
}

/// Structure-aware IDX edits on the decoded file (gunzipped first where it is gzip), then
/// gzip again (usually where it was, sometimes where it was not); or edits of the gzip
/// container itself.
fn idx_mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let gz = is_gz(input);
    if gz && rng.one_in(6) {
        // The container: header flags (FTEXT/FHCRC/FEXTRA/FNAME/FCOMMENT), mtime, OS,
        // trailer CRC and ISIZE, truncation of the deflate stream.
        let mut b = input.to_vec();
        match rng.below(4) {
            0 if b.len() > 3 => b[3] = rng.u64() as u8 & 0x1f,
            1 if b.len() >= 8 => {
                let n = b.len();
                let v = rng.interesting();
                write_int(&mut b, n - 4, v, 4, false);
            }
            2 if b.len() >= 8 => {
                let n = b.len();
                let v = rng.u64();
                write_int(&mut b, n - 8, v, 4, false);
            }
            _ => {
                let at = rng.below(b.len() + 1);
                b.truncate(at);
            }
        }
        return b;
    }
    let mut raw = if gz { gunzip_prefix(input, 1 << 20) } else { input.to_vec() };
    if raw.len() < 4 {
        raw.resize(4, 0);
    }
    let ndims = (raw[3] as usize).min(4);
    let dims_at = |i: usize| 4 + 4 * i;
    match rng.below(8) {
        0 => {
            let m = *rng.pick(&[0x0801u32, 0x0803, 0x0802, 0x0804, 0x0800, 0x0903, 0x0b03, 0x0c03, 0x0d03, 0x0e03, 0x0803_0000]);
            let m = if rng.one_in(8) { rng.interesting() as u32 } else { m };
            write_int(&mut raw, 0, m as u64, 4, true);
        }
        1 => {
            // One dimension to a boundary value, the data left as it is.
            let i = rng.below(ndims.max(1));
            if raw.len() < dims_at(i) + 4 {
                raw.resize(dims_at(i) + 4, 0);
            }
            let v = rng.interesting();
            write_int(&mut raw, dims_at(i), v, 4, true);
        }
        2 => {
            // Small dimensions with exactly the data they promise: files that parse.
            let magic = if rng.one_in(2) { 3 } else { 1 };
            let dims: Vec<u32> = (0..magic).map(|_| rng.below(40) as u32 + u32::from(rng.one_in(8))).collect();
            let n: usize = dims.iter().map(|&d| d as usize).product();
            let data = if rng.one_in(2) { rng.bytes(n) } else { (0..n).map(|i| (i % 12) as u8).collect() };
            raw = idx(magic, &dims, &data);
        }
        3 => {
            // The data a few bytes short or long.
            let d = 1 + rng.below(4);
            if rng.one_in(2) {
                raw.truncate(raw.len().saturating_sub(d));
            } else {
                let extra = rng.bytes(d);
                raw.extend(extra);
            }
        }
        4 => {
            // A long run after the data: with gzip, a small file that decodes to a lot.
            let n = rng.below(1 << 20) + 1;
            raw.extend(std::iter::repeat_n(0u8, n));
        }
        5 => {
            let head = dims_at(ndims);
            if raw.len() > head {
                let i = head + rng.below(raw.len() - head);
                raw[i] = *rng.pick(&[9u8, 10, 11, 99, 100, 255]);
            }
        }
        6 => {
            // Two files glued together (concatenated gzip members, too).
            let other = rng.pick(pool).clone();
            let other = if is_gz(&other) { gunzip_prefix(&other, 1 << 16) } else { other };
            raw.extend(other);
        }
        _ => havoc(rng, &mut raw, pool, IDX_DICT, 1 << 16),
    }
    let regzip = if gz { !rng.one_in(8) } else { rng.one_in(8) };
    if regzip {
        let mut out = gzip(&raw, *rng.pick(&[0, 1, 6, 9]));
        if rng.one_in(16) {
            // A second member after the first.
            out.extend(gzip(&rng.bytes_upto(64), 1));
        }
        out
    } else {
        raw
    }
}

const IDX_DICT: &[&[u8]] = &[b"\x00\x00\x08\x03", b"\x00\x00\x08\x01", b"\x1f\x8b\x08\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"];

fn idx_run(b: &[u8]) -> String {
    let images = formats::parse_idx_images(b, "fuzz-images-idx3-ubyte");
    let labels = formats::parse_idx_labels(b, "fuzz-labels-idx1-ubyte");
    let mut out = format!("images: {} | labels: {}", sig(&images), sig(&labels));
    if let Ok((n, h, w, px)) = &images {
        assert_eq!(px.len(), n * h * w, "pixels for {n}x{h}x{w}");
        if *n <= 4096 {
            // With labels (some out of range for 10 classes): the data set checks.
            let lab = idx(1, &[*n as u32], &(0..*n).map(|i| (i % 11) as u8).collect::<Vec<_>>());
            let d = formats::idx_dataset("fuzz", (b, "images"), (&lab, "labels"), &formats::MNIST_CLASSES);
            out.push_str(&format!(" | dataset: {}", sig(&d)));
        }
    }
    if let Ok(l) = &labels {
        assert!(l.iter().all(|&v| v < 256));
    }
    out
}

/// Largest deflate expansion: 258 bytes from one 2-bit-ish code, about 1032:1.
pub const DEFLATE_MAX_RATIO: u64 = 1032;

/// IDX: the image copy (at most the decoded size), the labels as u32 (4x) and the data
/// set's copy, so 8x the decoded bytes; for gzip the decoded bytes are what the header
/// promises, capped by what that much deflate data can hold (1032:1).
fn idx_bound(b: &[u8]) -> u64 {
    let len = b.len() as u64;
    let decoded = if is_gz(b) {
        let head = gunzip_prefix(b, 16);
        let dims = head.get(3).map_or(0, |&d| d as usize).min(3);
        let promised = (0..dims)
            .map(|i| head.get(4 + 4 * i..8 + 4 * i).map_or(0, |d| u32::from_be_bytes(d.try_into().unwrap()) as u128))
            .product::<u128>();
        (promised.min((DEFLATE_MAX_RATIO * len) as u128) as u64) + 4 + 4 * dims as u64
    } else {
        len
    };
    8 * (len + decoded) + MIB
}

pub fn idx_harness() -> Harness {
    Harness {
        name: "idx",
        seeds: idx_seeds,
        mutate: idx_mutate,
        dict: IDX_DICT,
        run: idx_run,
        bound: idx_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}

// ---------------------------------------------------------------- CIFAR

fn cifar_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(2);
    let rec10 = |rng: &mut Rng, l: u8| {
        let mut r = vec![l];
        r.extend(rng.bytes(3072));
        r
    };
    let rec100 = |rng: &mut Rng, c: u8, f: u8| {
        let mut r = vec![c, f];
        r.extend(rng.bytes(3072));
        r
    };
    let one10 = rec10(&mut rng, 3);
    let three10: Vec<u8> = (0..3).flat_map(|i| rec10(&mut rng, i * 3)).collect();
    let one100 = rec100(&mut rng, 19, 99);
    let two100: Vec<u8> = (0..2).flat_map(|i| rec100(&mut rng, i * 7, i * 40)).collect();
    vec![one10, three10, one100, two100, Vec::new()]
}

fn cifar_mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    let rec = if rng.one_in(2) { 3073 } else { 3074 };
    match rng.below(6) {
        0 => {
            // A label byte to a boundary of the class counts.
            let nrec = (b.len() / rec).max(1);
            let at = rng.below(nrec) * rec + rng.below(2);
            if at < b.len() {
                b[at] = *rng.pick(&[0u8, 9, 10, 19, 20, 99, 100, 255]);
            }
        }
        1 => {
            // Record count and size: whole records, or one short or long.
            let k = rng.below(5);
            let d = *rng.pick(&[0isize, 0, 1, -1, 2, -2, 3072, -3072]);
            let n = ((k * rec) as isize + d).max(0) as usize;
            let fill = rng.bytes(n.saturating_sub(b.len()));
            b.extend(fill);
            b.truncate(n);
        }
        2 => {
            let other = rng.pick(pool).clone();
            b.extend(other);
        }
        3 => {
            let at = rng.below(b.len() + 1);
            b.truncate(at);
        }
        _ => havoc(rng, &mut b, pool, &[], 1 << 16),
    }
    b
}

fn cifar_run(b: &[u8]) -> String {
    let check = |r: &webdistill::Result<(Vec<u8>, Vec<u32>)>, classes: u32| {
        if let Ok((px, lab)) = r {
            assert_eq!(px.len(), lab.len() * 3072);
            assert!(lab.iter().all(|&l| l < classes));
        }
    };
    let a = formats::parse_cifar10(b, "fuzz_batch.bin");
    check(&a, 10);
    let c = formats::parse_cifar100(b, "fuzz_train.bin", true);
    check(&c, 20);
    let f = formats::parse_cifar100(b, "fuzz_train.bin", false);
    check(&f, 100);
    format!("10: {} | 100c: {} | 100f: {}", sig(&a), sig(&c), sig(&f))
}

/// CIFAR: pixels (at most the input) and u32 labels (4 per 3073-byte record), one parse at
/// a time: 2x the input; 4x for slack.
fn cifar_bound(b: &[u8]) -> u64 {
    4 * b.len() as u64 + MIB
}

pub fn cifar_harness() -> Harness {
    Harness {
        name: "cifar",
        seeds: cifar_seeds,
        mutate: cifar_mutate,
        dict: &[],
        run: cifar_run,
        bound: cifar_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}

// ---------------------------------------------------------------- safetensors

thread_local! {
    /// A small model's store (a Linear and a BatchNorm2d, as the models register them),
    /// never uploaded: `load_into` checks every name and shape before it writes.
    static STORE: webdistill::Store = small_store();
}

fn small_store() -> webdistill::Store {
    let mut store = webdistill::Store::new(0);
    let mut b = webdistill::nn::Builder::new(&mut store, "");
    webdistill::nn::Linear::new(&mut b, "fc", 4, 3, true).unwrap();
    webdistill::nn::BatchNorm2d::new(&mut b, "bn", 4).unwrap();
    store
}

pub fn card_json() -> String {
    ModelCard {
        model: "resnet8".into(),
        classes: vec!["cat".into(), "dog".into(), "bird".into()],
        channels: 3,
        image_size: 8,
        input_size: 8,
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.25, 0.25, 0.25],
        data: "folder:pets".into(),
        method: Some("kd".into()),
        teacher: Some("resnet20".into()),
    }
    .to_json()
}

fn st_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>)], meta: &[(&str, String)], rng: &mut Rng) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors.iter().map(|(_, d, s)| rng.bytes((s.iter().product::<usize>() * d.bitsize()).div_ceil(8))).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, d, s), b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn st_seeds() -> Vec<Vec<u8>> {
    use safetensors::Dtype::*;
    let mut rng = Rng::new(3);
    let model = |counter: (safetensors::Dtype, Vec<usize>)| {
        vec![
            ("fc.weight", F32, vec![3, 4]),
            ("fc.bias", F32, vec![3]),
            ("bn.weight", F32, vec![4]),
            ("bn.bias", F32, vec![4]),
            ("bn.running_mean", F32, vec![4]),
            ("bn.running_var", F32, vec![4]),
            ("bn.num_batches_tracked", counter.0, counter.1),
        ]
    };
    let card = vec![("webdistill.card", card_json()), ("format", "pt".to_string())];
    let mut v = vec![
        st_file(&model((I64, vec![])), &card, &mut rng),
        st_file(&model((F32, vec![1])), &[], &mut rng),
        st_file(&[("fc.weight", F16, vec![3, 4]), ("fc.bias", BF16, vec![3]), ("extra", F64, vec![2, 2])], &card, &mut rng),
        st_file(
            &[("a", I32, vec![2]), ("b", U8, vec![5]), ("c", BOOL, vec![1]), ("d", I8, vec![0]), ("e", U16, vec![1, 1])],
            &[],
            &mut rng,
        ),
        st_file(&[("fc.weight", F32, vec![4, 3])], &[("webdistill.card", "{}".into())], &mut rng),
        st_file(&[], &[], &mut rng),
    ];
    v.push(b"\x02\x00\x00\x00\x00\x00\x00\x00{}".to_vec());
    v
}

const DTYPES: &[&str] = &[
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "F4",
    "F6_E2M3", "F6_E3M2", "C64", "f32", "", "F32 ",
];

const ST_KEYS: &[&str] = &[
    "dtype",
    "shape",
    "data_offsets",
    "__metadata__",
    "fc.weight",
    "fc.bias",
    "bn.weight",
    "bn.running_mean",
    "bn.num_batches_tracked",
    "webdistill.card",
];

/// `head[tensor][key] = v` where both are objects.
fn set(head: &mut serde_json::Value, tensor: &str, key: &str, v: serde_json::Value) {
    if let Some(t) = head.get_mut(tensor).and_then(|t| t.as_object_mut()) {
        t.insert(key.into(), v);
    }
}

/// (header JSON, data) of a safetensors file whose 8-byte length fits it.
fn st_split(b: &[u8]) -> Option<(serde_json::Value, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let head = b.get(8..8usize.checked_add(n)?)?;
    let v = serde_json::from_slice(head).ok()?;
    Some((v, b[8 + n..].to_vec()))
}

fn dtype_bits(d: &str) -> usize {
    match d {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "F64" | "I64" | "U64" | "C64" => 64,
        _ => 8,
    }
}

/// Edits of the header (its 8-byte length, the JSON: dtypes, shapes, offsets, metadata,
/// names), with offsets made consistent again or not, and of the data.
fn st_mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let Some((mut head, mut data)) = st_split(input) else {
        let mut b = input.to_vec();
        if b.len() >= 8 && rng.one_in(2) {
            let v = rng.interesting();
            write_int(&mut b, 0, v, 8, false);
        } else {
            havoc(rng, &mut b, pool, ST_DICT, 1 << 16);
        }
        return b;
    };
    let names: Vec<String> = head.as_object().map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect()).unwrap_or_default();
    let mut fix_offsets = rng.one_in(2);
    let mut length_delta: i64 = 0;
    match rng.below(9) {
        0 => {
            // The 8-byte header length.
            let mut b = input.to_vec();
            let v = match rng.below(3) {
                0 => rng.interesting(),
                1 => (b.len() as u64).wrapping_sub(8).wrapping_add(rng.below(5) as u64).wrapping_sub(2),
                _ => 100_000_000 + rng.below(3) as u64 - 1,
            };
            write_int(&mut b, 0, v, 8, false);
            return b;
        }
        1 if !names.is_empty() => {
            let n = rng.pick(&names).clone();
            set(&mut head, &n, "dtype", (*rng.pick(DTYPES)).into());
        }
        2 if !names.is_empty() => {
            let n = rng.pick(&names).clone();
            let shape: Vec<serde_json::Value> = (0..rng.below(5)).map(|_| rng.dim().into()).collect();
            set(&mut head, &n, "shape", shape.into());
        }
        3 if !names.is_empty() => {
            let n = rng.pick(&names).clone();
            let i = rng.below(2);
            let v = rng.interesting();
            if let Some(a) = head.get_mut(&n).and_then(|t| t.get_mut("data_offsets")).and_then(|a| a.as_array_mut()).filter(|a| a.len() > i)
            {
                a[i] = v.into();
            }
            fix_offsets = false;
        }
        4 => {
            // A tensor more, or one fewer.
            if let Some(o) = head.as_object_mut() {
                if rng.one_in(2) && !names.is_empty() {
                    o.remove(rng.pick(&names));
                } else {
                    let name = if rng.one_in(2) { rng.pick(ST_KEYS).to_string() } else { format!("t{}", rng.below(100)) };
                    let shape: Vec<u64> = (0..rng.below(4)).map(|_| rng.below(5) as u64).collect();
                    o.insert(name, serde_json::json!({"dtype": rng.pick(DTYPES), "shape": shape, "data_offsets": [0, 0]}));
                    fix_offsets = true;
                }
            }
        }
        5 => {
            // Metadata: the card (valid or mutated), a non-string value, none.
            let meta = match rng.below(4) {
                0 => serde_json::json!({"webdistill.card": card_json()}),
                1 => {
                    let mut c: serde_json::Value = serde_json::from_str(&card_json()).unwrap();
                    json_mutate(rng, &mut c, crate::text::CARD_KEYS);
                    serde_json::json!({"webdistill.card": c.to_string()})
                }
                2 => serde_json::json!({"format": rng.interesting()}),
                _ => serde_json::Value::Null,
            };
            if let Some(o) = head.as_object_mut() {
                o.insert("__metadata__".into(), meta);
            }
        }
        6 => {
            let d = *rng.pick(&[1usize, 2, 3, 4, 7, 8, 64]);
            if rng.one_in(2) {
                data.truncate(data.len().saturating_sub(d));
            } else {
                data.extend(rng.bytes(d));
            }
            fix_offsets = false;
        }
        7 => length_delta = *rng.pick(&[-2i64, -1, 1, 2, 8]),
        _ => json_mutate(rng, &mut head, ST_KEYS),
    }
    if fix_offsets {
        // Offsets and data from the (mutated) shapes and dtypes, in the file's order.
        let mut at = 0u64;
        if let Some(o) = head.as_object_mut() {
            let mut entries: Vec<(&String, &mut serde_json::Value)> = o.iter_mut().filter(|(k, _)| *k != "__metadata__").collect();
            entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap_or(0));
            for (_, v) in entries {
                let bits = dtype_bits(v["dtype"].as_str().unwrap_or(""));
                let n = v["shape"]
                    .as_array()
                    .map(|s| s.iter().try_fold(1u64, |a, d| a.checked_mul(d.as_u64().unwrap_or(1))))
                    .unwrap_or(Some(1))
                    .unwrap_or(u64::MAX);
                let size = n.saturating_mul(bits as u64).div_ceil(8).min(1 << 20);
                if v.is_object() {
                    v["data_offsets"] = serde_json::json!([at, at + size]);
                }
                at += size;
            }
        }
        let want = (at as usize).min(1 << 16);
        data.resize(want, 0x3c);
    }
    let mut text = head.to_string();
    if rng.one_in(2) {
        while text.len() % 8 != 0 {
            text.push(' ');
        }
    }
    let n = (text.len() as i64 + length_delta).max(0) as u64;
    let mut b = n.to_le_bytes().to_vec();
    b.extend(text.into_bytes());
    b.extend(data);
    b
}

const ST_DICT: &[&[u8]] =
    &[b"{", b"}", b"[", b"]", b"\"", b":", b",", b"\"dtype\"", b"\"shape\"", b"\"data_offsets\"", b"\"__metadata__\"", b"null", b"\\u0000"];

fn st_run(b: &[u8]) -> String {
    let parsed = checkpoint::parse(b, "fuzz.safetensors");
    let meta = checkpoint::metadata(b, "fuzz.safetensors");
    let mut out = format!("parse: {} | metadata: {}", sig(&parsed), sig(&meta));
    if parsed.is_ok() {
        assert!(meta.is_ok(), "parse accepted a file whose metadata it refuses: {}", sig(&meta));
    }
    if let Ok(m) = &meta {
        out.push_str(&format!(" | card: {}", sig(&ModelCard::from_metadata(m, "fuzz.safetensors"))));
    }
    if let Ok(t) = &parsed {
        for (n, ft) in t {
            assert_eq!(ft.data.len(), ft.shape.iter().product::<usize>(), "values of '{n}' {:?}", ft.shape);
        }
        STORE.with(|store| {
            let opts = [
                LoadOptions::default(),
                LoadOptions { allow_missing: vec!["bn.".into()], ignore_unexpected: true },
                LoadOptions { allow_missing: vec!["".into()], ignore_unexpected: false },
            ];
            for o in &opts {
                out.push_str(&format!(" | load: {}", sig(&checkpoint::load_into(store, "", t, "fuzz.safetensors", o))));
            }
        });
    }
    out
}

/// safetensors: the JSON header's structures (names, shapes as 8-byte integers, maps; a
/// few times the header text) and the f32 copies (4x the data for u8 and bool): 32x.
fn st_bound(b: &[u8]) -> u64 {
    STORE.with(|_| {});
    32 * b.len() as u64 + MIB
}

pub fn safetensors_harness() -> Harness {
    Harness {
        name: "safetensors",
        seeds: st_seeds,
        mutate: st_mutate,
        dict: ST_DICT,
        run: st_run,
        bound: st_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}

// ---------------------------------------------------------------- .npy

fn npy_bytes(major: u8, header: &str, data: &[u8], pad: bool) -> Vec<u8> {
    let mut header = header.to_string();
    let pre = if major == 1 { 10 } else { 12 };
    if pad {
        while (pre + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
    }
    let mut b = b"\x93NUMPY".to_vec();
    b.extend([major, 0]);
    if major == 1 {
        b.extend((header.len() as u16).to_le_bytes());
    } else {
        b.extend((header.len() as u32).to_le_bytes());
    }
    b.extend(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn npy_header(descr: &str, fortran: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}")
}

fn npy_seeds() -> Vec<Vec<u8>> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut written = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[2, 3]).writer(&mut written).begin_nd().unwrap();
        w.extend([1.0f32, 2.0, 3.0, -1.0, 0.5, 7.0]).unwrap();
        w.finish().unwrap();
    }
    vec![
        written,
        npy_bytes(1, &npy_header("<f4", "False", "(2, 3)"), &f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), true),
        npy_bytes(1, &npy_header("<f4", "False", "()"), &f32s(&[1.5]), true),
        npy_bytes(1, &npy_header("<f4", "False", "(0,)"), &[], true),
        npy_bytes(2, &npy_header("<f4", "False", "(1, 1, 2)"), &f32s(&[0.0, -0.0]), true),
        npy_bytes(3, &npy_header("<f4", "False", "(2,)"), &f32s(&[1.0, 2.0]), true),
        npy_bytes(1, &npy_header("<f8", "False", "(2,)"), &[0; 16], true),
        npy_bytes(1, &npy_header("|u1", "False", "(3,)"), &[1, 2, 3], true),
        npy_bytes(1, &npy_header("<f4", "True", "(2, 1)"), &f32s(&[1.0, 2.0]), true),
        npy_bytes(1, &npy_header("[('a', '<f4')]", "False", "(1,)"), &f32s(&[1.0]), true),
        npy_bytes(1, "{'descr': '<f4', 'shape': (1,)}", &f32s(&[1.0]), false),
    ]
}

/// (major version, header text, data) of a .npy whose header length fits it.
fn npy_split(b: &[u8]) -> Option<(u8, String, Vec<u8>)> {
    if b.get(..6)? != b"\x93NUMPY" {
        return None;
    }
    let major = *b.get(6)?;
    let (n, pre) = if major == 1 {
        (u16::from_le_bytes(b.get(8..10)?.try_into().ok()?) as usize, 10usize)
    } else {
        (u32::from_le_bytes(b.get(8..12)?.try_into().ok()?) as usize, 12)
    };
    let h = b.get(pre..pre.checked_add(n)?)?;
    Some((major, String::from_utf8_lossy(h).into_owned(), b[pre + n..].to_vec()))
}

const NPY_DESCRS: &[&str] = &[
    "<f4",
    ">f4",
    "|f4",
    "=f4",
    "<f8",
    "<f2",
    "|u1",
    "<i8",
    "|b1",
    "<c8",
    "<U5",
    "|O",
    "|V4",
    "<M8[s]",
    "<f4 ",
    "",
    "[('a', '<f4')]",
    "[('a', '<f4', (2,))]",
    "[('a', '<f4'), ('b', [('c', '<f4')])]",
];

fn shape_text(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "()".into(),
        1 => format!("({},)", rng.dim()),
        2 => format!("({}, {})", rng.dim(), rng.dim()),
        3 => {
            let n = rng.len(2000).max(1);
            format!("({})", vec!["1"; n].join(", "))
        }
        4 => {
            let d = rng.len(20000).max(1);
            format!("{}1,{}", "(".repeat(d), ")".repeat(d))
        }
        5 => format!("[{}, {}]", rng.dim(), rng.dim()),
        6 => format!("({}, {})", crate::mutate::number_text(rng), rng.dim()),
        _ => format!("({}, {}, {})", rng.interesting(), rng.interesting(), rng.interesting()),
    }
}

/// Edits of the header (shape, dtype, order, keys, its length field, the version) and of
/// the data's length.
fn npy_mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let Some((mut major, mut header, mut data)) = npy_split(input) else {
        let mut b = input.to_vec();
        havoc(rng, &mut b, pool, NPY_DICT, 1 << 16);
        return b;
    };
    let mut pad = rng.one_in(2);
    let descr = rng.pick(NPY_DESCRS).to_string();
    match rng.below(11) {
        0 => {
            let mut b = input.to_vec();
            let (at, w) = if major == 1 { (8, 2) } else { (8, 4) };
            let v = rng.interesting();
            write_int(&mut b, at, v, w, false);
            return b;
        }
        1 => major = *rng.pick(&[1u8, 2, 3, 0, 4, 255]),
        2 => header = npy_header(if rng.one_in(2) { "<f4" } else { &descr }, "False", &shape_text(rng)),
        3 => header = npy_header(&descr, "False", "(2,)"),
        9 | 10 => {
            // A float32 file that reads: a small shape and exactly its data (now and then a
            // few bytes off).
            let dims: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(5)).collect();
            let n: usize = dims.iter().product();
            let shape = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
            };
            header = npy_header("<f4", "False", &shape);
            let off = if rng.one_in(4) { rng.below(5) } else { 0 };
            data = rng.bytes(4 * n + off);
            pad = true;
        }
        4 => header = npy_header("<f4", rng.pick::<&str>(&["True", "False", "0", "1", "None", "'x'"]), "(1,)"),
        5 => {
            // Data for the shape in the header (when it is small).
            let n = header
                .split("'shape':")
                .nth(1)
                .map(|s| s.chars().take_while(|&c| c != ')').filter(|c| c.is_ascii_digit() || *c == ',').collect::<String>())
                .map(|s| s.split(',').filter(|t| !t.is_empty()).fold(1usize, |a, t| a.saturating_mul(t.parse().unwrap_or(1))))
                .unwrap_or(1);
            data = rng.bytes((n.min(1 << 14)) * 4);
        }
        6 => {
            let keys = ["'descr': '<f4', ", "'fortran_order': False, ", "'shape': (1,), ", "'extra': 1, ", "'descr': '<f8', "];
            let mut h = String::from("{");
            for _ in 0..rng.below(5) {
                h.push_str(rng.pick::<&str>(&keys));
            }
            h.push('}');
            header = h;
        }
        7 => {
            let at = rng.below(data.len() + 1);
            data.truncate(at);
            pad = true;
        }
        _ => {
            let mut h = header.into_bytes();
            havoc(rng, &mut h, &[], NPY_DICT, 1 << 15);
            header = String::from_utf8_lossy(&h).into_owned();
        }
    }
    npy_bytes(major, &header, &data, pad)
}

const NPY_DICT: &[&[u8]] = &[
    b"(",
    b")",
    b"[",
    b"]",
    b"{",
    b"}",
    b"'",
    b"\"",
    b",",
    b":",
    b" ",
    b"\n",
    b"True",
    b"False",
    b"None",
    b"'shape'",
    b"'descr'",
    b"'fortran_order'",
    b"0x",
    b"-",
    b"1e9",
    b"\\",
];

fn npy_run(b: &[u8]) -> String {
    let r = webdistill::data::npy::parse_npy(b, "fuzz.npy");
    if let Ok((shape, v)) = &r {
        assert_eq!(v.len(), shape.iter().product::<usize>());
    }
    sig(&r)
}

/// .npy: the header parsed as a Python literal (pest's token queue, several 40-byte tokens
/// per item of a tuple, and a tree of big integers: about 80 bytes per byte of `1, 1, ...`;
/// a syntax error quotes the header's line under a caret line as long: 160x seen) and the
/// values (at most the data's bytes): 256x the input.
fn npy_bound(b: &[u8]) -> u64 {
    256 * b.len() as u64 + MIB
}

pub fn npy_harness() -> Harness {
    Harness {
        name: "npy",
        seeds: npy_seeds,
        mutate: npy_mutate,
        dict: NPY_DICT,
        run: npy_run,
        bound: npy_bound,
        max_len: 1 << 16,
        fixup: None,
    }
}
