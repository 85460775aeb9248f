//! A dataset on the GPU and the graph builders that turn it into batches.

use super::Dataset;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{DType, Graph, Var};
use crate::ops::data::{Augment, Blur, Crop, Jitter, Mix, Patches, Sampling};
use crate::store::{Init, StateRef, Store};
use std::sync::Arc;

/// A dataset uploaded once into store state pages as packed bytes.
///
/// Image i (C x H x W bytes, CHW, padded to whole 32-bit words: `stride` words, little-endian
/// byte order) lives at word `(i % per_page) * stride` of page `i / per_page`. A page is at most
/// one storage binding (128 MiB on lavapipe and by default in browsers), so a large dataset
/// takes several pages (CIFAR-100 train, 153.6 MB: 2), gathered with one dispatch per page.
/// Labels are one U32 state tensor. The state tensors are named `data.<name>.page<p>` and
/// `data.<name>.labels`: save checkpoints under a model prefix so they are not included.
#[derive(Clone, Debug)]
pub struct GpuData {
    pub name: String,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub classes: usize,
    /// 32-bit words per image.
    pub stride: usize,
    /// Images per page.
    pub per_page: usize,
    pub pages: Vec<StateRef>,
    pub labels: StateRef,
}

impl GpuData {
    /// Register `ds` in `store` (written at [`Store::upload`], or at once if the store is
    /// already on the GPU), in pages no larger than one storage binding of `ctx`'s device.
    pub fn upload(ctx: &Context, store: &mut Store, ds: &Dataset, name: &str) -> Result<GpuData> {
        let limit = ctx.max_binding() / ctx.offset_align() * ctx.offset_align();
        Self::upload_paged(store, ds, name, limit)
    }

    /// Like [`GpuData::upload`] with an explicit page size in bytes (tests use small pages to
    /// exercise the multi-page path; it must not exceed the device's storage binding size).
    pub fn upload_paged(store: &mut Store, ds: &Dataset, name: &str, page_bytes: u64) -> Result<GpuData> {
        if ds.n == 0 {
            return Err(Error::BadInput { tensor: ds.name.clone(), msg: "the dataset is empty".into() });
        }
        if ds.n >= 1 << 31 {
            return Err(Error::BadInput { tensor: ds.name.clone(), msg: format!("{} images: at most 2^31 - 1 are supported", ds.n) });
        }
        let stride = (ds.c * ds.h * ds.w).div_ceil(4);
        let per_page = (page_bytes / 4) as usize / stride;
        if per_page == 0 {
            return Err(Error::TooLarge {
                tensor: format!("data.{name} image"),
                bytes: stride as u64 * 4,
                limit_name: "page size",
                limit: page_bytes,
            });
        }
        let img = ds.c * ds.h * ds.w;
        let mut pages = Vec::new();
        for (p, chunk) in ds.images.chunks(per_page * img).enumerate() {
            let count = chunk.len() / img;
            let mut words = vec![0u32; count * stride];
            for i in 0..count {
                let src = &chunk[i * img..(i + 1) * img];
                let dst = &mut words[i * stride..(i + 1) * stride];
                for (k, q) in src.chunks(4).enumerate() {
                    let mut b = [0u8; 4];
                    b[..q.len()].copy_from_slice(q);
                    dst[k] = u32::from_le_bytes(b);
                }
            }
            let shape = [words.len()];
            pages.push(store.state(&format!("data.{name}.page{p}"), &shape, DType::U32, Init::Words(Arc::new(words)))?);
        }
        let labels = store.state(&format!("data.{name}.labels"), &[ds.n], DType::U32, Init::Words(Arc::new(ds.labels.clone())))?;
        Ok(GpuData { name: name.into(), n: ds.n, c: ds.c, h: ds.h, w: ds.w, classes: ds.classes, stride, per_page, pages, labels })
    }

    /// Bytes on the GPU (pages and labels).
    pub fn bytes(&self) -> u64 {
        ((self.n * self.stride + self.n) * 4) as u64
    }

    /// Steps of one evaluation pass with batch `batch` (the last one partial when B does not
    /// divide n; see [`Sampling::Eval`]).
    pub fn eval_batches(&self, batch: usize) -> usize {
        self.n.div_ceil(batch)
    }

    /// A U32 [1] counter in `store` for evaluation plans ([`Graph::data_tick`]).
    pub fn counter(store: &mut Store, name: &str) -> Result<StateRef> {
        store.state(name, &[1], DType::U32, Init::Zeros)
    }
}

/// Train: shuffled epochs with augmentation; Eval: the data in order (see [`Sampling`]).
pub type Mode = Sampling;

