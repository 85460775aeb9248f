//! Harnesses of image files: `decode_image` (PNG and JPEG) and image folders
//! (`FolderBuilder::add`, `summary`, `held_out`, `check`, `finish`).

use crate::engine::{Harness, MIB};
use crate::mutate::{Rng, havoc, write_int};
use crate::text::sig;
use std::io::{Cursor, Read, Write};
use webdistill::data::folder::{FolderBuilder, FolderOptions};
use webdistill::data::formats;

// ---------------------------------------------------------------- PNG by hand

fn crc(kind: &[u8], data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(kind);
    c.update(data);
    c.sum()
}

pub fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend(crc(kind, data).to_be_bytes());
}

fn zlib(b: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn unzlib(b: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::ZlibDecoder::new(b).take(cap as u64).read_to_end(&mut out);
    out
}

const PNG_SIG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Samples per pixel of a PNG colour type.
fn png_channels(color: u8) -> usize {
    match color {
        2 => 3,
        4 => 2,
        6 => 4,
        _ => 1,
    }
}

/// Scanlines (filter byte, then random pixels) of a `w x h` image, or of its 7 Adam7 passes.
fn png_raw(rng: &mut Rng, w: usize, h: usize, color: u8, depth: u8, interlaced: bool) -> Vec<u8> {
    let bpp = png_channels(color) * depth as usize;
    let mut raw = Vec::new();
    let mut rows = |rng: &mut Rng, pw: usize, ph: usize| {
        if pw == 0 || ph == 0 {
            return;
        }
        for _ in 0..ph {
            raw.push(rng.below(5) as u8);
            let n = (pw * bpp).div_ceil(8);
            if color == 3 {
                // Palette indices below the palette's size (2^depth entries).
                raw.extend((0..n).map(|_| rng.u64() as u8));
            } else {
                raw.extend(rng.bytes(n));
            }
        }
    };
    if interlaced {
        for (x0, y0, dx, dy) in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)] {
            rows(rng, (w + dx - 1 - x0) / dx, (h + dy - 1 - y0) / dy);
        }
    } else {
        rows(rng, w, h);
    }
    raw
}

/// A valid PNG of any colour type and bit depth, interlaced or not, with a palette and
/// transparency where they apply.
pub fn png(rng: &mut Rng, w: u32, h: u32, color: u8, depth: u8, interlaced: bool) -> Vec<u8> {
    let mut out = PNG_SIG.to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, color, 0, 0, interlaced as u8]);
    chunk(&mut out, b"IHDR", &ihdr);
    if color == 3 {
        let n = 1usize << depth;
        chunk(&mut out, b"PLTE", &rng.bytes(3 * n));
        chunk(&mut out, b"tRNS", &rng.bytes(n.min(4)));
    }
    let raw = png_raw(rng, w as usize, h as usize, color, depth, interlaced);
    chunk(&mut out, b"IDAT", &zlib(&raw, 6));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(img: image::DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&img).unwrap();
    out
}

fn noise_rgb(rng: &mut Rng, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |_, _| image::Rgb([rng.u64() as u8, rng.u64() as u8, rng.u64() as u8]))
}

/// PNGs in every colour type and depth (hand-made, and the image crate's in gray, RGB, RGBA
/// and 16-bit) and JPEGs (gray and RGB) of odd sizes.
pub fn image_seeds() -> Vec<Vec<u8>> {
    seed_images().to_vec()
}

fn seed_images() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(make_image_seeds)
}

