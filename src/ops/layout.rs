//! Layout ops: reshape (no kernel: same memory), expand, permute, slice, concat, pad.
//! Kernels in `shaders/layout.wgsl` (strided gather and scatter).

use super::elementwise::{MAX_RANK, broadcast_strides};
use crate::error::{Error, Result};
use crate::graph::cpu::{strides, unravel};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

/// Gather or scatter `n` elements over `shape` with strides `st` from `base`.
fn strided(l: &mut Lowering, entry: &'static str, src: Var, dst: Var, shape: &[usize], st: &[usize], base: usize) {
    let n: usize = shape.iter().product();
    let p = Params::new().u(n).u(shape.len()).u(base).u(0).arr(shape, MAX_RANK).arr(st, MAX_RANK);
    l.dispatch("layout", entry, p, &[Bind::T(src), Bind::T(dst)], grid_for(n, 256));
}

/// CPU reference of a strided gather.
fn gather_cpu(x: &CpuTensor, shape: &[usize], st: &[usize], base: usize) -> CpuTensor {
    let data =
        (0..shape.iter().product()).map(|i| x.data[base + unravel(i, shape).iter().zip(st).map(|(a, b)| a * b).sum::<usize>()]).collect();
    CpuTensor::new(shape, data)
}

#[derive(Debug)]
struct ReshapeOp;

impl Op for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn alias_of(&self) -> Option<usize> {
        Some(0)
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        Ok(vec![match gy[0] {
            Some(gy) => Some(g.reshape(gy, &n.inputs[0].shape)?),
            None => None,
        }])
    }
    fn lower(&self, _n: &NodeRef, _l: &mut Lowering) -> Result<()> {
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, x[0].data.clone())])
    }
}

/// Identity whose gradient is zero: the teacher's outputs in distillation.
#[derive(Debug)]
struct DetachOp;

impl Op for DetachOp {
    fn name(&self) -> &'static str {
        "detach"
    }
    fn alias_of(&self) -> Option<usize> {
        Some(0)
    }
    fn backward(&self, _g: &mut Graph, _n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        Ok(vec![None])
    }
    fn lower(&self, _n: &NodeRef, _l: &mut Lowering) -> Result<()> {
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![x[0].clone()])
    }
}

#[derive(Debug)]
struct ExpandOp;

impl Op for ExpandOp {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        Ok(vec![match gy[0] {
            Some(gy) => Some(g.sum_to(gy, &n.inputs[0].shape)?),
            None => None,
        }])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let out = &n.outputs[0].shape;
        strided(l, "gather", n.inputs[0].var, n.outputs[0].var, out, &broadcast_strides(&n.inputs[0].shape, out), 0);
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let out = &n.outputs[0].shape;
        Ok(vec![gather_cpu(x[0], out, &broadcast_strides(&x[0].shape, out), 0)])
    }

    /// An input without the output's leading axis is broadcast: every slice reads it whole.
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        let (x, out) = (&n.inputs[0].shape, &n.outputs[0].shape);
        let split = crate::graph::BatchSplit::rows(n);
        Some(if x.len() == out.len() && x[0] == out[0] { split } else { split.whole(&[0]) })
    }
}

#[derive(Debug)]
struct PermuteOp(Vec<usize>);

impl PermuteOp {
    fn strides(&self, in_shape: &[usize]) -> Vec<usize> {
        let s = strides(in_shape);
        self.0.iter().map(|&p| s[p]).collect()
    }
}

impl Op for PermuteOp {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, g: &mut Graph, _n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![Some(g.permute(gy, &inv)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        strided(l, "gather", n.inputs[0].var, n.outputs[0].var, &n.outputs[0].shape, &self.strides(&n.inputs[0].shape), 0);
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![gather_cpu(x[0], &n.outputs[0].shape, &self.strides(&x[0].shape), 0)])
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        (self.0[0] == 0).then(|| crate::graph::BatchSplit::rows(n))
    }
}

/// A contiguous range `start..start+len` along `axis`.
#[derive(Debug)]
struct SliceOp {
    axis: usize,
    start: usize,
}

