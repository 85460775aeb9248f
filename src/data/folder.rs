//! Image folders: one subfolder of PNG/JPEG images per class, built from (relative path, bytes)
//! pairs so that the CLI (`--data folder:DIR`, files on disk) and the page's "Your data" tab
//! (files the user picked, handed over one at a time) make the same data set from the same
//! files, pixel for pixel: one decoder ([`super::formats::decode_image`]), one split rule.
//!
//! Layouts (paths relative to the folder, `/`-separated):
//! - `CLASS/FILE`: every class folder is split by [`FolderOptions::val_split`]; with the files
//!   of a class sorted by name, image `i` (0-based) is held out when `floor((i + 1) f)` exceeds
//!   `floor(i f)`, so 0.1 holds out the 10th, 20th, ... image of each class and the first image
//!   always trains;
//! - `train/CLASS/FILE` with `val/CLASS/FILE` (or `test/`): those are the splits, and every
//!   held-out class must be a training class.
//!
//! Files without a .png/.jpg/.jpeg extension are ignored (a `.DS_Store`, a README); an image
//! that does not decode is recorded as bad, with the decoder's words, and the folder is refused
//! unless the caller agrees to go on without the bad files.

use super::formats::decode_image;
use super::{Dataset, Splits};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// How the images of a folder are decoded and split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FolderOptions {
    /// Side of the square images (shorter side resized, then centre-cropped).
    pub size: usize,
    /// 3 (RGB) or 1 (luma).
    pub channels: usize,
    /// Fraction of each class held out when the folder has no `val/` (or `test/`) split.
    pub val_split: f32,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions { size: 32, channels: 3, val_split: 0.1 }
    }
}

/// A file that looked like an image and could not be used.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadFile {
    pub file: String,
    pub error: String,
}

/// Images per class and split, as the page shows them before training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassCount {
    pub name: String,
    pub train: usize,
    pub val: usize,
}

/// What a folder holds: classes, counts, the files that failed, and the bytes the decoded
/// images take (one byte per pixel and channel, as they are uploaded to the GPU).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FolderSummary {
    pub classes: Vec<ClassCount>,
    pub images: usize,
    pub train: usize,
    pub val: usize,
    pub bad: Vec<BadFile>,
    /// Files ignored because they are not PNG/JPEG or not inside a class folder.
    pub ignored: usize,
    pub bytes: usize,
    /// `CLASS/FILE` (split by `val_split`) or `train/val` (the folder's own split).
    pub layout: &'static str,
}

/// Which split a path names, when the folder has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Given {
    Any,
    Train,
    Val,
}

struct Image {
    /// As given to `add`.
    path: String,
    given: Given,
    class: String,
    file: String,
    pixels: Vec<u8>,
}

/// What [`FolderBuilder::add`] did with a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    Image,
    /// Not an image, or not inside a class folder.
    Ignored,
    /// An image that does not decode (recorded in the summary's `bad`).
    Bad,
}

