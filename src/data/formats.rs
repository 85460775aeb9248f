//! Dataset file formats, parsed from bytes (so they work in the browser too), with thin native
//! wrappers that read files and directories. Every error names the file and what is wrong.

use super::Dataset;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::io::Read;

/// Magic, dimensions and data size of an IDX header: (dimensions, offset of the data, bytes
/// of data it promises). `b` may be just the header.
fn idx_dims(b: &[u8], name: &str, want_dims: u8, what: &str) -> Result<(Vec<usize>, usize, usize)> {
    let want = 0x0800 | want_dims as u32;
    if b.len() < 4 {
        return Err(Error::file(name, format!("truncated: {} bytes, an IDX file starts with a 4-byte magic number", b.len())));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != want {
        return Err(Error::file(
            name,
            format!("wrong magic number 0x{magic:08x}: expected 0x{want:08x} (IDX {what}: unsigned bytes, {want_dims} dimension(s))"),
        ));
    }
    let head = 4 + 4 * want_dims as usize;
    if b.len() < head {
        return Err(Error::file(name, format!("truncated IDX header: {} bytes, need {head}", b.len())));
    }
    let dims: Vec<usize> =
        (0..want_dims as usize).map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    if dims.contains(&0) {
        return Err(Error::file(name, format!("IDX dimensions {dims:?} contain a zero")));
    }
    let data = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| {
        let exact = dims.iter().map(|&d| d as u128).product::<u128>();
        Error::file(name, format!("the header promises {dims:?} = {exact} bytes of data, more than any file can hold"))
    })?;
    Ok((dims, head, data))
}

/// Header of an IDX file: (dimensions, offset of the data), checked against the file's size.
fn idx_header(b: &[u8], name: &str, want_dims: u8, what: &str) -> Result<(Vec<usize>, usize)> {
    let (dims, head, data) = idx_dims(b, name, want_dims, what)?;
    let have = b.len() - head;
    if have < data {
        return Err(Error::file(name, format!("truncated: the header promises {dims:?} = {data} bytes of data, the file has {have}")));
    }
    if have > data {
        return Err(Error::file(name, format!("malformed: {} unexpected bytes after the {dims:?} data", have - data)));
    }
    Ok((dims, head))
}

/// No deflate stream decodes to more than this many times its size (a 258-byte match per
/// code of about 2 bits).
const DEFLATE_MAX_RATIO: usize = 1032;

/// An IDX file's bytes, gunzipped if they are gzip. The header is decoded first and what it
/// promises checked against what that much gzip data can hold, so a header promising 2^40
/// bytes is refused before anything is allocated; then no more than the promised bytes (and
/// one, to tell that there are more) are decoded.
fn idx_bytes<'a>(bytes: &'a [u8], name: &str, want_dims: u8, what: &str) -> Result<Cow<'a, [u8]>> {
    if !(bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
        return Ok(Cow::Borrowed(bytes));
    }
    let corrupt = |e: std::io::Error| Error::file(name, format!("truncated or corrupt gzip data ({e})"));
    let mut gz = flate2::read::GzDecoder::new(bytes);
    let head = 4 + 4 * want_dims as usize;
    let mut out = Vec::with_capacity(head);
    (&mut gz).take(head as u64).read_to_end(&mut out).map_err(corrupt)?;
    let (dims, _, data) = idx_dims(&out, name, want_dims, what)?;
    let most = DEFLATE_MAX_RATIO.saturating_mul(bytes.len());
    if data > most {
        return Err(Error::file(
            name,
            format!(
                "the header promises {dims:?} = {data} bytes of data, more than {} bytes of gzip data can hold (at most {most})",
                bytes.len()
            ),
        ));
    }
    gz.take(data as u64 + 1).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() > head + data {
        return Err(Error::file(name, format!("malformed: the gzip data holds more than the {dims:?} = {data} bytes the header promises")));
    }
    Ok(Cow::Owned(out))
}

/// IDX images (magic 0x00000803, `.gz` or raw): (n, h, w, pixels).
pub fn parse_idx_images(bytes: &[u8], name: &str) -> Result<(usize, usize, usize, Vec<u8>)> {
    let b = idx_bytes(bytes, name, 3, "images")?;
    let (d, off) = idx_header(&b, name, 3, "images")?;
    Ok((d[0], d[1], d[2], b[off..].to_vec()))
}