fn make_image_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(4);
    let mut v = Vec::new();
    let sizes = [(1, 1), (2, 3), (7, 5), (16, 16), (33, 9), (5, 40)];
    let combos: &[(u8, &[u8])] = &[(0, &[1, 2, 4, 8, 16]), (2, &[8, 16]), (3, &[1, 2, 4, 8]), (4, &[8, 16]), (6, &[8, 16])];
    for (i, &(color, depths)) in combos.iter().enumerate() {
        for (j, &d) in depths.iter().enumerate() {
            let (w, h) = sizes[(i + j) % sizes.len()];
            v.push(png(&mut rng, w, h, color, d, (i + j) % 3 == 0));
        }
    }
    let rgb = image::DynamicImage::ImageRgb8(noise_rgb(&mut rng, 9, 6));
    v.push(encoded(rgb.clone(), image::ImageFormat::Png));
    v.push(encoded(image::DynamicImage::ImageLuma8(rgb.to_luma8()), image::ImageFormat::Png));
    v.push(encoded(image::DynamicImage::ImageRgba8(rgb.to_rgba8()), image::ImageFormat::Png));
    v.push(encoded(image::DynamicImage::ImageLuma16(rgb.to_luma16()), image::ImageFormat::Png));
    v.push(encoded(image::DynamicImage::ImageRgba16(rgb.to_rgba16()), image::ImageFormat::Png));
    v.push(jpeg(rgb.clone(), 90));
    v.push(jpeg(image::DynamicImage::ImageRgb8(noise_rgb(&mut rng, 17, 3)), 40));
    v.push(jpeg(image::DynamicImage::ImageLuma8(rgb.to_luma8()), 75));
    v.push(jpeg(image::DynamicImage::ImageRgb8(noise_rgb(&mut rng, 1, 1)), 100));
    v
}

// ---------------------------------------------------------------- PNG mutations

type Chunks = Vec<([u8; 4], Vec<u8>)>;

fn png_chunks(b: &[u8]) -> Option<Chunks> {
    if !b.starts_with(PNG_SIG) {
        return None;
    }
    let mut at = 8;
    let mut out = Vec::new();
    while at + 8 <= b.len() {
        let n = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = b[at + 4..at + 8].try_into().unwrap();
        let end = (at + 8).checked_add(n)?;
        let data = b.get(at + 8..end)?.to_vec();
        out.push((kind, data));
        at = end + 4;
    }
    (!out.is_empty()).then_some(out)
}

fn png_build(chunks: &Chunks) -> Vec<u8> {
    let mut out = PNG_SIG.to_vec();
    for (k, d) in chunks {
        chunk(&mut out, k, d);
    }
    out
}