/// Whether a file name is one an image folder reads (.png, .jpg, .jpeg, any case).
pub fn is_image(path: &str) -> bool {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

/// An image folder being assembled, one file at a time.
pub struct FolderBuilder {
    name: String,
    opts: FolderOptions,
    images: Vec<Image>,
    bad: Vec<BadFile>,
    ignored: usize,
}

impl FolderBuilder {
    /// `name` names the data set (its splits are `name/train` and `name/test`).
    pub fn new(name: &str, opts: FolderOptions) -> Result<Self> {
        let bad = |msg: String| Err(Error::BadInput { tensor: "image folder".into(), msg });
        if opts.size == 0 {
            return bad("the image size must be positive".into());
        }
        if opts.channels != 1 && opts.channels != 3 {
            return bad(format!("image folders load 1 or 3 channels, not {}", opts.channels));
        }
        if !(0.0..1.0).contains(&opts.val_split) {
            return bad(format!("the held-out fraction (--val-split) must be in [0, 1), not {}", opts.val_split));
        }
        Ok(FolderBuilder { name: name.into(), opts, images: Vec::new(), bad: Vec::new(), ignored: 0 })
    }

    pub fn options(&self) -> FolderOptions {
        self.opts
    }

    /// Add the file at `path` (relative to the folder, `/`-separated: `CLASS/FILE`, or
    /// `train/CLASS/FILE` and `val/CLASS/FILE`) with its bytes.
    pub fn add(&mut self, path: &str, bytes: &[u8]) -> Added {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let (given, class, file) = match parts.as_slice() {
            [c, f] => (Given::Any, *c, *f),
            [s, c, f] if *s == "train" => (Given::Train, *c, *f),
            [s, c, f] if *s == "val" || *s == "test" => (Given::Val, *c, *f),
            _ => {
                self.ignored += 1;
                return Added::Ignored;
            }
        };
        if !is_image(file) || class.starts_with('.') || file.starts_with('.') {
            self.ignored += 1;
            return Added::Ignored;
        }
        match decode_image(bytes, path, self.opts.size, self.opts.channels) {
            Ok(pixels) => {
                self.images.push(Image { path: path.into(), given, class: class.into(), file: file.into(), pixels });
                Added::Image
            }
            Err(e) => {
                let error = match e {
                    Error::File { msg, .. } => msg,
                    e => e.to_string(),
                };
                self.bad.push(BadFile { file: path.into(), error });
                Added::Bad
            }
        }
    }

    /// Does the folder carry its own split (`train/` beside `val/` or `test/`)?
    fn has_own_split(&self) -> bool {
        self.images.iter().any(|i| i.given == Given::Train) && self.images.iter().any(|i| i.given == Given::Val)
    }

    /// The images in their final order with their split: classes by name, files by name.
    fn assign(&self) -> (Vec<String>, Vec<(usize, bool, &Image)>) {
        let own = self.has_own_split();
        // With its own split, class folders directly under the root are not part of it.
        let used: Vec<&Image> = self.images.iter().filter(|i| !own || i.given != Given::Any).collect();
        let mut by_class: BTreeMap<&str, Vec<&Image>> = BTreeMap::new();
        for im in used.iter().filter(|i| !own || i.given == Given::Train) {
            by_class.entry(&im.class).or_default().push(im);
        }
        let names: Vec<String> = by_class.keys().map(|s| s.to_string()).collect();
        let f = self.opts.val_split as f64;
        let mut out = Vec::new();
        for (c, files) in by_class.values_mut().enumerate() {
            files.sort_by(|a, b| a.file.cmp(&b.file));
            for (i, im) in files.iter().enumerate() {
                let held = !own && ((i + 1) as f64 * f + 1e-9).floor() > (i as f64 * f + 1e-9).floor();
                out.push((c, held, *im));
            }
        }
        if own {
            let mut val: Vec<&Image> = used.iter().filter(|i| i.given == Given::Val).copied().collect();
            val.sort_by(|a, b| (&a.class, &a.file).cmp(&(&b.class, &b.file)));
            for im in val {
                // Unknown held-out classes are refused in `finish`; keep them out of the order.
                if let Some(c) = names.iter().position(|n| *n == im.class) {
                    out.push((c, true, im));
                }
            }
        }
        (names, out)
    }

    /// Classes, counts and bad files so far.
    pub fn summary(&self) -> FolderSummary {
        let (names, order) = self.assign();
        self.summary_of(&names, &order)
    }

    /// The summary of an [`Self::assign`]ed order.
    fn summary_of(&self, names: &[String], order: &[(usize, bool, &Image)]) -> FolderSummary {
        let mut classes: Vec<ClassCount> = names.iter().map(|n| ClassCount { name: n.clone(), train: 0, val: 0 }).collect();
        for &(c, held, _) in order {
            if held { classes[c].val += 1 } else { classes[c].train += 1 }
        }
        let train = classes.iter().map(|c| c.train).sum();
        let val = classes.iter().map(|c| c.val).sum();
        FolderSummary {
            images: train + val,
            train,
            val,
            bytes: (train + val) * self.opts.channels * self.opts.size * self.opts.size,
            classes,
            bad: self.bad.clone(),
            ignored: self.ignored,
            layout: if self.has_own_split() { "train/val" } else { "CLASS/FILE" },
        }
    }

    /// The paths of the first `n` held-out images, in the order of the test split.
    pub fn held_out(&self, n: usize) -> Vec<String> {
        self.assign().1.iter().filter(|(_, held, _)| *held).take(n).map(|(_, _, im)| im.path.clone()).collect()
    }

    /// Why [`Self::finish`] would refuse the folder, if it would: bad files (unless
    /// `skip_bad`), no images, one class, a held-out class the training split lacks, or
    /// nothing held out.
    pub fn check(&self, skip_bad: bool) -> Result<()> {
        let (names, order) = self.assign();
        self.check_order(skip_bad, &names, &order)
    }

    /// [`Self::check`] of an [`Self::assign`]ed order (`finish` assigns once for both).
    fn check_order(&self, skip_bad: bool, names: &[String], order: &[(usize, bool, &Image)]) -> Result<()> {
        let what = |msg: String| Error::BadInput { tensor: format!("image folder '{}'", self.name), msg };
        if !self.bad.is_empty() && !skip_bad {
            let list: Vec<String> = self.bad.iter().take(10).map(|b| format!("{}: {}", b.file, b.error)).collect();
            let more = if self.bad.len() > 10 { format!(" (and {} more)", self.bad.len() - 10) } else { String::new() };
            return Err(what(format!(
                "{} file(s) could not be read: {}{more}. Remove them, or go on without them",
                self.bad.len(),
                list.join("; ")
            )));
        }
        if self.has_own_split() {
            let train: std::collections::BTreeSet<&str> =
                self.images.iter().filter(|i| i.given == Given::Train).map(|i| i.class.as_str()).collect();
            if let Some(im) = self.images.iter().find(|i| i.given == Given::Val && !train.contains(i.class.as_str())) {
                return Err(what(format!("held-out class '{}' is not among the training classes in train/", im.class)));
            }
        }
        if order.is_empty() {
            return Err(what(format!(
                "no images: it needs one subfolder of PNG/JPEG images per class (CLASS/FILE.png){}",
                if self.ignored > 0 {
                    format!("; {} file(s) were not PNG/JPEG or not inside a class folder", self.ignored)
                } else {
                    String::new()
                }
            )));
        }
        if names.len() < 2 {
            return Err(what(format!("only one class ('{}'): a classifier needs two or more class folders", names[0])));
        }
        if !order.iter().any(|&(_, held, _)| held) {
            return Err(what(format!(
                "nothing is held out: {} image(s) with a held-out fraction of {} leave no image for evaluation; raise --val-split or add images",
                order.len(),
                self.opts.val_split
            )));
        }
        Ok(())
    }

    /// The two splits, unless [`Self::check`] refuses them.
    pub fn finish(&self, skip_bad: bool) -> Result<(Splits, FolderSummary)> {
        let (names, order) = self.assign();
        self.check_order(skip_bad, &names, &order)?;
        let summary = self.summary_of(&names, &order);
        let (c, s) = (self.opts.channels, self.opts.size);
        let mut px = [Vec::new(), Vec::new()];
        let mut lab = [Vec::new(), Vec::new()];
        for &(class, held, im) in &order {
            px[held as usize].extend_from_slice(&im.pixels);
            lab[held as usize].push(class as u32);
        }
        let [tpx, vpx] = px;
        let [tlab, vlab] = lab;
        let splits = Splits {
            train: Dataset::new(&format!("{}/train", self.name), tpx, tlab, c, s, s, names.clone())?,
            test: Dataset::new(&format!("{}/test", self.name), vpx, vlab, c, s, s, names)?,
        };
        Ok((splits, summary))
    }
}

/// Read an image folder from disk through [`FolderBuilder`] (native only). Bad images are an
/// error that lists them.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir(dir: &std::path::Path, opts: FolderOptions) -> Result<(Splits, FolderSummary)> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "not found or not a directory (an image folder has one subfolder of PNG/JPEG images per class)"));
    }
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "folder".into());
    let mut b = FolderBuilder::new(&name, opts)?;
    // Two levels (CLASS/FILE) or three (train|val|test/CLASS/FILE), as `add` takes them.
    // A class folder without images is refused rather than dropped: dropping it would shift
    // the class indices a teacher was trained with.
    let split_dirs = ["train", "val", "test"];
    let own_split = dir.join("train").is_dir() && (dir.join("val").is_dir() || dir.join("test").is_dir());
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0)];
    while let Some((d, rel, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::file(&d, e))?;
        let mut images = 0;
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if p.is_dir() {
                if depth < 2 {
                    stack.push((p, rel, depth + 1));
                }
            } else if depth >= 1 && is_image(&rel) {
                let bytes = std::fs::read(&p).map_err(|e| Error::file(&p, e))?;
                images += (b.add(&rel, &bytes) != Added::Ignored) as usize;
            }
        }
        let top = rel.split('/').next().unwrap_or("");
        let is_class = if own_split { depth == 2 && split_dirs.contains(&top) } else { depth == 1 };
        if is_class && images == 0 && !rel.split('/').any(|p| p.starts_with('.')) {
            return Err(Error::file(&d, "empty class folder: no .png, .jpg or .jpeg files"));
        }
    }
    let (splits, summary) = b.finish(false).map_err(|e| match e {
        Error::BadInput { msg, .. } => Error::file(dir, msg),
        e => e,
    })?;
    Ok((splits, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG of `w x h` filled with one grey level.
    pub(crate) fn png(w: u32, h: u32, level: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([level]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn opts(val_split: f32) -> FolderOptions {
        FolderOptions { size: 4, channels: 1, val_split }
    }

    #[test]
    fn every_tenth_image_of_each_class_is_held_out_in_name_order() {
        let mut b = FolderBuilder::new("f", opts(0.1)).unwrap();
        // Added out of order: the split follows the sorted file names.
        for i in (0..25).rev() {
            assert_eq!(b.add(&format!("b/{i:02}.png"), &png(6, 8, i as u8 * 10)), Added::Image);
        }
        for i in 0..10 {
            b.add(&format!("a/{i}.png"), &png(4, 4, 200));
        }
        assert_eq!(b.add("notes.txt", b"hi"), Added::Ignored);
        assert_eq!(b.add("a/.DS_Store", b"x"), Added::Ignored);
        let (s, sum) = b.finish(false).unwrap();
        assert_eq!(
            sum.classes,
            vec![ClassCount { name: "a".into(), train: 9, val: 1 }, ClassCount { name: "b".into(), train: 23, val: 2 }]
        );
        assert_eq!((s.train.n, s.test.n, sum.ignored), (32, 3, 2));
        // Held out: a/9, b/09, b/19 (grey 90 and 190).
        assert_eq!(s.test.labels, vec![0, 1, 1]);
        assert_eq!((s.test.image(1)[0], s.test.image(2)[0]), (90, 190));
        assert_eq!(s.train.class_names, vec!["a".to_string(), "b".into()]);
    }

    #[test]
    fn the_held_out_fraction_is_respected_and_keeps_the_first_image_training() {
        let mut b = FolderBuilder::new("f", opts(0.25)).unwrap();
        for c in ["x", "y"] {
            for i in 0..8 {
                b.add(&format!("{c}/{i}.png"), &png(4, 4, i));
            }
        }
        let sum = b.summary();
        assert_eq!((sum.train, sum.val), (12, 4));
        assert!(FolderBuilder::new("f", opts(1.0)).is_err());
    }

    #[test]
    fn a_folder_with_its_own_split_keeps_it() {
        let mut b = FolderBuilder::new("f", opts(0.5)).unwrap();
        for (p, l) in [("train/cat/1.png", 1), ("train/cat/2.png", 2), ("train/dog/1.png", 3), ("val/dog/9.png", 4)] {
            b.add(p, &png(4, 4, l));
        }
        let (s, sum) = b.finish(false).unwrap();
        assert_eq!((s.train.n, s.test.n, sum.layout), (3, 1, "train/val"));
        assert_eq!((s.test.labels[0], s.test.image(0)[0]), (1, 4));
        b.add("val/bird/1.png", &png(4, 4, 5));
        let e = b.finish(false).unwrap_err().to_string();
        assert!(e.contains("'bird'"), "{e}");
    }

    #[test]
    fn bad_files_one_class_and_nothing_held_out_are_refused_clearly() {
        let mut b = FolderBuilder::new("mine", opts(0.1)).unwrap();
        for i in 0..10 {
            b.add(&format!("a/{i}.png"), &png(4, 4, 1));
        }
        assert_eq!(b.add("a/broken.png", b"\x89PNG\r\n\x1a\nnot really"), Added::Bad);
        let e = b.finish(false).unwrap_err().to_string();
        assert!(e.contains("a/broken.png") && e.contains("go on without"), "{e}");
        let e = b.finish(true).unwrap_err().to_string();
        assert!(e.contains("only one class ('a')"), "{e}");
        let mut b = FolderBuilder::new("mine", opts(0.1)).unwrap();
        b.add("a/1.png", &png(4, 4, 1));
        b.add("b/1.png", &png(4, 4, 1));
        let e = b.finish(false).unwrap_err().to_string();
        assert!(e.contains("nothing is held out"), "{e}");
        let e = FolderBuilder::new("empty", opts(0.1)).unwrap().finish(false).unwrap_err().to_string();
        assert!(e.contains("no images"), "{e}");
    }
}
