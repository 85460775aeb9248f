//! LayerNorm over the last axis (timm's LayerNorm; channels-last). Kernels in
//! `shaders/norm.wgsl`. BatchNorm lives in its own file.

use super::softmax::{row_variant, rows_cols};
use crate::error::{Error, Result};
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

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
        for c in 0..cols {
            let mut v = (row[c] - mu) * rs;
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
        let gw = if self.affine { g.mul(dy, n.inputs[1].var)? } else { dy };
        let dx = g.add_node(std::sync::Arc::new(LnDxOp), &[x, gw, mean, rstd], &[(xs.clone(), DType::F32)])?[0];
        if !self.affine {
            return Ok(vec![Some(dx)]);
        }
        // xhat = (x - mean) * rstd, recomputed rather than kept from the forward pass.
        let mut ks = xs.clone();
        *ks.last_mut().unwrap() = 1;
        let m = g.reshape(mean, &ks)?;
        let r = g.reshape(rstd, &ks)?;
        let xc = g.sub(x, m)?;
        let xhat = g.mul(xc, r)?;
        let dyx = g.mul(dy, xhat)?;
        let d = *xs.last().unwrap();
        let dw = g.sum_to(dyx, &[d])?;
        let db = g.sum_to(dy, &[d])?;
        Ok(vec![Some(dx), Some(dw), Some(db)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let x = Bind::T(n.inputs[0].var);
        let (w, b) = if self.affine { (Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var)) } else { (l.unused(), l.unused()) };
        let binds = [x, w, b, Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var), Bind::T(n.outputs[2].var)];
        let p = ln_params(rows, cols, self.affine, self.eps);
        if row_variant(l, rows, cols) {
            l.dispatch("norm", "ln_wg", p, &binds, grid(rows));
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

/// Inputs: x, g = dy * weight, mean, rstd.
#[derive(Debug)]
struct LnDxOp;

impl Op for LnDxOp {
    fn name(&self) -> &'static str {
        "layer_norm_dx"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let x = Bind::T(n.inputs[0].var);
        let unused = l.unused();
        let binds = [x, Bind::T(n.inputs[1].var), unused, Bind::T(n.outputs[0].var), Bind::T(n.inputs[2].var), Bind::T(n.inputs[3].var)];
        let p = ln_params(rows, cols, false, 0.0);
        if row_variant(l, rows, cols) {
            l.dispatch("norm", "ln_dx_wg", p, &binds, grid(rows));
        } else {
            l.dispatch("norm", "ln_dx_serial", p, &binds, grid_for(rows, 64));
        }
        Ok(())
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
        let outs =
            self.add_node(std::sync::Arc::new(op), &inputs, &[(xs, DType::F32), (vec![rows], DType::F32), (vec![rows], DType::F32)])?;
        Ok(outs[0])
    }
}
