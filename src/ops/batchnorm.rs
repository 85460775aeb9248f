//! BatchNorm2d over NCHW maps, matching PyTorch: in training, batch statistics (biased
//! variance) normalise and the running stats move by `momentum` (unbiased variance), and
//! `num_batches_tracked` counts the steps; in evaluation the running stats normalise.
//! Either mode can fuse an epilogue `y = act(bn(x) [+ residual])` with act none, ReLU or
//! ReLU6 (one dispatch forward, one backward: ResNet's bn + add + relu in one pass).
//! Kernels in `shaders/batchnorm.wgsl`.

use super::Unary;
use crate::error::{Error, Result};
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

/// The tensors of one BatchNorm2d layer in a graph.
#[derive(Clone, Copy, Debug)]
pub struct BnVars {
    /// Affine weight and bias ([C] each), or None for `affine=False`.
    pub weight: Option<Var>,
    pub bias: Option<Var>,
    /// Running mean and variance (F32 [C] state) and num_batches_tracked (U32 [1] state).
    pub running_mean: Var,
    pub running_var: Var,
    pub num_batches_tracked: Var,
}

/// The fused epilogue of a BatchNorm: the activation after the (residual) add and whether a
/// residual is added.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Epilogue {
    act: Unary,
    residual: bool,
}

impl Epilogue {
    /// The kernels' activation code (`bp.act`).
    fn code(self) -> usize {
        match self.act {
            Unary::Relu => 1,
            Unary::Relu6 => 2,
            _ => 0,
        }
    }
    fn has_act(self) -> bool {
        self.code() != 0
    }
    /// f64 reference: act(v + r).
    fn apply(self, y: &mut CpuTensor, residual: Option<&CpuTensor>) {
        if let Some(r) = residual {
            for (v, r) in y.data.iter_mut().zip(&r.data) {
                *v += r;
            }
        }
        if self.has_act() {
            for v in y.data.iter_mut() {
                *v = self.act.eval(*v);
            }
        }
    }
}

