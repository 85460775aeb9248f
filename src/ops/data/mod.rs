//! Data ops: sample a batch from a dataset stored on the GPU as packed bytes, gather it, and
//! augment it, with kernels in `shaders/data_*.wgsl`. Each op has an exact Rust twin (`cpu`)
//! that draws the same random numbers: the RNG is a pure integer hash ([`rng`]), so the
//! references match bit for bit on integers and to float rounding on pixels.
//!
//! Random streams: every draw is `hash(seed, step, salt, item, draw)`, where `step` is a U32
//! counter tensor read on the GPU (the optimizer's step in training), `salt` separates the
//! streams of different views, and `item` is the sample. Nothing is written by the host per
//! step, so a compiled plan replays with a fresh batch each time.
//!
//! These are the primitives; `data::gpu` composes them into `Graph::batch` and
//! `Graph::multicrop`.
//!
//! One file per stage, each holding its ops' graph builders, lowering and f64 reference:
//! `sampling` (batch rows, gather), `views` (view records, geometry, patches), `colour`
//! (jitter, grayscale, blur), `mixing` (mixup / cutmix, finish, soft targets). [`rng`] is the
//! Rust port of the kernels' random numbers and [`spec`] the plain augmentation parameters the
//! builders take (re-exported by the `data` module). The counter that advances `step` in evaluation
//! graphs is [`Graph::data_tick`] (`ops::counter`).

mod colour;
mod mixing;
pub mod rng;
mod sampling;
pub mod spec;
mod views;

pub use colour::color_cpu;
pub use sampling::Sampling;
pub use spec::{Augment, Blur, Crop, Jitter, Mix, Patches};

use crate::error::{Error, Result};
use crate::graph::{DType, Graph, Var};

/// Floats per sample in a view parameter record (layout documented in `shaders/data_common.wgsl`).
pub const REC: usize = 24;

/// Grid of the per-element kernels: x over the 256-element chunks of one plane, y (and z past
/// 65535) over the planes (see `plane_of` in the shader).
fn plane_grid(planes: usize, per_plane: usize) -> [u32; 3] {
    let x = per_plane.div_ceil(256).max(1) as u32;
    if planes <= 65535 { [x, planes.max(1) as u32, 1] } else { [x, 65535, planes.div_ceil(65535) as u32] }
}

fn u32_of(x: f64) -> u32 {
    x as u32
}

fn check_u32_scalar(g: &Graph, v: Var, what: &str) -> Result<()> {
    if g.dtype(v) != DType::U32 || g.numel(v) != 1 {
        return Err(Error::shape("data", format!("{what} must be a U32 tensor of one element (a step counter)")));
    }
    Ok(())
}

fn check_img(g: &Graph, x: Var, what: &str) -> Result<[usize; 4]> {
    let s = g.shape(x);
    if s.len() != 4 || g.dtype(x) != DType::F32 {
        return Err(Error::shape("data", format!("{what} takes F32 images [N, C, H, W], got {:?} {:?}", g.dtype(x), s)));
    }
    Ok([s[0], s[1], s[2], s[3]])
}

fn check_rec(g: &Graph, rec: Var, m: usize) -> Result<()> {
    if g.shape(rec) != [m, REC] {
        return Err(Error::shape("data", format!("a view record tensor must be [{m}, {REC}], got {:?}", g.shape(rec))));
    }
    Ok(())
}

fn prob(p: f32, what: &str) -> Result<f32> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::shape("data", format!("{what} probability {p} is not in [0, 1]")));
    }
    Ok(p)
}