/// IDX labels (magic 0x00000801, `.gz` or raw).
pub fn parse_idx_labels(bytes: &[u8], name: &str) -> Result<Vec<u32>> {
    let b = idx_bytes(bytes, name, 1, "labels")?;
    let (_, off) = idx_header(&b, name, 1, "labels")?;
    Ok(b[off..].iter().map(|&v| v as u32).collect())
}

/// A dataset from an IDX image file and an IDX label file (MNIST, Fashion-MNIST).
pub fn idx_dataset(name: &str, images: (&[u8], &str), labels: (&[u8], &str), class_names: &[&str]) -> Result<Dataset> {
    let (n, h, w, px) = parse_idx_images(images.0, images.1)?;
    let lab = parse_idx_labels(labels.0, labels.1)?;
    if lab.len() != n {
        return Err(Error::file(labels.1, format!("{} labels, but {} has {n} images", lab.len(), images.1)));
    }
    check_labels(&lab, class_names.len(), labels.1)?;
    Dataset::new(name, px, lab, 1, h, w, class_names.iter().map(|s| s.to_string()).collect())
}

fn check_labels(labels: &[u32], classes: usize, file: &str) -> Result<()> {
    if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= classes) {
        return Err(Error::file(file, format!("label {l} of record {i} is out of range for {classes} classes")));
    }
    Ok(())
}

