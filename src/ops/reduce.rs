//! Reductions over axes (sum, mean, max) and `sum_to` (the adjoint of broadcasting).
//! Kernels in `shaders/reduce.wgsl`.

use super::elementwise::MAX_RANK;
use crate::error::{Error, Result};
use crate::graph::cpu::{strides, unravel};
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

#[derive(Debug)]
struct ReduceOp {
    kind: Reduce,
    /// Reduced axes, sorted.
    axes: Vec<usize>,
}

/// Uniform parameters of the reduce kernels for input `shape` reduced over `axes`.
fn reduce_params(shape: &[usize], axes: &[usize], scale: f32) -> (Params, usize, usize) {
    let st = strides(shape);
    let (mut ks, mut kst, mut rs, mut rst) = (vec![], vec![], vec![], vec![]);
    for (d, (&n, &s)) in shape.iter().zip(&st).enumerate() {
        if axes.contains(&d) {
            rs.push(n);
            rst.push(s);
        } else {
            ks.push(n);
            kst.push(s);
        }
    }
    let n_out: usize = ks.iter().product();
    let r: usize = rs.iter().product();
    let p = Params::new()
        .u(n_out)
        .u(r)
        .u(ks.len())
        .u(rs.len())
        .f(scale)
        .u(0)
        .u(0)
        .u(0)
        .arr(&ks, MAX_RANK)
        .arr(&kst, MAX_RANK)
        .arr(&rs, MAX_RANK)
        .arr(&rst, MAX_RANK);
    (p, n_out, r)
}

/// Whether a reduction of `r` elements into `n_out` outputs should use a workgroup per output.
pub(crate) fn wide_reduction(l: &Lowering, r: usize, n_out: usize) -> bool {
    if l.profile().software { n_out < 8 && r >= 256 } else { r > l.profile().serial_row_max || (r >= 1024 && n_out < 2048) }
}

/// f64 reference: reduce `x` over `axes` with `f` (returns values and argmax indices).
fn reduce_cpu(x: &CpuTensor, axes: &[usize], kind: Reduce) -> (Vec<f64>, Vec<usize>) {
    let kept: Vec<usize> = (0..x.shape.len()).filter(|d| !axes.contains(d)).collect();
    let kshape: Vec<usize> = kept.iter().map(|&d| x.shape[d]).collect();
    let n_out: usize = kshape.iter().product();
    let r: usize = axes.iter().map(|&d| x.shape[d]).product();
    let mut vals = vec![
        match kind {
            Reduce::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        n_out
    ];
    let mut idx = vec![0usize; n_out];
    let mut count = vec![0usize; n_out];
    for i in 0..x.numel() {
        let m = unravel(i, &x.shape);
        let ki: Vec<usize> = kept.iter().map(|&d| m[d]).collect();
        let o = ki.iter().zip(strides(&kshape)).map(|(a, b)| a * b).sum::<usize>();
        let v = x.data[i];
        match kind {
            Reduce::Max => {
                if v > vals[o] {
                    vals[o] = v;
                    idx[o] = count[o];
                }
            }
            _ => vals[o] += v,
        }
        count[o] += 1;
    }
    if kind == Reduce::Mean {
        vals.iter_mut().for_each(|v| *v /= r as f64);
    }
    (vals, idx)
}

impl Op for ReduceOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Reduce::Sum => "sum",
            Reduce::Mean => "mean",
            Reduce::Max => "max",
        }
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let xs = n.inputs[0].shape.clone();
        let r: usize = self.axes.iter().map(|&a| xs[a]).product();
        let kshape: Vec<usize> = xs.iter().enumerate().map(|(d, &s)| if self.axes.contains(&d) { 1 } else { s }).collect();
        let gy = g.reshape(gy, &kshape)?;
        let dx = match self.kind {
            Reduce::Sum => g.expand(gy, &xs)?,
            Reduce::Mean => {
                let e = g.expand(gy, &xs)?;
                g.scale(e, 1.0 / r as f32)?
            }
            Reduce::Max => {
                let idx = n.outputs[1].var;
                g.push(MaxGradOp { axes: self.axes.clone() }, &[gy, idx], xs.clone(), DType::F32)?
            }
        };
        Ok(vec![Some(dx)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let xs = &n.inputs[0].shape;
        let r: usize = self.axes.iter().map(|&a| xs[a]).product();
        let scale = if self.kind == Reduce::Mean { 1.0 / r as f32 } else { 1.0 };
        let (p, n_out, r) = reduce_params(xs, &self.axes, scale);
        let (x, y) = (Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var));
        match self.kind {
            Reduce::Max => l.dispatch("reduce", "reduce_max_serial", p, &[x, y, Bind::T(n.outputs[1].var)], grid_for(n_out, 256)),
            // A workgroup per output pays barriers and strided reads; it only wins when there are
            // too few outputs to fill the GPU. Software adapters run lanes in lockstep, where a
            // thread per output reading neighbouring columns is much better.
            _ if wide_reduction(l, r, n_out) => l.dispatch_wg_reduce("reduce", "reduce_wg", p, &[x, y], grid(n_out)),
            _ => l.dispatch("reduce", "reduce_serial", p, &[x, y], grid_for(n_out, 256)),
        }
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (vals, idx) = reduce_cpu(x[0], &self.axes, self.kind);
        let mut out = vec![CpuTensor::new(&n.outputs[0].shape, vals)];
        if self.kind == Reduce::Max {
            out.push(CpuTensor::new(&n.outputs[1].shape, idx.into_iter().map(|i| i as f64).collect()));
        }
        Ok(out)
    }

    /// Kept rows reduce on their own; a sum over the batch is the sum of the slices' sums (a
    /// mean or max over it is not, and stays whole).
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        match (self.axes.contains(&0), self.kind) {
            (false, _) => Some(crate::graph::BatchSplit::rows(n)),
            (true, Reduce::Sum) => Some(crate::graph::BatchSplit::rows(n).sum(&[0])),
            (true, _) => None,
        }
    }
}