/// (n, c, hw) of an NCHW map.
fn nchw(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

fn bn_params(shape: &[usize], eps: f32, momentum: f32, affine: bool, act: usize, res: bool) -> Params {
    let (n, c, hw) = nchw(shape);
    let m = n * hw;
    let unbias = if m > 1 { m as f32 / (m - 1) as f32 } else { 1.0 };
    Params::new().u(n).u(c).u(hw).u(m).f(eps).f(momentum).f(unbias).u(affine as usize).u(act).u(res as usize).u(0).u(0)
}

/// Workgroups of the per-channel kernels, and whether the one-thread-per-channel form runs:
/// channels of at most `serial_row_max` elements (4096 on software adapters, where barriers
/// are expensive; 256 on GPUs), else a 256-thread workgroup per channel.
fn bn_grid(l: &Lowering, shape: &[usize]) -> ([u32; 3], bool) {
    let (n, c, hw) = nchw(shape);
    if n * hw <= l.profile().serial_row_max { ([c.div_ceil(64) as u32, 1, 1], true) } else { ([c as u32, 1, 1], false) }
}

/// Per-channel mean and biased variance of an NCHW tensor.
fn channel_stats(x: &CpuTensor) -> (Vec<f64>, Vec<f64>) {
    let (n, c, hw) = nchw(&x.shape);
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for (i, &v) in x.data.iter().enumerate() {
        mean[(i / hw) % c] += v / m;
    }
    for (i, &v) in x.data.iter().enumerate() {
        let ch = (i / hw) % c;
        var[ch] += (v - mean[ch]) * (v - mean[ch]) / m;
    }
    (mean, var)
}

/// f64 reference: normalise channel c with (mean[c], var[c]), then the affine map.
pub fn batch_norm_cpu(x: &CpuTensor, mean: &[f64], var: &[f64], w: Option<&CpuTensor>, b: Option<&CpuTensor>, eps: f64) -> CpuTensor {
    let (_, c, hw) = nchw(&x.shape);
    let mut y = x.clone();
    for (i, v) in y.data.iter_mut().enumerate() {
        let ch = (i / hw) % c;
        *v = (*v - mean[ch]) / (var[ch] + eps).sqrt();
        if let (Some(w), Some(b)) = (w, b) {
            *v = *v * w.data[ch] + b.data[ch];
        }
    }
    y
}

/// Training mode. Inputs: x, [weight, bias], running_mean, running_var, num_batches_tracked,
/// [residual]. Outputs: y, the batch mean and 1/std as one [2, C] tensor (kept for the
/// backward pass; one binding, so that the fused dispatches stay within 9 storage buffers).
#[derive(Debug)]
struct BnTrainOp {
    eps: f32,
    momentum: f32,
    affine: bool,
    epi: Epilogue,
    writes: Vec<usize>,
}

impl Op for BnTrainOp {
    fn name(&self) -> &'static str {
        "batch_norm_train"
    }
    fn writes(&self) -> &[usize] {
        &self.writes
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        // Two statistics passes and the normalisation: about 8 operations per element.
        8 * n.inputs[0].numel() as u64
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let mut out = vec![None; n.inputs.len()];
        let Some(dy) = gy[0] else { return Ok(out) };
        let x = &n.inputs[0];
        let c = x.shape[1];
        let mut ins = vec![dy, x.var, n.outputs[1].var];
        if self.affine {
            ins.push(n.inputs[1].var);
        }
        if self.epi.has_act() {
            // The activation's mask comes from the saved output.
            ins.push(n.outputs[0].var);
        }
        let mut outs = vec![(x.shape.clone(), DType::F32)];
        if self.affine {
            outs.extend([(vec![c], DType::F32), (vec![c], DType::F32)]);
        }
        // Behind an activation the residual's gradient is the masked dy, an extra output;
        // without one it is dy itself.
        let dres = self.epi.residual && self.epi.has_act();
        if dres {
            outs.push((x.shape.clone(), DType::F32));
        }
        let r = g.add_node(Arc::new(BnBackOp { affine: self.affine, epi: self.epi }), &ins, &outs)?;
        out[0] = Some(r[0]);
        if self.affine {
            out[1] = Some(r[1]);
            out[2] = Some(r[2]);
        }
        if self.epi.residual {
            out[n.inputs.len() - 1] = Some(if dres { r[r.len() - 1] } else { dy });
        }
        Ok(out)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let x = n.inputs[0].var;
        let (w, b, rest) = if self.affine {
            (Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var), &n.inputs[3..])
        } else {
            (l.unused(), l.unused(), &n.inputs[1..])
        };
        let res = if self.epi.residual { Bind::T(rest[3].var) } else { l.unused() };
        let binds = [
            Bind::T(x),
            w,
            b,
            Bind::T(n.outputs[0].var),
            Bind::T(n.outputs[1].var),
            Bind::T(rest[0].var),
            Bind::T(rest[1].var),
            Bind::T(rest[2].var),
            res,
        ];
        let p = bn_params(&n.inputs[0].shape, self.eps, self.momentum, self.affine, self.epi.code(), self.epi.residual);
        // Always one workgroup per channel: see the note in shaders/batchnorm.wgsl.
        l.dispatch_wg_reduce("batchnorm", "bn_train", p, &binds, [n.inputs[0].shape[1] as u32, 1, 1]);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (mean, var) = channel_stats(x[0]);
        let (w, b) = if self.affine { (Some(x[1]), Some(x[2])) } else { (None, None) };
        let mut y = batch_norm_cpu(x[0], &mean, &var, w, b, self.eps as f64);
        self.epi.apply(&mut y, self.epi.residual.then(|| x[x.len() - 1]));
        let c = mean.len();
        let mut stats = mean;
        stats.extend(var.iter().map(|v| 1.0 / (v + self.eps as f64).sqrt()));
        Ok(vec![y, CpuTensor::new(&[2, c], stats)])
    }
}

/// Gradient through batch statistics (and the epilogue's activation). Inputs: dy, x, stats
/// (mean, rstd), [weight], [y: the forward output, for the activation's mask]. Outputs: dx,
/// [dweight, dbias], [d(residual) = masked dy].
#[derive(Debug)]
struct BnBackOp {
    affine: bool,
    epi: Epilogue,
}