const SIDES: &[u32] = &[0, 1, 2, 3, 8, 255, 256, 16383, 16384, 16385, 65535, 65536, 100_000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

fn side(rng: &mut Rng) -> u32 {
    if rng.one_in(3) { rng.below(64) as u32 } else { *rng.pick(SIDES) }
}

/// IHDR edits (width, height, depth, colour type, interlace, the method bytes) with the CRC
/// fixed; IDAT re-compressed after edits of the scanlines (filter bytes, lengths), or split;
/// chunks removed, duplicated, swapped or added (PLTE, tRNS, gAMA, iCCP, tEXt, zTXt, APNG's
/// acTL/fcTL/fdAT, an unknown critical one); truncation at a chunk.
fn png_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let Some(mut ch) = png_chunks(b) else {
        return jpeg_mutate(rng, b, pool);
    };
    let ihdr = ch.iter().position(|(k, _)| k == b"IHDR");
    match rng.below(10) {
        0 | 1 if ihdr.is_some() => {
            let d = &mut ch[ihdr.unwrap()].1;
            d.resize(13, 0);
            let which = rng.below(3);
            if which != 1 {
                d[0..4].copy_from_slice(&side(rng).to_be_bytes());
            }
            if which != 0 {
                d[4..8].copy_from_slice(&side(rng).to_be_bytes());
            }
        }
        2 if ihdr.is_some() => {
            let d = &mut ch[ihdr.unwrap()].1;
            d.resize(13, 0);
            let i = 8 + rng.below(5);
            d[i] = match i {
                8 => *rng.pick(&[1u8, 2, 4, 8, 16, 0, 3, 32]),
                9 => *rng.pick(&[0u8, 2, 3, 4, 6, 1, 5, 7]),
                _ => rng.below(3) as u8,
            };
        }
        3 => {
            // The scanlines: decompress every IDAT, edit, compress again (maybe split).
            let z: Vec<u8> = ch.iter().filter(|(k, _)| k == b"IDAT").flat_map(|(_, d)| d.clone()).collect();
            let mut raw = unzlib(&z, 1 << 20);
            if !raw.is_empty() && rng.one_in(2) {
                let i = rng.below(raw.len());
                raw[i] = rng.below(7) as u8;
            } else {
                havoc(rng, &mut raw, &[], &[], 1 << 20);
            }
            let z = zlib(&raw, *rng.pick(&[0, 1, 6, 9]));
            ch.retain(|(k, _)| k != b"IDAT");
            let at = ch.iter().position(|(k, _)| k == b"IEND").unwrap_or(ch.len());
            let parts = 1 + rng.below(3);
            let step = z.len().div_ceil(parts).max(1);
            for (i, part) in z.chunks(step).enumerate() {
                ch.insert(at + i, (*b"IDAT", part.to_vec()));
            }
        }
        4 if !ch.is_empty() => {
            let i = rng.below(ch.len());
            havoc(rng, &mut ch[i].1, pool, &[], 1 << 16);
        }
        5 if !ch.is_empty() => {
            let i = rng.below(ch.len());
            match rng.below(3) {
                0 => {
                    ch.remove(i);
                }
                1 => {
                    let c = ch[i].clone();
                    ch.insert(i, c);
                }
                _ => {
                    let j = rng.below(ch.len());
                    ch.swap(i, j);
                }
            }
        }
        6 => {
            let i = rng.below(ch.len() + 1).max(1).min(ch.len());
            let new: ([u8; 4], Vec<u8>) = match rng.below(10) {
                0 => (*b"PLTE", rng.bytes_upto(800)),
                1 => (*b"tRNS", rng.bytes_upto(300)),
                2 => (*b"gAMA", rng.bytes(4)),
                3 => (*b"iCCP", [b"icc\0\0".to_vec(), zlib(&rng.bytes_upto(400), 6)].concat()),
                4 => (*b"tEXt", b"Comment\0fuzz".to_vec()),
                5 => (*b"zTXt", [b"Comment\0\0".to_vec(), zlib(&vec![b'a'; rng.below(1 << 16)], 9)].concat()),
                6 => {
                    let mut d = rng.bytes(8);
                    let v = rng.interesting();
                    write_int(&mut d, 0, v, 4, true);
                    (*b"acTL", d)
                }
                7 => (*b"fcTL", rng.bytes(26)),
                8 => (*b"fdAT", rng.bytes_upto(64)),
                _ => (*b"abCD", rng.bytes_upto(16)),
            };
            ch.insert(i, new);
        }
        7 => {
            let n = rng.below(ch.len() + 1);
            ch.truncate(n);
        }
        8 => {
            // An image of another colour type or size, in place of this one's.
            let color = *rng.pick(&[0u8, 2, 3, 4, 6]);
            let depth = match color {
                0 => *rng.pick(&[1u8, 2, 4, 8, 16]),
                3 => *rng.pick(&[1u8, 2, 4, 8]),
                _ => *rng.pick(&[8u8, 16]),
            };
            let (w, h) = (1 + rng.below(48) as u32, 1 + rng.below(48) as u32);
            let interlaced = rng.one_in(3);
            return png(rng, w, h, color, depth, interlaced);
        }
        _ => {
            // Raw bytes with the CRCs left as they fall.
            let mut v = png_build(&ch);
            havoc(rng, &mut v, pool, IMG_DICT, 1 << 17);
            return v;
        }
    }
    png_build(&ch)
}