/// CIFAR binary records: `label_bytes` label bytes then 3072 pixel bytes (3x32x32, CHW).
/// Returns (pixels, labels of `label_index`).
fn parse_cifar(
    bytes: &[u8],
    name: &str,
    label_bytes: usize,
    label_index: usize,
    classes: usize,
    what: &str,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let rec = label_bytes + 3072;
    if bytes.is_empty() {
        return Err(Error::file(name, format!("empty file (a {what} file is a sequence of {rec}-byte records)")));
    }
    if bytes.len() % rec != 0 {
        return Err(Error::file(
            name,
            format!(
                "truncated or malformed: {} bytes is not a whole number of {rec}-byte {what} records ({} records and {} bytes left over)",
                bytes.len(),
                bytes.len() / rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut px = Vec::with_capacity(n * 3072);
    let mut lab = Vec::with_capacity(n);
    for r in bytes.chunks_exact(rec) {
        lab.push(r[label_index] as u32);
        px.extend_from_slice(&r[label_bytes..]);
    }
    check_labels(&lab, classes, name)?;
    Ok((px, lab))
}

/// One CIFAR-10 binary batch (`data_batch_*.bin`, `test_batch.bin`): 3073-byte records.
pub fn parse_cifar10(bytes: &[u8], name: &str) -> Result<(Vec<u8>, Vec<u32>)> {
    parse_cifar(bytes, name, 1, 0, 10, "CIFAR-10")
}

/// One CIFAR-100 binary file (`train.bin`, `test.bin`): 3074-byte records (coarse, fine label).
pub fn parse_cifar100(bytes: &[u8], name: &str, coarse: bool) -> Result<(Vec<u8>, Vec<u32>)> {
    if coarse { parse_cifar(bytes, name, 2, 0, 20, "CIFAR-100") } else { parse_cifar(bytes, name, 2, 1, 100, "CIFAR-100") }
}

/// The largest image [`decode_image`] takes: 16384 pixels a side and 64 megapixels (a
/// header promising more is refused before anything is allocated for it), and no side longer
/// than 16384 pixels once the shorter one is resized.
pub const MAX_IMAGE_SIDE: u32 = 16384;
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;
/// What the image decoders may allocate (a 64-megapixel RGBA image of 16-bit samples).
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// A PNG's palettes (PLTE chunks) must hold whole RGB entries, at most 256: the png crate
/// (0.18.1) indexes past the end of one that does not (a panic), so it is refused here first.
fn check_png_palette(bytes: &[u8], name: &str) -> Result<()> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(());
    }
    let mut at = 8usize;
    while let Some(head) = at.checked_add(8).and_then(|end| bytes.get(at..end)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if &head[4..8] == b"PLTE" && (len % 3 != 0 || len > 768) {
            return Err(Error::file(
                name,
                format!("cannot decode image: its palette (PLTE) has {len} bytes, not whole RGB entries (3 bytes each, at most 256)"),
            ));
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

/// Decode a PNG or JPEG, resize its shorter side to `size` (bilinear), centre-crop to
/// `size` x `size`, and return CHW bytes with `channels` (1: luma, 3: RGB).
pub fn decode_image(bytes: &[u8], name: &str, size: usize, channels: usize) -> Result<Vec<u8>> {
    use image::imageops::{self, FilterType};
    use image::{ImageDecoder, ImageReader, Limits};
    if channels != 1 && channels != 3 {
        return Err(Error::BadInput { tensor: name.into(), msg: format!("image folders load 1 or 3 channels, not {channels}") });
    }
    if size == 0 || size > 4096 {
        return Err(Error::BadInput { tensor: name.into(), msg: format!("the image size must be 1 to 4096, not {size}") });
    }
    let cannot = |e: image::ImageError| Error::file(name, format!("cannot decode image: {e}"));
    check_png_palette(bytes, name)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| cannot(e.into()))?;
    reader.limits(limits.clone());
    // The header alone: its size is checked before the pixels get a buffer.
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    let (w, h) = decoder.dimensions();
    let too_large = || {
        Error::file(
            name,
            format!(
                "image of {w} x {h} pixels is too large to decode (at most {MAX_IMAGE_SIDE} pixels a side and {} megapixels)",
                MAX_IMAGE_PIXELS >> 20
            ),
        )
    };
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w as u64 * h as u64 > MAX_IMAGE_PIXELS {
        return Err(too_large());
    }
    let (w, h) = (w as usize, h as usize);
    let s = size as u32;
    let (nw, nh) = if w <= h {
        (s, ((h * size) as f64 / w as f64).round().max(1.0) as u32)
    } else {
        (((w * size) as f64 / h as f64).round().max(1.0) as u32, s)
    };
    if nw.max(nh) > MAX_IMAGE_SIDE {
        return Err(Error::file(
            name,
            format!(
                "image of {w} x {h} pixels is too elongated: resizing its shorter side to {size} makes it {nw} x {nh}, more than {MAX_IMAGE_SIDE} pixels long"
            ),
        ));
    }
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.reserve(decoder.total_bytes()).map_err(|_| too_large())?;
    decoder.set_limits(limits).map_err(cannot)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(cannot)?;
    let crop = |nw: u32, nh: u32| ((nw - s) / 2, (nh - s) / 2);
    match channels {
        1 => {
            let g = img.to_luma8();
            let g = if (w, h) == (nw as usize, nh as usize) { g } else { imageops::resize(&g, nw, nh, FilterType::Triangle) };
            let (x, y) = crop(nw, nh);
            Ok(imageops::crop_imm(&g, x, y, s, s).to_image().into_raw())
        }
        3 => {
            let c = img.to_rgb8();
            let c = if (w, h) == (nw as usize, nh as usize) { c } else { imageops::resize(&c, nw, nh, FilterType::Triangle) };
            let (x, y) = crop(nw, nh);
            let hwc = imageops::crop_imm(&c, x, y, s, s).to_image().into_raw();
            let hw = size * size;
            let mut chw = vec![0u8; 3 * hw];
            for p in 0..hw {
                for ch in 0..3 {
                    chw[ch * hw + p] = hwc[p * 3 + ch];
                }
            }
            Ok(chw)
        }
        _ => Err(Error::BadInput { tensor: name.into(), msg: format!("image folders load 1 or 3 channels, not {channels}") }),
    }
}

/// Class names of Fashion-MNIST.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
/// Class names of MNIST.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Class names of CIFAR-10 (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
/// CIFAR-100 coarse class names (as in `coarse_label_names.txt`).
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];
/// CIFAR-100 fine class names (as in `fine_label_names.txt`).
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// Native file and directory readers.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    use super::*;
    use crate::data::Splits;
    use std::path::{Path, PathBuf};

    pub fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::file(path, e))
    }

    fn dir_exists(dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a directory (or it does not exist)"));
        }
        Ok(())
    }

    /// `stem.gz` if present, else `stem`.
    fn find_maybe_gz(dir: &Path, stem: &str) -> Result<PathBuf> {
        for cand in [format!("{stem}.gz"), stem.to_string()] {
            let p = dir.join(&cand);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(Error::file(dir.join(format!("{stem}.gz")), format!("missing (looked for {stem}.gz and {stem})")))
    }

    fn idx_split(dir: &Path, prefix: &str, name: &str, classes: &[&str]) -> Result<Dataset> {
        let ip = find_maybe_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let lp = find_maybe_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let (ib, lb) = (read(&ip)?, read(&lp)?);
        idx_dataset(name, (&ib, &ip.display().to_string()), (&lb, &lp.display().to_string()), classes)
    }

    /// A directory of MNIST-layout IDX files (`train-images-idx3-ubyte[.gz]`, ..., `t10k-...`).
    pub fn load_idx_dir(dir: &Path, name: &str, classes: &[&str]) -> Result<Splits> {
        dir_exists(dir)?;
        Ok(Splits {
            train: idx_split(dir, "train", &format!("{name}/train"), classes)?,
            test: idx_split(dir, "t10k", &format!("{name}/test"), classes)?,
        })
    }

    /// The directory itself or a known subdirectory holding `probe`.
    fn resolve(dir: &Path, sub: &str, probe: &str) -> Result<PathBuf> {
        dir_exists(dir)?;
        if dir.join(probe).is_file() {
            return Ok(dir.to_path_buf());
        }
        if dir.join(sub).join(probe).is_file() {
            return Ok(dir.join(sub));
        }
        Err(Error::file(dir.join(probe), format!("missing (also looked in {})", dir.join(sub).display())))
    }

    fn names_file(path: &Path, default: &[&str]) -> Result<Vec<String>> {
        if !path.is_file() {
            return Ok(default.iter().map(|s| s.to_string()).collect());
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        if names.len() != default.len() {
            return Err(Error::file(path, format!("{} class names, expected {}", names.len(), default.len())));
        }
        Ok(names)
    }

    /// CIFAR-10 binary version: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`
    /// in `dir` or `dir/cifar-10-batches-bin`.
    pub fn load_cifar10(dir: &Path) -> Result<Splits> {
        let d = resolve(dir, "cifar-10-batches-bin", "test_batch.bin")?;
        let names = names_file(&d.join("batches.meta.txt"), &CIFAR10_CLASSES)?;
        let (mut px, mut lab) = (Vec::new(), Vec::new());
        for i in 1..=5 {
            let p = d.join(format!("data_batch_{i}.bin"));
            if !p.is_file() {
                return Err(Error::file(&p, "missing (CIFAR-10 training data is data_batch_1.bin .. data_batch_5.bin)"));
            }
            let (a, b) = parse_cifar10(&read(&p)?, &p.display().to_string())?;
            px.extend(a);
            lab.extend(b);
        }
        let tp = d.join("test_batch.bin");
        let (tpx, tlab) = parse_cifar10(&read(&tp)?, &tp.display().to_string())?;
        Ok(Splits {
            train: Dataset::new("cifar10/train", px, lab, 3, 32, 32, names.clone())?,
            test: Dataset::new("cifar10/test", tpx, tlab, 3, 32, 32, names)?,
        })
    }

    /// CIFAR-100 binary version: `train.bin` and `test.bin` in `dir` or `dir/cifar-100-binary`;
    /// fine labels (100 classes) unless `coarse` (20 superclasses).
    pub fn load_cifar100(dir: &Path, coarse: bool) -> Result<Splits> {
        let d = resolve(dir, "cifar-100-binary", "train.bin")?;
        let names = if coarse {
            names_file(&d.join("coarse_label_names.txt"), &CIFAR100_COARSE)?
        } else {
            names_file(&d.join("fine_label_names.txt"), &CIFAR100_FINE)?
        };
        let tag = if coarse { "cifar100-coarse" } else { "cifar100" };
        let load = |f: &str| -> Result<(Vec<u8>, Vec<u32>)> {
            let p = d.join(f);
            parse_cifar100(&read(&p)?, &p.display().to_string(), coarse)
        };
        let (px, lab) = load("train.bin")?;
        let (tpx, tlab) = load("test.bin")?;
        Ok(Splits {
            train: Dataset::new(&format!("{tag}/train"), px, lab, 3, 32, 32, names.clone())?,
            test: Dataset::new(&format!("{tag}/test"), tpx, tlab, 3, 32, 32, names)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
        b.extend_from_slice(data);
        b
    }

    fn png(w: u32, h: u32, color: u8, plte: &[u8], idat: &[u8]) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            let mut c = flate2::Crc::new();
            c.update(kind);
            c.update(data);
            out.extend((data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend(c.sum().to_be_bytes());
        };
        let mut ihdr = [w.to_be_bytes(), h.to_be_bytes()].concat();
        ihdr.extend([8, color, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        if !plte.is_empty() {
            chunk(b"PLTE", plte);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(idat).unwrap();
        chunk(b"IDAT", &z.finish().unwrap());
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn idx_dimensions_whose_product_overflows_are_refused() {
        // 2^31 x 2^31 x 4 wraps to 0 in 64 bits: it used to pass as an empty file.
        let b = idx(&[1 << 31, 1 << 31, 4], &[]);
        let e = parse_idx_images(&b, "imgs").unwrap_err().to_string();
        assert!(e.contains("[2147483648, 2147483648, 4] = 18446744073709551616 bytes") && e.contains("more than any file"), "{e}");
    }

    #[test]
    fn gzip_idx_is_checked_against_its_header_before_it_is_decoded() {
        // A header promising 2^40 bytes from a few dozen bytes of gzip: refused up front.
        let huge = gz(&idx(&[1 << 16, 1 << 16, 256], &[0; 100]));
        let e = parse_idx_images(&huge, "imgs.gz").unwrap_err().to_string();
        assert!(e.contains("[65536, 65536, 256] = 1099511627776 bytes") && e.contains("bytes of gzip data can hold"), "{e}");
        // One label promised, a megabyte of zeros after it: decoding stops past the promise.
        let mut long = idx(&[1], &[3]);
        long.extend(vec![0; 1 << 20]);
        let e = parse_idx_labels(&gz(&long), "labels.gz").unwrap_err().to_string();
        assert!(e.contains("holds more than the [1] = 1 bytes the header promises"), "{e}");
        // The good file still reads, and wrong ones keep their messages.
        assert_eq!(parse_idx_labels(&gz(&idx(&[3], &[0, 9, 4])), "labels.gz").unwrap(), vec![0, 9, 4]);
        let e = parse_idx_labels(&gz(&idx(&[3], &[0, 9])), "labels.gz").unwrap_err().to_string();
        assert!(e.contains("promises [3] = 3 bytes of data, the file has 2"), "{e}");
    }

    #[test]
    fn image_headers_promising_too_much_are_refused_before_decoding() {
        // 100000 x 100000 grey pixels promised by a 70-byte PNG.
        let e = decode_image(&png(100_000, 100_000, 0, &[], &[0; 10]), "big.png", 32, 3).unwrap_err().to_string();
        assert!(e.contains("big.png") && e.contains("100000 x 100000 pixels is too large"), "{e}");
        // Within 16384 a side, but 128 megapixels.
        let e = decode_image(&png(16384, 8192, 0, &[], &[0; 10]), "wide.png", 32, 1).unwrap_err().to_string();
        assert!(e.contains("16384 x 8192 pixels is too large") && e.contains("64 megapixels"), "{e}");
        // A 1 x 4000 strip resized to 32 wide would be 128000 pixels tall.
        let strip = png(1, 4000, 0, &[], &vec![0; 2 * 4000]);
        let e = decode_image(&strip, "strip.png", 32, 1).unwrap_err().to_string();
        assert!(e.contains("1 x 4000 pixels is too elongated") && e.contains("32 x 128000"), "{e}");
        assert_eq!(decode_image(&strip, "strip.png", 1, 1).unwrap().len(), 1);
        assert!(decode_image(&strip, "strip.png", 0, 1).unwrap_err().to_string().contains("must be 1 to 4096"));
    }

    #[test]
    fn a_palette_of_partial_entries_is_an_error_not_a_panic() {
        // 109 bytes: 36 entries and a byte (png 0.18.1 reads 3 bytes there and panics).
        let e = decode_image(&png(2, 2, 3, &[7; 109], &[0, 0, 0, 0, 0, 0]), "pal.png", 2, 3).unwrap_err().to_string();
        assert!(e.contains("pal.png") && e.contains("palette (PLTE) has 109 bytes"), "{e}");
        assert_eq!(decode_image(&png(2, 2, 3, &[7; 6], &[0, 0, 1, 0, 1, 0]), "pal.png", 2, 3).unwrap(), vec![7; 12]);
    }
}
