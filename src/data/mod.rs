//! Datasets and GPU-side batches.
//!
//! # Loading (CPU, native and wasm)
//! - [`Dataset`]: u8 images `N x C x H x W` (CHW), U32 labels, class names; [`Splits`] holds
//!   `train` and `test`.
//! - [`bundled()`]: a stratified Fashion-MNIST subset (5000 train / 1000 test, MIT licence,
//!   `data/fashion-mnist-subset/`) compiled into native binaries, so training and the tests need
//!   no download; [`bundled_from`] parses the same four files from bytes (the web page fetches
//!   them from next to itself: the wasm does not hold them).
//! - [`DataSpec`]: `--data` strings (`bundled`, `fashion-mnist[:DIR]`, `mnist:DIR`,
//!   `cifar10:DIR`, `cifar100[-coarse]:DIR`, `folder:DIR`); [`DataSpec::load`] reads files
//!   (native only). [`formats`] parses IDX (`.gz` or raw), CIFAR-10/100 binary and PNG/JPEG from
//!   bytes, so a browser can parse what it fetched. Errors name the file and the problem.
//!
//! # On the GPU
//! The dataset is uploaded once, as packed bytes, into store state pages; every step's batch is
//! sampled, gathered, augmented and normalised by kernels (`shaders/data_*.wgsl`) from
//! (seed, step counter) alone, so a compiled plan replays with no host writes:
//!
//! ```text
//! let mut store = Store::new(seed);
//! let splits = data::bundled()?;
//! let train = GpuData::upload(&ctx, &mut store, &splits.train, "train")?;
//! let opt_state = OptimState::register(&mut store, "opt")?;
//! let mut g = Graph::new();
//! let step = g.state(&opt_state.step);
//! let spec = BatchSpec {
//!     augment: Augment::pad_crop_flip(2),
//!     out_size: 32,                       // 28 -> 32 zero padding
//!     mix: Some(Mix::timm_default()),
//!     smoothing: 0.1,
//!     ..BatchSpec::train(128).normalize(&stats::FASHION_MNIST_MEAN, &stats::FASHION_MNIST_STD)
//! };
//! let b = g.batch(&train, &spec, step, seed)?;   // b.images [128, 1, 32, 32], b.soft_targets
//! let logits = model.forward(&mut g, b.images)?;
//! let loss = g.cross_entropy_soft(logits, b.soft_targets.unwrap(), 0.0)?;
//! // ... backward, optimizer (which ticks `step`), Plan::compile, plan.step() per step.
//! ```
//!
//! Evaluation: `BatchSpec::eval(B)` reads the test set in order; give it a counter from
//! [`GpuData::counter`], end the graph with [`Graph::data_tick`], reset the counter to 0
//! (`store.write_state(&counter, &[0.0])`) and run [`GpuData::eval_batches`] steps; weight
//! per-row results by `Batch::valid` (the last batch of a pass is partial).
//!
//! OBoW: [`Graph::multicrop`] with [`MultiCropSpec::obow`] gives the teacher view, the large
//! crops and the patches; the primitives it is built from (`Graph::data_sample`,
//! `data_gather`, `data_view`, `data_view_params`, `data_geom`, `data_color`, `data_blur`,
//! `data_patches`, `data_mix`, `data_finish`, `data_targets`) are public for other recipes.
//!
//! Determinism: the same seed gives the same batches on the same adapter (integer hashing;
//! float results may differ in the last bits between adapters).

pub mod augment;
pub mod folder;
pub mod formats;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod npy;
pub mod spec;

pub use augment::{Augment, Blur, Crop, Jitter, Mix, Patches, stats};
pub use gpu::{Batch, BatchSpec, GpuData, Mode, MultiCrop, MultiCropSpec, seed32};
pub use spec::{DataSpec, LoadOptions};

use crate::error::{Error, Result};

/// Images and labels of one split, on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    /// `n * c * h * w` bytes, image after image, each CHW.
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub classes: usize,
    pub class_names: Vec<String>,
}