/// Make every chunk's CRC right again (where the bytes still read as PNG chunks).
pub fn png_fix_crcs(b: &mut [u8]) {
    if !b.starts_with(PNG_SIG) {
        return;
    }
    let mut at = 8usize;
    while at + 8 <= b.len() {
        let n = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(n).filter(|&e| e + 4 <= b.len()) else { break };
        let c = crc(&b[at + 4..at + 8], &b[at + 8..end]);
        b[end..end + 4].copy_from_slice(&c.to_be_bytes());
        at = end + 4;
    }
}

// ---------------------------------------------------------------- JPEG mutations

/// JPEG (marker, payload) segments.
type Segments = Vec<(u8, Vec<u8>)>;

/// (marker, payload) segments up to and including the first SOS, and the rest (the
/// entropy-coded data and what follows).
fn jpeg_segments(b: &[u8]) -> Option<(Segments, Vec<u8>)> {
    if !b.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut at = 2;
    let mut segs = Vec::new();
    while at + 4 <= b.len() {
        if b[at] != 0xff {
            return None;
        }
        let m = b[at + 1];
        let n = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let payload = b.get(at + 4..at + 2 + n.max(2))?.to_vec();
        at += 2 + n.max(2);
        segs.push((m, payload));
        if m == 0xda {
            return Some((segs, b[at..].to_vec()));
        }
    }
    None
}

