//! LayerNorm over the last axis (timm's LayerNorm; channels-last). Kernels in
//! `shaders/norm.wgsl`. BatchNorm lives in its own file. The backward is two dispatches: dx
//! (the weight applied inside, and the residual stream's gradient as an addend, see
//! `Graph::add_into`) and dweight with dbias in one pass over the rows.

use super::softmax::{row_variant, rows_cols};
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

#[derive(Debug)]
struct LayerNormOp {
    eps: f32,
    affine: bool,
}

fn ln_params(rows: usize, cols: usize, affine: bool, eps: f32) -> Params {
    Params::new().u(rows).u(cols).u(affine as usize).u(0).f(eps).f(0.0).f(0.0).f(0.0)
}

/// f64 reference: LayerNorm of each last-axis row.
pub fn layer_norm_cpu(x: &CpuTensor, w: Option<&CpuTensor>, b: Option<&CpuTensor>, eps: f64) -> CpuTensor {
    let (rows, cols) = rows_cols(&x.shape);
    let mut out = x.clone();
    for r in 0..rows {
        let row = &x.data[r * cols..(r + 1) * cols];
        let mu = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for (c, &xv) in row.iter().enumerate() {
            let mut v = (xv - mu) * rs;
            if let (Some(w), Some(b)) = (w, b) {
                v = v * w.data[c] + b.data[c];
            }
            out.data[r * cols + c] = v;
        }
    }
    out
}

impl Op for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let x = n.inputs[0].var;
        let xs = n.inputs[0].shape.clone();
        let (mean, rstd) = (n.outputs[1].var, n.outputs[2].var);
        // dx in one dispatch (dy * weight inside), then dweight and dbias in one more.
        let mut ins = vec![x, dy, mean, rstd];
        if self.affine {
            ins.push(n.inputs[1].var);
        }
        let dx = g.add_node(Arc::new(LnDxOp { affine: self.affine, addend: false }), &ins, &[(xs.clone(), DType::F32)])?[0];
        if !self.affine {
            return Ok(vec![Some(dx)]);
        }
        let d = *xs.last().unwrap();
        let p = g.add_node(Arc::new(LnParamGradOp), &[x, dy, mean, rstd], &[(vec![d], DType::F32), (vec![d], DType::F32)])?;
        Ok(vec![Some(dx), Some(p[0]), Some(p[1])])
    }
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n).whole(&[1, 2]))
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let x = Bind::T(n.inputs[0].var);
        let (w, b) = if self.affine { (Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var)) } else { (l.unused(), l.unused()) };
        let binds = [x, w, b, Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var), Bind::T(n.outputs[2].var)];
        let p = ln_params(rows, cols, self.affine, self.eps);
        if row_variant(l, rows, cols) {
            l.dispatch_wg_reduce("norm", "ln_wg", p, &binds, grid(rows));
        } else {
            l.dispatch("norm", "ln_serial", p, &binds, grid_for(rows, 64));
        }
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let y = layer_norm_cpu(x[0], x.get(1).copied(), x.get(2).copied(), self.eps as f64);
        let (rows, cols) = rows_cols(&x[0].shape);
        let mut mean = CpuTensor::zeros(&n.outputs[1].shape);
        let mut rstd = CpuTensor::zeros(&n.outputs[2].shape);
        for r in 0..rows {
            let row = &x[0].data[r * cols..(r + 1) * cols];
            let mu = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
            mean.data[r] = mu;
            rstd.data[r] = 1.0 / (var + self.eps as f64).sqrt();
        }
        Ok(vec![y, mean, rstd])
    }
}

/// f64 reference of the LayerNorm input gradient (the weight applied to `dy` first).
pub fn layer_norm_dx_cpu(x: &CpuTensor, dy: &CpuTensor, mean: &CpuTensor, rstd: &CpuTensor, w: Option<&CpuTensor>) -> CpuTensor {
    let (rows, cols) = rows_cols(&x.shape);
    let mut dx = CpuTensor::zeros(&x.shape);
    for r in 0..rows {
        let (mu, rs) = (mean.data[r], rstd.data[r]);
        let g = |c: usize| dy.data[r * cols + c] * w.map_or(1.0, |w| w.data[c]);
        let xh = |c: usize| (x.data[r * cols + c] - mu) * rs;
        let a = (0..cols).map(g).sum::<f64>() / cols as f64;
        let b = (0..cols).map(|c| g(c) * xh(c)).sum::<f64>() / cols as f64;
        for c in 0..cols {
            dx.data[r * cols + c] = rs * (g(c) - a - xh(c) * b);
        }
    }
    dx
}