impl Op for BnBackOp {
    fn name(&self) -> &'static str {
        "batch_norm_backward"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        10 * n.inputs[0].numel() as u64
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let i = |k: usize| Bind::T(n.inputs[k].var);
        let dx = Bind::T(n.outputs[0].var);
        // Without affine parameters, an activation or a residual the kernel ignores those
        // bindings: placeholders, never other tensors of the dispatch (WebGPU forbids overlaps).
        let (w, dw, db) =
            if self.affine { (i(3), Bind::T(n.outputs[1].var), Bind::T(n.outputs[2].var)) } else { (l.unused(), l.unused(), l.unused()) };
        let y = if self.epi.has_act() { i(n.inputs.len() - 1) } else { l.unused() };
        let dres = self.epi.residual && self.epi.has_act();
        let dr = if dres { Bind::T(n.outputs[n.outputs.len() - 1].var) } else { l.unused() };
        let binds = [i(0), i(1), w, dx, i(2), dw, db, y, dr];
        let shape = &n.inputs[0].shape;
        let (p, grid) = (bn_params(shape, 0.0, 0.0, self.affine, self.epi.code(), dres), bn_grid(l, shape));
        if grid.1 {
            l.dispatch("batchnorm", "bn_backward_serial", p, &binds, grid.0);
        } else {
            l.dispatch_wg_reduce("batchnorm", "bn_backward", p, &binds, grid.0);
        }
        Ok(())
    }
}

/// Evaluation mode. Inputs: x, [weight, bias], running_mean, running_var, [residual].
#[derive(Debug)]
struct BnEvalOp {
    eps: f32,
    affine: bool,
    epi: Epilogue,
}

impl Op for BnEvalOp {
    fn name(&self) -> &'static str {
        "batch_norm_eval"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        2 * n.inputs[0].numel() as u64
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        // Frozen statistics: y = act(x * s + t + r) per channel, s = w / sqrt(rv + eps). Rare
        // (frozen BN while fine-tuning), so it is composed from existing ops after the mask.
        let mut out = vec![None; n.inputs.len()];
        let Some(mut dy) = gy[0] else { return Ok(out) };
        if self.epi.has_act() {
            let shape = n.inputs[0].shape.clone();
            dy = g.push(BnActGradOp { act: self.epi.code() }, &[dy, n.outputs[0].var], shape, DType::F32)?;
        }
        if self.epi.residual {
            out[n.inputs.len() - 1] = Some(dy);
        }
        let x = n.inputs[0].var;
        let c = n.inputs[0].shape[1];
        let k = if self.affine { 3 } else { 1 };
        let (rm, rv) = (n.inputs[k].var, n.inputs[k + 1].var);
        let rstd = g.unary(rv, Unary::PowShift(-0.5, self.eps))?;
        let rstd4 = g.reshape(rstd, &[1, c, 1, 1])?;
        let scale = if self.affine {
            let w4 = g.reshape(n.inputs[1].var, &[1, c, 1, 1])?;
            g.mul(w4, rstd4)?
        } else {
            rstd4
        };
        out[0] = Some(g.mul(dy, scale)?);
        if self.affine {
            let rm4 = g.reshape(rm, &[1, c, 1, 1])?;
            let xc = g.sub(x, rm4)?;
            let xh = g.mul(xc, rstd4)?;
            let dyx = g.mul(dy, xh)?;
            out[1] = Some(g.sum(dyx, &[0, 2, 3], false)?);
            out[2] = Some(g.sum(dy, &[0, 2, 3], false)?);
        }
        Ok(out)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let x = Bind::T(n.inputs[0].var);
        let (w, b, k) = if self.affine { (Bind::T(n.inputs[1].var), Bind::T(n.inputs[2].var), 3) } else { (l.unused(), l.unused(), 1) };
        let res = if self.epi.residual { Bind::T(n.inputs[k + 2].var) } else { l.unused() };
        let binds = [x, w, b, Bind::T(n.outputs[0].var), Bind::T(n.inputs[k].var), Bind::T(n.inputs[k + 1].var), res];
        let shape = &n.inputs[0].shape;
        let p = bn_params(shape, self.eps, 0.0, self.affine, self.epi.code(), self.epi.residual);
        l.dispatch("batchnorm", "bn_eval", p, &binds, grid(shape[0] * shape[1]));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let k = if self.affine { 3 } else { 1 };
        let (w, b) = if self.affine { (Some(x[1]), Some(x[2])) } else { (None, None) };
        let mut y = batch_norm_cpu(x[0], &x[k].data, &x[k + 1].data, w, b, self.eps as f64);
        self.epi.apply(&mut y, self.epi.residual.then(|| x[k + 2]));
        Ok(vec![y])
    }
}