fn jpeg_build(segs: &[(u8, Vec<u8>)], tail: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff, 0xd8];
    for (m, p) in segs {
        out.extend([0xff, *m]);
        out.extend(((p.len() + 2).min(65535) as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(tail);
    out
}

/// SOF edits (height, width, precision, component count, sampling factors, table indices,
/// the SOF kind: progressive, lossless, arithmetic), DQT/DHT/SOS/DRI edits, segments removed
/// or duplicated, the entropy data edited, cut, or given restart markers.
fn jpeg_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let Some((mut segs, mut tail)) = jpeg_segments(b) else {
        let mut v = b.to_vec();
        havoc(rng, &mut v, pool, IMG_DICT, 1 << 17);
        return v;
    };
    let sof = segs.iter().position(|(m, _)| (0xc0..=0xcf).contains(m) && ![0xc4, 0xc8, 0xcc].contains(m));
    let pick_seg = |rng: &mut Rng, segs: &[(u8, Vec<u8>)], m: u8| {
        let idx: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].0 == m).collect();
        (!idx.is_empty()).then(|| *rng.pick(&idx))
    };
    match rng.below(9) {
        0 | 1 if sof.is_some() => {
            let p = &mut segs[sof.unwrap()].1;
            if p.len() >= 5 {
                let v = if rng.one_in(3) { rng.below(64) as u16 } else { *rng.pick(&[0u16, 1, 2, 8, 4096, 16384, 16385, 65500, 65535]) };
                let at = if rng.one_in(2) { 1 } else { 3 };
                p[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        2 if sof.is_some() => {
            let p = &mut segs[sof.unwrap()].1;
            if !p.is_empty() {
                let i = rng.below(p.len());
                p[i] = match i {
                    0 => *rng.pick(&[8u8, 12, 16, 0]),
                    5 => *rng.pick(&[1u8, 3, 4, 0, 2, 255]),
                    _ if i >= 6 && (i - 6) % 3 == 1 => *rng.pick(&[0x11u8, 0x22, 0x21, 0x12, 0x44, 0x41, 0x00, 0xff]),
                    _ => rng.below(5) as u8,
                };
            }
        }
        3 if sof.is_some() => {
            let i = sof.unwrap();
            segs[i].0 = *rng.pick(&[0xc0u8, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);
        }
        4 => {
            let m = *rng.pick(&[0xdbu8, 0xc4, 0xda, 0xdd, 0xe0]);
            if let Some(i) = pick_seg(rng, &segs, m) {
                havoc(rng, &mut segs[i].1, &[], &[], 1024);
            } else if m == 0xdd {
                let at = rng.below(segs.len());
                let v = *rng.pick(&[0u16, 1, 2, 65535]);
                segs.insert(at, (0xdd, v.to_be_bytes().to_vec()));
            }
        }
        5 if !segs.is_empty() => {
            let i = rng.below(segs.len());
            if rng.one_in(2) {
                segs.remove(i);
            } else {
                let s = segs[i].clone();
                segs.insert(i, s);
            }
        }
        6 => {
            if rng.one_in(2) {
                let at = rng.below(tail.len() + 1);
                tail.insert(at, 0xff);
                tail.insert(at + 1, 0xd0 + rng.below(8) as u8);
            } else {
                havoc(rng, &mut tail, pool, &[], 1 << 17);
            }
        }
        7 => {
            let at = rng.below(tail.len() + 1);
            tail.truncate(at);
        }
        _ => {
            let mut v = jpeg_build(&segs, &tail);
            havoc(rng, &mut v, pool, IMG_DICT, 1 << 17);
            return v;
        }
    }
    jpeg_build(&segs, &tail)
}

const IMG_DICT: &[&[u8]] = &[
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"acTL",
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xc0",
    b"\xff\xc2",
    b"\xff\xc4",
    b"\xff\xda",
    b"\xff\xdb",
    b"\xff\xdd",
    b"\xff\x00",
    b"\xff\xd0",
];

// ---------------------------------------------------------------- decode_image

/// (width, height, bytes the decoder will produce) from the file's header, by the image
/// crate itself, without limits and without decoding.
pub fn peek(b: &[u8]) -> Option<(u64, u64, u64)> {
    use image::ImageDecoder;
    let mut r = image::ImageReader::new(Cursor::new(b)).with_guessed_format().ok()?;
    r.no_limits();
    let d = r.into_decoder().ok()?;
    let (w, h) = d.dimensions();
    Some((w as u64, h as u64, d.total_bytes()))
}

/// Side and channels an input is decoded with (from its length, so a file always decodes
/// the same way and a replayed corpus file reproduces).
fn decode_opts(b: &[u8]) -> (usize, usize) {
    ([1, 4, 8, 32, 3][(b.len() / 2) % 5], if b.len() % 2 == 0 { 1 } else { 3 })
}

/// The limits `decode_image` promises: 16384 pixels a side, 2^26 pixels, and a longer side
/// of at most 16384 after resizing the shorter one to the requested size.
pub const MAX_SIDE: u64 = 16384;
pub const MAX_PIXELS: u64 = 1 << 26;

/// What decoding a `w x h` image to `s x s` may allocate: the decoder's output (what the
/// header promises) and working rows (a JPEG decodes a row of MCUs at a time: up to 32
/// lines of 4 components of 4-byte samples, 512 bytes per column), the 8-bit copy (up to 4
/// bytes a pixel), the resize's f32 RGBA pass (16 bytes a pixel of `w x nh`) and result,
/// and the crop; twice, for slack. Images beyond the limits count nothing: they must be
/// refused before allocating.
pub fn decode_bound(b: &[u8], s: usize) -> u64 {
    let base = 64 * b.len() as u64 + MIB;
    let Some((w, h, total)) = peek(b) else { return base };
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || w * h > MAX_PIXELS {
        return base;
    }
    let s = s as u64;
    let (nw, nh) = if w <= h { (s, (h * s).div_ceil(w)) } else { ((w * s).div_ceil(h), s) };
    if nw.max(nh) > MAX_SIDE {
        return base + 2 * (total + 512 * (w + 32) + 4 * w * h);
    }
    let resize = 16 * w * nh + 4 * nw * nh;
    base + 2 * (total + 512 * (w + 32) + 4 * w * h + resize + 8 * s * s)
}

fn image_run(b: &[u8]) -> String {
    let (size, ch) = decode_opts(b);
    let r = formats::decode_image(b, "fuzz.png", size, ch);
    if let Ok(px) = &r {
        assert_eq!(px.len(), size * size * ch);
    }
    sig(&r)
}

fn image_bound(b: &[u8]) -> u64 {
    decode_bound(b, decode_opts(b).0)
}

pub fn image_harness() -> Harness {
    Harness {
        name: "image",
        seeds: image_seeds,
        mutate: png_mutate,
        dict: IMG_DICT,
        run: image_run,
        bound: image_bound,
        max_len: 1 << 17,
        fixup: Some(png_fix_crcs),
    }
}

// ---------------------------------------------------------------- image folders

/// A folder as one input: an options byte, then entries `[path length u8][path][data length
/// u24 LE][data]` (read leniently: whatever does not fit ends the list).
fn folder_split(b: &[u8]) -> (u8, Vec<(String, Vec<u8>)>) {
    let opts = b.first().copied().unwrap_or(0);
    let mut at = 1;
    let mut entries = Vec::new();
    while at < b.len() && entries.len() < 64 {
        let pl = b[at] as usize;
        let Some(path) = b.get(at + 1..at + 1 + pl) else { break };
        let Some(l) = b.get(at + 1 + pl..at + 4 + pl) else { break };
        let dl = l[0] as usize | (l[1] as usize) << 8 | (l[2] as usize) << 16;
        let start = at + 4 + pl;
        let data = b.get(start..(start + dl).min(b.len())).unwrap_or(&[]);
        entries.push((String::from_utf8_lossy(path).into_owned(), data.to_vec()));
        at = start + dl;
    }
    (opts, entries)
}

fn folder_join(opts: u8, entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![opts];
    for (p, d) in entries {
        let p = &p.as_bytes()[..p.len().min(255)];
        b.push(p.len() as u8);
        b.extend_from_slice(p);
        let n = d.len().min((1 << 24) - 1);
        b.extend([n as u8, (n >> 8) as u8, (n >> 16) as u8]);
        b.extend_from_slice(&d[..n]);
    }
    b
}

const SIZES: [usize; 8] = [1, 2, 4, 7, 8, 16, 0, 3];
const CHANNELS: [usize; 4] = [1, 3, 0, 4];
const SPLITS: [f32; 8] = [0.1, 0.5, 0.0, 0.25, 0.99, 1.0, -0.1, f32::NAN];

fn folder_opts(o: u8) -> FolderOptions {
    FolderOptions { size: SIZES[(o & 7) as usize], channels: CHANNELS[((o >> 3) & 3) as usize], val_split: SPLITS[(o >> 5) as usize] }
}

const PARTS: &[&str] = &["train", "val", "test", "cat", "dog", "a", "b", ".", "..", "", ".hidden", "Cat", "c d", "é", "train", "val"];
const FILES: &[&str] = &["1.png", "2.PNG", "x.jpg", "y.jpeg", "z.JPG", ".DS_Store", "notes.txt", "a.png.txt", "png", ".png", "0.png"];

fn folder_path(rng: &mut Rng) -> String {
    let n = *rng.pick(&[2usize, 2, 2, 3, 3, 1, 4]);
    let mut parts: Vec<&str> = (0..n - 1).map(|_| *rng.pick(PARTS)).collect();
    parts.push(*rng.pick(FILES));
    let mut p = parts.join("/");
    if rng.one_in(16) {
        p = format!("/{p}");
    }
    if rng.one_in(16) {
        p.push('/');
    }
    p
}

fn folder_seeds() -> Vec<Vec<u8>> {
    let imgs = seed_images();
    let mut rng = Rng::new(5);
    let mut v = Vec::new();
    for k in 0..6 {
        let mut entries = Vec::new();
        for i in 0..(3 + k) {
            let class = ["cat", "dog", "bird"][i % 3];
            let prefix = if k >= 4 { if i % 4 == 3 { "val/" } else { "train/" } } else { "" };
            entries.push((format!("{prefix}{class}/{i}.png"), imgs[(i * 7 + k) % imgs.len()].clone()));
        }
        entries.push(("README.md".into(), b"hello".to_vec()));
        v.push(folder_join(rng.below(256) as u8 & 0b0000_0111 | (k as u8 & 1) << 3, &entries));
    }
    v
}

fn folder_mutate(rng: &mut Rng, b: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let (mut opts, mut entries) = folder_split(b);
    match rng.below(7) {
        0 => opts = rng.u64() as u8,
        1 if !entries.is_empty() => {
            let i = rng.below(entries.len());
            entries[i].1 = png_mutate(rng, &entries[i].1, pool);
        }
        2 if !entries.is_empty() => {
            let i = rng.below(entries.len());
            entries[i].0 = folder_path(rng);
        }
        3 => {
            let data = if rng.one_in(4) { rng.bytes_upto(64) } else { rng.pick(seed_images()).clone() };
            let at = rng.below(entries.len() + 1);
            entries.insert(at, (folder_path(rng), data));
        }
        4 if !entries.is_empty() => {
            let i = rng.below(entries.len());
            if rng.one_in(2) {
                entries.remove(i);
            } else {
                let e = entries[i].clone();
                entries.push(e);
            }
        }
        5 => {
            // The same file under every split and class.
            if let Some((_, d)) = entries.first().cloned() {
                for p in ["train/a/1.png", "val/a/1.png", "test/b/1.png", "a/1.png", "b/2.png"] {
                    entries.push((p.into(), d.clone()));
                }
            }
        }
        _ => {
            let mut v = folder_join(opts, &entries);
            havoc(rng, &mut v, pool, IMG_DICT, 1 << 18);
            return v;
        }
    }
    folder_join(opts, &entries)
}

fn folder_run(b: &[u8]) -> String {
    let (o, entries) = folder_split(b);
    let opts = folder_opts(o);
    let mut f = match FolderBuilder::new("fuzz-folder", opts) {
        Ok(f) => f,
        Err(e) => return format!("new: {e}"),
    };
    let mut added = Vec::new();
    for (p, d) in &entries {
        added.push(format!("{:?}", f.add(p, d)));
    }
    let sum = f.summary();
    assert_eq!(sum.images, sum.train + sum.val);
    assert_eq!(sum.bytes, sum.images * opts.channels * opts.size * opts.size);
    let held = f.held_out(3);
    assert!(held.len() <= 3.min(sum.val));
    let strict = f.check(false);
    let lenient = f.check(true);
    let fin = f.finish(true);
    assert_eq!(lenient.is_ok(), fin.is_ok(), "check(true) and finish(true) disagree: {} / {}", sig(&lenient), sig(&fin));
    if let Ok((s, fsum)) = &fin {
        assert_eq!((s.train.n, s.test.n), (fsum.train, fsum.val));
        assert!(s.test.n > 0 && s.train.classes >= 2);
        assert_eq!(s.train.images.len(), s.train.n * opts.channels * opts.size * opts.size);
    }
    format!("added {} | {} classes | strict: {} | finish: {}", added.join(","), sum.classes.len(), sig(&strict), sig(&fin.map(|_| ())))
}

/// A folder: the decode bound of every entry (as `decode_image`'s, summed), the pixels it
/// keeps (s x s x c per image) copied twice into the splits.
fn folder_bound(b: &[u8]) -> u64 {
    let (o, entries) = folder_split(b);
    let opts = folder_opts(o);
    let px = (opts.size * opts.size * opts.channels.max(1)) as u64;
    let decode: u64 = entries.iter().map(|(_, d)| decode_bound(d, opts.size)).sum();
    64 * b.len() as u64 + MIB + decode + 4 * entries.len() as u64 * px
}

pub fn folder_harness() -> Harness {
    Harness {
        name: "folder",
        seeds: folder_seeds,
        mutate: folder_mutate,
        dict: IMG_DICT,
        run: folder_run,
        bound: folder_bound,
        max_len: 1 << 18,
        fixup: None,
    }
}
