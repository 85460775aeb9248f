//! What every tensor has, whoever holds it: an element type and a shape. The store (tensors
//! that outlive a step) and the graph (tensors of one step) both build on this module, so
//! neither needs the other for it.

use crate::error::{Error, Result};

/// Element type of a tensor. Both are 32-bit: WGSL storage arrays are `f32` or `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        4
    }
}

/// Max rank of broadcasting and layout kernels (two vec4 arrays in the uniform block).
pub const MAX_RANK: usize = 8;

/// Every tensor has rank >= 1 and no zero dimension (a WebGPU binding cannot be empty);
/// `op` and `name` say which tensor broke the rule.
pub(crate) fn check_shape(op: &'static str, name: &str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(Error::shape(op, format!("'{name}' has shape {shape:?}; every tensor needs rank >= 1 and no zero dimension")));
    }
    Ok(())
}

/// Row-major strides of `shape`, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Multi-index of a linear index.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}