/// Everything [`Graph::batch`] needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSpec {
    pub batch: usize,
    pub mode: Mode,
    pub augment: Augment,
    /// Side of the augmented image (the crop / resize target); 0: the data's own size.
    pub size: usize,
    /// Side after zero padding on every edge (`(out_size - size) / 2` each); 0: `size`.
    pub out_size: usize,
    /// Output channels; 0: the data's. 1-channel data replicates to 3 if asked.
    pub channels: usize,
    /// Normalisation, per output channel (or one value), in [0, 1] pixel units.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Mixup / cutmix (train); implies soft targets.
    pub mix: Option<Mix>,
    /// Label smoothing of the soft targets.
    pub smoothing: f32,
    /// Produce soft targets even without mix (smoothed one-hots).
    pub soft_targets: bool,
    /// Separates the random streams of several batches built from one seed and step counter.
    pub salt: u32,
}

impl BatchSpec {
    /// A training batch with no augmentation and no normalisation; set the fields you need.
    pub fn train(batch: usize) -> Self {
        BatchSpec {
            batch,
            mode: Sampling::Train,
            augment: Augment::none(),
            size: 0,
            out_size: 0,
            channels: 0,
            mean: vec![0.0],
            std: vec![1.0],
            mix: None,
            smoothing: 0.0,
            soft_targets: false,
            salt: 0,
        }
    }
    /// An evaluation batch: the data in order, no augmentation.
    pub fn eval(batch: usize) -> Self {
        BatchSpec { mode: Sampling::Eval, ..BatchSpec::train(batch) }
    }
    pub fn normalize(mut self, mean: &[f32], std: &[f32]) -> Self {
        self.mean = mean.to_vec();
        self.std = std.to_vec();
        self
    }
}

/// The tensors of one batch.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// F32 [B, C, S, S], normalised.
    pub images: Var,
    /// U32 [B].
    pub labels: Var,
    /// F32 [B]: 1 for real rows, 0 for the padding rows of a partial evaluation batch.
    pub valid: Var,
    /// U32 [B]: dataset index of each row.
    pub index: Var,
    /// F32 [B, classes] (rows sum to 1) when mix or `soft_targets` is on.
    pub soft_targets: Option<Var>,
    /// F32 [8] mix parameters of the step (see [`Graph::data_mix`]) when mix is on.
    pub mix: Option<Var>,
}

