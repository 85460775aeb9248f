//! Stochastic depth (drop path) on residual branches, and timm's schedule of its rates.

use super::Fwd;
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};

/// Stochastic depth on a residual branch in training (identity in evaluation or at rate 0).
pub fn drop_path(g: &mut Graph, x: Var, p: f32, f: &Fwd) -> Result<Var> {
    match f.step {
        Some(step) if f.training() && p > 0.0 => g.drop_path(x, p, step, f.seed),
        _ => Ok(x),
    }
}

/// `x + drop_path(y)`: in training, whole samples of the branch are dropped with
/// probability `rate` (and the rest scaled by 1/(1-rate)).
pub fn residual(g: &mut Graph, x: Var, y: Var, rate: f32, f: &Fwd) -> Result<Var> {
    let y = if f.training() && rate > 0.0 {
        let step = f.step.ok_or_else(|| Error::usage("drop path in training needs the step counter (Fwd::train)"))?;
        g.drop_path(y, rate, step, f.seed)?
    } else {
        y
    };
    // Fused into the op that computes the branch where it can be (the projection's matmul).
    g.add_into(x, y)
}

/// timm's stochastic-depth schedule: rates rise linearly from 0 to `rate` over all blocks.
pub fn drop_path_rates(rate: f32, blocks: usize) -> Vec<f32> {
    if blocks <= 1 {
        return vec![0.0; blocks];
    }
    (0..blocks).map(|i| rate * i as f32 / (blocks - 1) as f32).collect()
}