/// The LayerNorm input gradient. Inputs: x, dy, mean, rstd [, weight] [, addend].
#[derive(Debug)]
struct LnDxOp {
    affine: bool,
    /// Plus one more input (`Op::with_addend`): the residual stream's gradient.
    addend: bool,
}

impl Op for LnDxOp {
    fn name(&self) -> &'static str {
        "layer_norm_dx"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let t = |i: usize| Bind::T(n.inputs[i].var);
        let w = if self.affine { t(4) } else { l.unused() };
        let add = if self.addend { Bind::T(n.inputs.last().unwrap().var) } else { l.unused() };
        let binds = [t(0), t(1), w, Bind::T(n.outputs[0].var), t(2), t(3), add];
        let p = Params::new().u(rows).u(cols).u(self.affine as usize).u(self.addend as usize).f(0.0).f(0.0).f(0.0).f(0.0);
        if row_variant(l, rows, cols) {
            l.dispatch_wg_reduce("norm", "ln_dx_wg", p, &binds, grid(rows));
        } else {
            l.dispatch("norm", "ln_dx_serial", p, &binds, grid_for(rows, 64));
        }
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let w = if self.affine { Some(x[4]) } else { None };
        let mut dx = layer_norm_dx_cpu(x[0], x[1], x[2], x[3], w);
        if self.addend {
            let add = x[x.len() - 1];
            dx.data.iter_mut().zip(&add.data).for_each(|(d, a)| *d += a);
        }
        Ok(vec![dx])
    }
    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        (!self.addend).then(|| Arc::new(LnDxOp { affine: self.affine, addend: true }) as Arc<dyn Op>)
    }
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n).whole(if self.affine { &[4] } else { &[] }))
    }
}

/// The LayerNorm weight and bias gradients, `sum_rows(dy * xhat)` and `sum_rows(dy)`, in one
/// pass over the rows. Inputs: x, dy, mean, rstd. Outputs: dweight, dbias.
#[derive(Debug)]
struct LnParamGradOp;

impl Op for LnParamGradOp {
    fn name(&self) -> &'static str {
        "layer_norm_dparams"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let t = |i: usize| Bind::T(n.inputs[i].var);
        let unused = l.unused();
        let binds = [t(0), t(1), unused, Bind::T(n.outputs[0].var), t(2), t(3), Bind::T(n.outputs[1].var)];
        let p = Params::new().u(rows).u(cols).u(0).u(0).f(0.0).f(0.0).f(0.0).f(0.0);
        // A thread per column; on real GPUs 16 of them share a column's rows.
        let (cw, rp) = if l.profile().software { (64, 1) } else { (16, 16) };
        let key = KernelKey::new("norm", "ln_dparams").constant("CW", cw).constant("RP", rp);
        l.dispatch_key(key, p, &binds, grid(cols.div_ceil(cw as usize)));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, cols) = rows_cols(&x[0].shape);
        let mut dw = CpuTensor::zeros(&n.outputs[0].shape);
        let mut db = CpuTensor::zeros(&n.outputs[1].shape);
        for r in 0..rows {
            for c in 0..cols {
                let dy = x[1].data[r * cols + c];
                dw.data[c] += dy * (x[0].data[r * cols + c] - x[2].data[r]) * x[3].data[r];
                db.data[c] += dy;
            }
        }
        Ok(vec![dw, db])
    }
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n).sum(&[0, 1]))
    }
}

impl Graph {
    /// LayerNorm over the last axis with optional affine weight and bias ([last dim] each).
    pub fn layer_norm(&mut self, x: Var, weight: Option<Var>, bias: Option<Var>, eps: f32) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        let d = *xs.last().unwrap();
        let mut inputs = vec![x];
        match (weight, bias) {
            (Some(w), Some(b)) => {
                for v in [w, b] {
                    if self.shape(v) != [d] {
                        return Err(Error::shape(
                            "layer_norm",
                            format!("affine parameter {:?} does not match the last axis of {xs:?}", self.shape(v)),
                        ));
                    }
                }
                inputs.extend([w, b]);
            }
            (None, None) => {}
            _ => return Err(Error::shape("layer_norm", "weight and bias come together")),
        }
        let rows = xs.iter().product::<usize>() / d;
        let op = LayerNormOp { eps, affine: weight.is_some() };
        let outs = self.add_node(Arc::new(op), &inputs, &[(xs, DType::F32), (vec![rows], DType::F32), (vec![rows], DType::F32)])?;
        Ok(outs[0])
    }
}