/// Scatter the gradient of a max to the position of the maximum.
#[derive(Debug)]
struct MaxGradOp {
    axes: Vec<usize>,
}

impl Op for MaxGradOp {
    fn name(&self) -> &'static str {
        "max_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let xs = &n.outputs[0].shape;
        let len = n.outputs[0].numel();
        let dx = Bind::T(n.outputs[0].var);
        l.dispatch("elementwise", "fill", Params::new().u(len).f(0.0), &[dx], grid_for(len, 256));
        let (p, n_out, _) = reduce_params(xs, &self.axes, 1.0);
        l.dispatch("reduce", "reduce_max_grad", p, &[Bind::T(n.inputs[0].var), dx, Bind::T(n.inputs[1].var)], grid_for(n_out, 256));
        Ok(())
    }
}

fn norm_axes(op: &'static str, shape: &[usize], axes: &[isize]) -> Result<Vec<usize>> {
    let r = shape.len() as isize;
    let mut out = Vec::new();
    for &a in axes {
        let ax = if a < 0 { a + r } else { a };
        if ax < 0 || ax >= r {
            return Err(Error::shape(op, format!("axis {a} is out of range for shape {shape:?}")));
        }
        if !out.contains(&(ax as usize)) {
            out.push(ax as usize);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::shape(op, "no axes to reduce"));
    }
    if shape.len() > MAX_RANK {
        return Err(Error::shape(op, format!("rank {} exceeds the supported {MAX_RANK}", shape.len())));
    }
    Ok(out)
}

impl Graph {
    /// Reduce over `axes` (negative counts from the end). `keepdim` keeps them as size 1.
    pub fn reduce(&mut self, x: Var, axes: &[isize], kind: Reduce, keepdim: bool) -> Result<Var> {
        let op = ReduceOp { kind, axes: vec![] }.name();
        let shape = self.shape(x).to_vec();
        let axes = norm_axes(op, &shape, axes)?;
        let kshape: Vec<usize> = shape.iter().enumerate().map(|(d, &s)| if axes.contains(&d) { 1 } else { s }).collect();
        let mut out_shape: Vec<usize> = shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect();
        if out_shape.is_empty() {
            out_shape.push(1);
        }
        let mut outs = vec![(out_shape.clone(), DType::F32)];
        if kind == Reduce::Max {
            outs.push((out_shape, DType::U32));
        }
        let y = self.add_node(std::sync::Arc::new(ReduceOp { kind, axes }), &[x], &outs)?[0];
        if keepdim { self.reshape(y, &kshape) } else { Ok(y) }
    }
    pub fn sum(&mut self, x: Var, axes: &[isize], keepdim: bool) -> Result<Var> {
        self.reduce(x, axes, Reduce::Sum, keepdim)
    }
    pub fn mean(&mut self, x: Var, axes: &[isize], keepdim: bool) -> Result<Var> {
        self.reduce(x, axes, Reduce::Mean, keepdim)
    }
    pub fn max(&mut self, x: Var, axes: &[isize], keepdim: bool) -> Result<Var> {
        self.reduce(x, axes, Reduce::Max, keepdim)
    }
    /// Sum of all elements, shape [1].
    pub fn sum_all(&mut self, x: Var) -> Result<Var> {
        let axes: Vec<isize> = (0..self.shape(x).len() as isize).collect();
        self.reduce(x, &axes, Reduce::Sum, false)
    }
    pub fn mean_all(&mut self, x: Var) -> Result<Var> {
        let axes: Vec<isize> = (0..self.shape(x).len() as isize).collect();
        self.reduce(x, &axes, Reduce::Mean, false)
    }

    /// Sum `x` down to `shape` (the adjoint of broadcasting `shape` to `x`'s shape).
    pub fn sum_to(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        if xs == shape {
            return Ok(x);
        }
        let off = xs.len().checked_sub(shape.len()).ok_or_else(|| Error::shape("sum_to", format!("cannot sum {xs:?} to {shape:?}")))?;
        let mut axes = vec![];
        for (d, &n) in xs.iter().enumerate() {
            let t = if d < off { 1 } else { shape[d - off] };
            if t == 1 && n != 1 {
                axes.push(d as isize);
            } else if t != n {
                return Err(Error::shape("sum_to", format!("cannot sum {xs:?} to {shape:?}")));
            }
        }
        let y = if axes.is_empty() { x } else { self.sum(x, &axes, false)? };
        self.reshape(y, shape)
    }
}
