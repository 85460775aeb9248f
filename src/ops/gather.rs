//! Gather along one axis with an index fixed at build time, and its adjoint (a sum over
//! repeated indices, computed from a CSR inverse index instead of float atomics, which WGSL
//! lacks). Serves Swin's relative position bias lookup (repeated indices) and its cyclic
//! shift + window partition and reverse (permutations). Kernels in `shaders/gather.wgsl`.

use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

/// [outer, len, inner] around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Inputs: x, index (U32 constant [M]). Output: x with axis `axis` replaced by M.
#[derive(Debug)]
struct GatherOp {
    axis: usize,
    index: Arc<Vec<u32>>,
}

impl Op for GatherOp {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None, None]) };
        let len = n.inputs[0].shape[self.axis];
        // Inverse index: for each source row l, the output rows m that read it.
        let mut off = vec![0u32; len + 1];
        for &i in self.index.iter() {
            off[i as usize + 1] += 1;
        }
        for l in 0..len {
            off[l + 1] += off[l];
        }
        let mut fill = off.clone();
        let mut pos = vec![0u32; self.index.len()];
        for (m, &i) in self.index.iter().enumerate() {
            pos[fill[i as usize] as usize] = m as u32;
            fill[i as usize] += 1;
        }
        let pos = g.constant_u32(&[pos.len()], &pos)?;
        let off = g.constant_u32(&[off.len()], &off)?;
        let shape = n.inputs[0].shape.clone();
        let dx = g.push(ScatterOp { axis: self.axis }, &[dy, pos, off], shape, DType::F32)?;
        Ok(vec![Some(dx), None])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (outer, len, inner) = split(&n.inputs[0].shape, self.axis);
        let m = self.index.len();
        let total = outer * m * inner;
        let p = Params::new().u(total).u(len).u(m).u(inner);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.inputs[1].var)];
        l.dispatch("gather", "gather_rows", p, &binds, grid_for(total, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (outer, len, inner) = split(&x[0].shape, self.axis);
        let m = self.index.len();
        let mut y = CpuTensor::zeros(&n.outputs[0].shape);
        for a in 0..outer {
            for (k, &i) in self.index.iter().enumerate() {
                for c in 0..inner {
                    y.data[(a * m + k) * inner + c] = x[0].data[(a * len + i as usize) * inner + c];
                }
            }
        }
        Ok(vec![y])
    }
}

/// The adjoint of [`GatherOp`]. Inputs: dy, pos [M], off [L + 1]. Output: dx.
#[derive(Debug)]
struct ScatterOp {
    axis: usize,
}

impl Op for ScatterOp {
    fn name(&self) -> &'static str {
        "gather_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (outer, len, inner) = split(&n.outputs[0].shape, self.axis);
        let m = n.inputs[0].shape[self.axis];
        let total = outer * len * inner;
        let p = Params::new().u(total).u(len).u(m).u(inner);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var)];
        l.dispatch("gather", "scatter_rows", p, &binds, grid_for(total, 256));
        Ok(())
    }
}

impl Graph {
    /// `y = x[.., index, ..]` along `axis` (negative counts from the end): the axis becomes
    /// `index.len()` long. Indices may repeat; the gradient sums over repeats.
    pub fn gather_axis(&mut self, x: Var, axis: isize, index: &[usize]) -> Result<Var> {
        let s = self.shape(x).to_vec();
        let r = s.len() as isize;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(Error::shape("gather", format!("axis {axis} is out of range for shape {s:?}")));
        }
        let a = a as usize;
        if index.is_empty() {
            return Err(Error::shape("gather", "empty index"));
        }
        if let Some(&bad) = index.iter().find(|&&i| i >= s[a]) {
            return Err(Error::shape("gather", format!("index {bad} is out of range for axis {a} of {s:?}")));
        }
        if self.dtype(x) != DType::F32 {
            return Err(Error::shape("gather", format!("'{}' is not F32", self.info(x).name)));
        }
        let idx: Vec<u32> = index.iter().map(|&i| i as u32).collect();
        let iv = self.constant_u32(&[idx.len()], &idx)?;
        let mut out = s.clone();
        out[a] = index.len();
        self.push(GatherOp { axis: a, index: Arc::new(idx) }, &[x, iv], out, DType::F32)
    }
}