/// g = dy where the activation passed its input on (from the saved output y), else 0.
/// Inputs: dy, y.
#[derive(Debug)]
struct BnActGradOp {
    act: usize,
}

impl Op for BnActGradOp {
    fn name(&self) -> &'static str {
        "batch_norm_act_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let len = n.outputs[0].numel();
        let p = bn_params(&[len, 1], 0.0, 0.0, false, self.act, false);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("batchnorm", "bn_act_grad", p, &binds, grid_for(len, 256));
        Ok(())
    }
}

impl Graph {
    /// BatchNorm2d of `x` [N, C, H, W] (or [N, C]). `train`: normalise with the batch
    /// statistics and update the running stats and counter in place (PyTorch's train mode);
    /// otherwise normalise with the running stats.
    pub fn batch_norm(&mut self, x: Var, v: &BnVars, eps: f32, momentum: f32, train: bool) -> Result<Var> {
        self.batch_norm_act(x, v, eps, momentum, train, None, Unary::Identity)
    }

    /// `act(batch_norm(x) + residual)` in one pass forward and one backward: `residual` (the
    /// shape of `x`) is added after the normalisation, then `act` (`Unary::Identity`,
    /// `Relu` or `Relu6`) applied. Same state updates as [`Self::batch_norm`].
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_act(
        &mut self,
        x: Var,
        v: &BnVars,
        eps: f32,
        momentum: f32,
        train: bool,
        residual: Option<Var>,
        act: Unary,
    ) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        if xs.len() < 2 {
            return Err(Error::shape("batch_norm", format!("input {xs:?} needs a channel axis: [N, C, ...]")));
        }
        if !matches!(act, Unary::Identity | Unary::Relu | Unary::Relu6) {
            return Err(Error::shape("batch_norm", format!("the fused activation must be identity, relu or relu6, not {act:?}")));
        }
        if let Some(r) = residual {
            if self.shape(r) != xs.as_slice() || self.dtype(r) != DType::F32 {
                return Err(Error::shape(
                    "batch_norm",
                    format!("residual '{}' has shape {:?}, expected F32 {xs:?}", self.info(r).name, self.shape(r)),
                ));
            }
        }
        let epi = Epilogue { act, residual: residual.is_some() };
        let c = xs[1];
        let affine = match (v.weight, v.bias) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            _ => return Err(Error::shape("batch_norm", "weight and bias come together")),
        };
        for t in [v.weight, v.bias, Some(v.running_mean), Some(v.running_var)].into_iter().flatten() {
            if self.shape(t) != [c] || self.dtype(t) != DType::F32 {
                return Err(Error::shape(
                    "batch_norm",
                    format!("'{}' has shape {:?}, expected F32 [{c}] for input {xs:?}", self.info(t).name, self.shape(t)),
                ));
            }
        }
        let mut inputs = vec![x];
        if affine {
            inputs.extend([v.weight.unwrap(), v.bias.unwrap()]);
        }
        inputs.extend([v.running_mean, v.running_var]);
        if !train {
            inputs.extend(residual);
            return self.push(BnEvalOp { eps, affine, epi }, &inputs, xs, DType::F32);
        }
        let (n, _, hw) = nchw(&xs);
        if n * hw < 2 {
            return Err(Error::shape("batch_norm", format!("training needs more than one value per channel, input is {xs:?}")));
        }
        if self.dtype(v.num_batches_tracked) != DType::U32 || self.numel(v.num_batches_tracked) != 1 {
            return Err(Error::shape("batch_norm", "num_batches_tracked must be a U32 [1] state tensor"));
        }
        inputs.push(v.num_batches_tracked);
        let k = inputs.len();
        inputs.extend(residual);
        let op = BnTrainOp { eps, momentum, affine, epi, writes: vec![k - 3, k - 2, k - 1] };
        let outs = self.add_node(Arc::new(op), &inputs, &[(xs, DType::F32), (vec![2, c], DType::F32)])?;
        Ok(outs[0])
    }
}