/// The two splits of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Check sizes and labels and build a dataset (`n` follows from the labels).
    pub fn new(name: &str, images: Vec<u8>, labels: Vec<u32>, c: usize, h: usize, w: usize, class_names: Vec<String>) -> Result<Self> {
        let n = labels.len();
        let bad = |msg: String| Error::BadInput { tensor: name.to_string(), msg };
        if c == 0 || h == 0 || w == 0 {
            return Err(bad(format!("image shape {c}x{h}x{w} has a zero")));
        }
        if images.len() != n * c * h * w {
            return Err(bad(format!("{} image bytes for {n} labels of {c}x{h}x{w} images ({} expected)", images.len(), n * c * h * w)));
        }
        let classes = class_names.len();
        if classes == 0 {
            return Err(bad("no classes".into()));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= classes) {
            return Err(bad(format!("label {l} of image {i} is out of range for {classes} classes")));
        }
        Ok(Dataset { name: name.to_string(), images, labels, n, c, h, w, classes, class_names })
    }

    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The bytes of image `i` (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_bytes();
        &self.images[i * s..(i + 1) * s]
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut v = vec![0; self.classes];
        for &l in &self.labels {
            v[l as usize] += 1;
        }
        v
    }

    /// Per-channel mean and standard deviation of the pixels, in [0, 1] units.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let hw = self.h * self.w;
        let mut sum = vec![0f64; self.c];
        let mut sq = vec![0f64; self.c];
        for img in self.images.chunks_exact(self.image_bytes().max(1)) {
            for c in 0..self.c {
                for &p in &img[c * hw..(c + 1) * hw] {
                    let v = p as f64 / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let cnt = (self.n * hw).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / cnt).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| ((q / cnt - m * m).max(0.0)).sqrt() as f32).collect();
        (mean.iter().map(|&m| m as f32).collect(), std)
    }

    /// The first `n` images (quick runs, tests).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n);
        Dataset {
            name: self.name.clone(),
            images: self.images[..n * self.image_bytes()].to_vec(),
            labels: self.labels[..n].to_vec(),
            n,
            ..self.clone_meta()
        }
    }

    fn clone_meta(&self) -> Dataset {
        Dataset { name: self.name.clone(), images: Vec::new(), labels: Vec::new(), class_names: self.class_names.clone(), ..*self }
    }
}

/// The bundled Fashion-MNIST subset's four files (in `data/fashion-mnist-subset/`), in the order
/// [`bundled_from`] takes them: training images and labels, test images and labels.
pub const BUNDLED_FILES: [&str; 4] =
    ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];

/// The bundled Fashion-MNIST subset (see `data/fashion-mnist-subset/README.md`), compiled into
/// native binaries. The wasm build leaves it out (2.6 MB): a page fetches the four
/// [`BUNDLED_FILES`] and parses them with [`bundled_from`].
#[cfg(not(target_arch = "wasm32"))]
pub fn bundled() -> Result<Splits> {
    bundled_from([
        include_bytes!("../../data/fashion-mnist-subset/train-images-idx3-ubyte.gz"),
        include_bytes!("../../data/fashion-mnist-subset/train-labels-idx1-ubyte.gz"),
        include_bytes!("../../data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz"),
        include_bytes!("../../data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz"),
    ])
}

/// The bundled Fashion-MNIST subset from its four files' bytes, in the order of
/// [`BUNDLED_FILES`] (what [`bundled`] does natively, and a page with the files it fetched).
pub fn bundled_from(files: [&[u8]; 4]) -> Result<Splits> {
    const DIR: &str = "data/fashion-mnist-subset";
    let [train_images, train_labels, test_images, test_labels] = files;
    let [ti, tl, ei, el] = BUNDLED_FILES.map(|f| format!("{DIR}/{f}"));
    let names = &formats::FASHION_MNIST_CLASSES;
    Ok(Splits {
        train: formats::idx_dataset("fashion-mnist-subset/train", (train_images, &ti), (train_labels, &tl), names)?,
        test: formats::idx_dataset("fashion-mnist-subset/test", (test_images, &ei), (test_labels, &el), names)?,
    })
}
