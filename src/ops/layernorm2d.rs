//! LayerNorm over the channel axis of NCHW maps (timm's `LayerNorm2d`, used by ConvNeXt's
//! stem, downsampling layers and conv-MLP blocks). Equivalent to permuting to NHWC, the
//! last-axis `layer_norm`, and permuting back, without the two copies. Kernels in
//! `shaders/layernorm2d.wgsl`.

use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

fn params(shape: &[usize], affine: bool, eps: f32) -> Params {
    let hw: usize = shape[2..].iter().product();
    Params::new().u(shape[0]).u(shape[1]).u(hw).u(affine as usize).f(eps).f(0.0).f(0.0).f(0.0)
}

/// Inputs: x, [weight, bias]. Outputs: y, mean [N*H*W], rstd [N*H*W].
#[derive(Debug)]
struct Ln2dOp {
    eps: f32,
    affine: bool,
}

/// f64 reference.
pub fn layer_norm2d_cpu(x: &CpuTensor, w: Option<&CpuTensor>, b: Option<&CpuTensor>, eps: f64) -> (CpuTensor, Vec<f64>, Vec<f64>) {
    let (n, c) = (x.shape[0], x.shape[1]);
    let hw: usize = x.shape[2..].iter().product();
    let mut y = x.clone();
    let (mut means, mut rstds) = (vec![], vec![]);
    for s in 0..n {
        for p in 0..hw {
            let idx = |ch: usize| (s * c + ch) * hw + p;
            let mu = (0..c).map(|ch| x.data[idx(ch)]).sum::<f64>() / c as f64;
            let var = (0..c).map(|ch| (x.data[idx(ch)] - mu).powi(2)).sum::<f64>() / c as f64;
            let rs = 1.0 / (var + eps).sqrt();
            for ch in 0..c {
                let mut v = (x.data[idx(ch)] - mu) * rs;
                if let (Some(w), Some(b)) = (w, b) {
                    v = v * w.data[ch] + b.data[ch];
                }
                y.data[idx(ch)] = v;
            }
            means.push(mu);
            rstds.push(rs);
        }
    }
    (y, means, rstds)
}

impl Op for Ln2dOp {
    fn name(&self) -> &'static str {
        "layer_norm2d"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        8 * n.inputs[0].numel() as u64
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let x = &n.inputs[0];
        let (mean, rstd) = (n.outputs[1].var, n.outputs[2].var);
        let mut ins = vec![dy, x.var, mean, rstd];
        if self.affine {
            ins.push(n.inputs[1].var);
        }
        let dx = g.push(Ln2dDxOp { affine: self.affine }, &ins, x.shape.clone(), DType::F32)?;
        if !self.affine {
            return Ok(vec![Some(dx)]);
        }
        let c = x.shape[1];
        let r = g.add_node(Arc::new(Ln2dDwbOp), &[dy, x.var, mean, rstd], &[(vec![c], DType::F32), (vec![c], DType::F32)])?;
        Ok(vec![Some(dx), Some(r[0]), Some(r[1])])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let x = Bind::T(n.inputs[0].var);
        let (w, b) = if self.affine { (Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var)) } else { (l.unused(), l.unused()) };
        let binds = [x, w, b, Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var), Bind::T(n.outputs[2].var)];
        let rows = n.outputs[1].numel();
        l.dispatch("layernorm2d", "ln2d_fwd", params(&n.inputs[0].shape, self.affine, self.eps), &binds, grid_for(rows, 64));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (y, m, r) = layer_norm2d_cpu(x[0], x.get(1).copied(), x.get(2).copied(), self.eps as f64);
        let len = m.len();
        Ok(vec![y, CpuTensor::new(&[len], m), CpuTensor::new(&[len], r)])
    }
}

/// Inputs: dy, x, mean, rstd, [weight]. Output: dx.
#[derive(Debug)]
struct Ln2dDxOp {
    affine: bool,
}

impl Op for Ln2dDxOp {
    fn name(&self) -> &'static str {
        "layer_norm2d_dx"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        10 * n.inputs[0].numel() as u64
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let i = |k: usize| Bind::T(n.inputs[k].var);
        let w = if self.affine { i(4) } else { l.unused() };
        let binds = [i(0), i(1), w, Bind::T(n.outputs[0].var), i(2), i(3)];
        let rows = n.inputs[2].numel();
        l.dispatch("layernorm2d", "ln2d_dx", params(&n.inputs[0].shape, self.affine, 0.0), &binds, grid_for(rows, 64));
        Ok(())
    }
}

/// Inputs: dy, x, mean, rstd. Outputs: dweight, dbias.
#[derive(Debug)]
struct Ln2dDwbOp;

impl Op for Ln2dDwbOp {
    fn name(&self) -> &'static str {
        "layer_norm2d_dwb"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        4 * n.inputs[0].numel() as u64
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let i = |k: usize| Bind::T(n.inputs[k].var);
        let (dw, db) = (Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var));
        // Bindings 3 (weight), 4 (dx) of the shared layout are unused here: placeholders.
        let binds = [i(0), i(1), l.unused(), l.unused(), i(2), i(3), dw, db];
        let c = n.inputs[0].shape[1];
        l.dispatch("layernorm2d", "ln2d_dwb", params(&n.inputs[0].shape, true, 0.0), &binds, [c as u32, 1, 1]);
        Ok(())
    }
}

impl Graph {
    /// LayerNorm over the channels (axis 1) of `x` [N, C, H, W], with optional affine weight
    /// and bias [C]: timm's `LayerNorm2d`.
    pub fn layer_norm2d(&mut self, x: Var, weight: Option<Var>, bias: Option<Var>, eps: f32) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        if xs.len() < 2 || self.dtype(x) != DType::F32 {
            return Err(Error::shape("layer_norm2d", format!("input {xs:?} must be F32 [N, C, ...]")));
        }
        let mut inputs = vec![x];
        match (weight, bias) {
            (Some(w), Some(b)) => {
                for v in [w, b] {
                    if self.shape(v) != [xs[1]] {
                        return Err(Error::shape(
                            "layer_norm2d",
                            format!("affine parameter {:?} does not match the channels of {xs:?}", self.shape(v)),
                        ));
                    }
                }
                inputs.extend([w, b]);
            }
            (None, None) => {}
            _ => return Err(Error::shape("layer_norm2d", "weight and bias come together")),
        }
        let rows = xs[0] * xs[2..].iter().product::<usize>();
        let op = Ln2dOp { eps, affine: weight.is_some() };
        let outs = self.add_node(Arc::new(op), &inputs, &[(xs, DType::F32), (vec![rows], DType::F32), (vec![rows], DType::F32)])?;
        Ok(outs[0])
    }
}