/// Fold a 64-bit seed into the kernels' 32 bits.
pub fn seed32(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

/// The views OBoW trains on (B3/B4 of the digest), with sizes scaled to the data.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiCropSpec {
    pub batch: usize,
    /// Teacher view: Resize(`teacher_resize`) -> CenterCrop(`size`) -> flip 0.5.
    pub teacher_resize: usize,
    pub size: usize,
    /// Large crops: `large` RandomResizedCrops of `size` with this augmentation.
    pub large: usize,
    pub large_augment: Augment,
    /// Patches: a `patch_base`-sized view with `patch_augment`, cut by `patches`.
    pub patch_base: usize,
    pub patch_augment: Augment,
    pub patches: Patches,
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl MultiCropSpec {
    /// OBoW's recipe for square `size`-pixel data: the teacher view resized by 256/224 then
    /// centre-cropped; 2 large crops at full size (scale 0.08-0.6, jitter 0.4/0.4/0.4/0.1 p 0.8,
    /// grayscale 0.2, blur p 0.5 with sigma 0.1-2 scaled by size/160 px, flip); 5 of 9 patches of
    /// about half the size (base = patch x 256/96 with RandomResizedCrop scale 0.6-1, same
    /// jitter/gray/flip, no blur; grid jitter = patch x 24/96).
    pub fn obow(batch: usize, size: usize) -> Self {
        let s = size as f32;
        let sig = (0.1 * s / 160.0, 2.0 * s / 160.0);
        let kernel = ((2.0 * (3.0 * sig.1).ceil()) as usize + 1).min(if size % 2 == 0 { size - 1 } else { size }).max(1);
        let patch = (size / 2).max(1);
        let jitter = ((patch as f32 * 24.0 / 96.0).round() as usize).max(1);
        let base = ((patch as f32 * 256.0 / 96.0).round() as usize).max(patch + jitter);
        let rrc = |scale| Crop::ResizedCrop { scale, ratio: (0.75, 4.0 / 3.0) };
        MultiCropSpec {
            batch,
            teacher_resize: (s * 256.0 / 224.0).round() as usize,
            size,
            large: 2,
            large_augment: Augment {
                crop: rrc((0.08, 0.6)),
                hflip: 0.5,
                jitter: Some(Jitter::obow()),
                grayscale: 0.2,
                blur: Some(Blur { sigma: sig, kernel, p: 0.5 }),
            },
            patch_base: base,
            patch_augment: Augment { crop: rrc((0.6, 1.0)), hflip: 0.5, jitter: Some(Jitter::obow()), grayscale: 0.2, blur: None },
            patches: Patches { size: patch, jitter, keep: 5, grid: 3 },
            channels: 0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

/// The tensors of one OBoW multi-crop batch.
#[derive(Clone, Copy, Debug)]
pub struct MultiCrop {
    /// F32 [B, C, S, S].
    pub teacher: Var,
    /// F32 [large * B, C, S, S], crop-major (rows k*B .. k*B + B are crop k), or None if 0 crops.
    pub large: Option<Var>,
    /// F32 [B * keep, C, P, P], sample-major (row b*keep + k), as PyTorch's `view(B*keep, ...)` of
    /// OBoW's [B, keep, C, P, P]; None if no patches.
    pub patches: Option<Var>,
    pub labels: Var,
    pub index: Var,
}

impl Graph {
    fn data_rows(&mut self, data: &GpuData, batch: usize, mode: Sampling, step: Var, seed: u32) -> Result<(Var, Var, Var, Var)> {
        let labels = self.state(&data.labels);
        let (idx, lab, valid) = self.data_sample(labels, step, data.n, batch, mode, seed)?;
        let pages: Vec<Var> = data.pages.iter().map(|p| self.state(p)).collect();
        let raw = self.data_gather(idx, &pages, data.stride, data.per_page)?;
        Ok((idx, lab, valid, raw))
    }

    /// Augmented pixels in [0, 1] of one view: F32 [copies * B, C, size, size] from the gathered
    /// `raw` batch (the geometry, colour and blur stages the augmentation asks for).
    #[allow(clippy::too_many_arguments)]
    pub fn data_view(
        &mut self,
        data: &GpuData,
        raw: Var,
        copies: usize,
        aug: &Augment,
        size: usize,
        step: Var,
        seed: u32,
        salt: u32,
    ) -> Result<Var> {
        let batch = self.shape(raw)[0];
        let m = copies * batch;
        let rec = self.data_view_params(step, (data.h, data.w), (size, size), m, aug, seed, salt)?;
        let mut img = self.data_geom(raw, rec, (data.c, data.h, data.w), (size, size))?;
        if aug.has_color() {
            img = self.data_color(img, rec)?;
        }
        if let (true, Some(b)) = (aug.has_blur(), aug.blur) {
            img = self.data_blur(img, rec, b.kernel)?;
        }
        Ok(img)
    }

    /// One step's batch from a dataset on the GPU, from (`seed`, the U32 [1] counter `step`)
    /// alone: the compiled plan replays with a new batch whenever the counter moves (the
    /// optimizer's step in training; [`Graph::data_tick`] for evaluation).
    pub fn batch(&mut self, data: &GpuData, spec: &BatchSpec, step: Var, seed: u64) -> Result<Batch> {
        let seed = seed32(seed);
        let size = if spec.size == 0 { data.h } else { spec.size };
        if spec.size == 0 && data.h != data.w {
            return Err(Error::shape("batch", format!("{}x{} data: give BatchSpec::size", data.h, data.w)));
        }
        let out = if spec.out_size == 0 { size } else { spec.out_size };
        if out < size || (out - size) % 2 != 0 {
            return Err(Error::shape("batch", format!("out_size {out} must be size {size} plus an even padding")));
        }
        let (idx, labels, valid, raw) = self.data_rows(data, spec.batch, spec.mode, step, seed)?;
        let salt = spec.salt.wrapping_mul(16);
        let px = self.data_view(data, raw, 1, &spec.augment, size, step, seed, salt.wrapping_add(1))?;
        let mix = match spec.mix {
            Some(m) => Some(self.data_mix(step, &m, (out, out), seed, salt.wrapping_add(2))?),
            None => None,
        };
        let images = self.data_finish(px, mix, (out - size) / 2, spec.channels, &spec.mean, &spec.std)?;
        let soft_targets =
            if mix.is_some() || spec.soft_targets { Some(self.data_targets(labels, mix, data.classes, spec.smoothing)?) } else { None };
        Ok(Batch { images, labels, valid, index: idx, soft_targets, mix })
    }

    /// OBoW's multi-crop views of one training batch (one sample draw shared by all views).
    pub fn multicrop(&mut self, data: &GpuData, spec: &MultiCropSpec, step: Var, seed: u64) -> Result<MultiCrop> {
        let seed = seed32(seed);
        let (idx, labels, _valid, raw) = self.data_rows(data, spec.batch, Sampling::Train, step, seed)?;
        let norm = |g: &mut Graph, px: Var| g.data_finish(px, None, 0, spec.channels, &spec.mean, &spec.std);
        let teacher_aug = Augment { crop: Crop::Center { resize: spec.teacher_resize }, hflip: 0.5, ..Augment::none() };
        let t = self.data_view(data, raw, 1, &teacher_aug, spec.size, step, seed, 101)?;
        let teacher = norm(self, t)?;
        let large = if spec.large > 0 {
            let l = self.data_view(data, raw, spec.large, &spec.large_augment, spec.size, step, seed, 102)?;
            Some(norm(self, l)?)
        } else {
            None
        };
        let patches = if spec.patches.keep > 0 {
            let base = self.data_view(data, raw, 1, &spec.patch_augment, spec.patch_base, step, seed, 103)?;
            let p = self.data_patches(base, step, &spec.patches, seed, 104)?;
            Some(norm(self, p)?)
        } else {
            None
        };
        Ok(MultiCrop { teacher, large, patches, labels, index: idx })
    }
}