impl Op for SliceOp {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let shape = n.inputs[0].shape.clone();
        Ok(vec![Some(g.push(PadOp { axis: self.axis, start: self.start }, &[gy], shape, DType::F32)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let st = strides(&n.inputs[0].shape);
        strided(l, "gather", n.inputs[0].var, n.outputs[0].var, &n.outputs[0].shape, &st, self.start * st[self.axis]);
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let st = strides(&x[0].shape);
        Ok(vec![gather_cpu(x[0], &n.outputs[0].shape, &st, self.start * st[self.axis])])
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        (self.axis != 0).then(|| crate::graph::BatchSplit::rows(n))
    }
}

/// Place the input at `start` along `axis` of a zero tensor (the adjoint of slice).
#[derive(Debug)]
struct PadOp {
    axis: usize,
    start: usize,
}

impl Op for PadOp {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        Ok(vec![Some(g.slice(gy, self.axis as isize, self.start, n.inputs[0].shape[self.axis])?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let y = n.outputs[0].var;
        let len = n.outputs[0].numel();
        l.dispatch("elementwise", "fill", Params::new().u(len).f(0.0), &[Bind::T(y)], grid_for(len, 256));
        let st = strides(&n.outputs[0].shape);
        strided(l, "scatter", n.inputs[0].var, y, &n.inputs[0].shape, &st, self.start * st[self.axis]);
        Ok(())
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        (self.axis != 0).then(|| crate::graph::BatchSplit::rows(n))
    }
}

#[derive(Debug)]
struct ConcatOp {
    axis: usize,
}

impl Op for ConcatOp {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let mut start = 0;
        let mut out = Vec::new();
        for x in &n.inputs {
            let len = x.shape[self.axis];
            out.push(Some(g.slice(gy, self.axis as isize, start, len)?));
            start += len;
        }
        Ok(out)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let st = strides(&n.outputs[0].shape);
        let mut start = 0;
        for x in &n.inputs {
            strided(l, "scatter", x.var, n.outputs[0].var, &x.shape, &st, start * st[self.axis]);
            start += x.shape[self.axis];
        }
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, xs: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut out = CpuTensor::zeros(&n.outputs[0].shape);
        let st = strides(&out.shape);
        let mut start = 0;
        for x in xs {
            for i in 0..x.numel() {
                let m = unravel(i, &x.shape);
                let o: usize = m.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>() + start * st[self.axis];
                out.data[o] = x.data[i];
            }
            start += x.shape[self.axis];
        }
        Ok(vec![out])
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        (self.axis != 0).then(|| crate::graph::BatchSplit::rows(n))
    }
}

fn axis_of(op: &'static str, shape: &[usize], axis: isize) -> Result<usize> {
    let r = shape.len() as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::shape(op, format!("axis {axis} is out of range for shape {shape:?}")));
    }
    Ok(a as usize)
}

impl Graph {
    /// The same memory under a new shape (element count must match; no kernel runs).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let n: usize = shape.iter().product();
        if n != self.numel(x) {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {:?} ({} elements) to {shape:?} ({n} elements)", self.shape(x), self.numel(x)),
            ));
        }
        if self.shape(x) == shape {
            return Ok(x);
        }
        let dt = self.dtype(x);
        self.push(ReshapeOp, &[x], shape.to_vec(), dt)
    }

    /// The same values with no gradient flowing back (stop-gradient).
    pub fn detach(&mut self, x: Var) -> Result<Var> {
        let shape = self.shape(x).to_vec();
        let dt = self.dtype(x);
        self.push(DetachOp, &[x], shape, dt)
    }

    /// Broadcast `x` to `shape` in fresh memory.
    pub fn expand(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let b = super::elementwise::broadcast_shapes("expand", self.shape(x), shape)?;
        if b != shape {
            return Err(Error::shape("expand", format!("cannot expand {:?} to {shape:?}", self.shape(x))));
        }
        if self.shape(x) == shape {
            return Ok(x);
        }
        self.push(ExpandOp, &[x], shape.to_vec(), DType::F32)
    }

    /// Reorder axes: output axis i is input axis `perm[i]`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        let s = self.shape(x).to_vec();
        let mut seen = vec![false; s.len()];
        if perm.len() != s.len() || perm.iter().any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::shape("permute", format!("{perm:?} is not a permutation of the axes of {s:?}")));
        }
        if s.len() > MAX_RANK {
            return Err(Error::shape("permute", format!("rank {} exceeds the supported {MAX_RANK}", s.len())));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        let out: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        let dt = self.dtype(x);
        self.push(PermuteOp(perm.to_vec()), &[x], out, dt)
    }

    /// Swap two axes.
    pub fn transpose(&mut self, x: Var, a: isize, b: isize) -> Result<Var> {
        let s = self.shape(x).to_vec();
        let (a, b) = (axis_of("transpose", &s, a)?, axis_of("transpose", &s, b)?);
        let mut perm: Vec<usize> = (0..s.len()).collect();
        perm.swap(a, b);
        self.permute(x, &perm)
    }

    /// Elements `start..start+len` along `axis`.
    pub fn slice(&mut self, x: Var, axis: isize, start: usize, len: usize) -> Result<Var> {
        let s = self.shape(x).to_vec();
        let axis = axis_of("slice", &s, axis)?;
        if len == 0 || start + len > s[axis] {
            return Err(Error::shape("slice", format!("range {start}..{} is outside axis {axis} of {s:?}", start + len)));
        }
        if len == s[axis] {
            return Ok(x);
        }
        let mut out = s.clone();
        out[axis] = len;
        let dt = self.dtype(x);
        self.push(SliceOp { axis, start }, &[x], out, dt)
    }

    /// Join tensors along `axis`; all other dimensions must agree.
    pub fn concat(&mut self, xs: &[Var], axis: isize) -> Result<Var> {
        let first = self.shape(*xs.first().ok_or_else(|| Error::shape("concat", "no tensors to concatenate"))?).to_vec();
        let axis = axis_of("concat", &first, axis)?;
        let mut out = first.clone();
        out[axis] = 0;
        for &x in xs {
            let s = self.shape(x);
            if s.len() != first.len() || s.iter().enumerate().any(|(d, &n)| d != axis && n != first[d]) {
                return Err(Error::shape("concat", format!("shapes {first:?} and {s:?} differ outside axis {axis}")));
            }
            out[axis] += s[axis];
        }
        if xs.len() == 1 {
            return Ok(xs[0]);
        }
        let dt = self.dtype(xs[0]);
        self.push(ConcatOp { axis }, xs, out, dt)
    }
}
