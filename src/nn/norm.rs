//! Normalisation layers with PyTorch/timm parameter names: LayerNorm over the last axis and
//! timm's LayerNorm2d over channels (`weight`, `bias`), BatchNorm2d (`weight`, `bias`,
//! `running_mean`, `running_var`, `num_batches_tracked`), and ResMLP's Affine (`alpha`, `beta`).

use super::{Builder, Fwd};
use crate::error::Result;
use crate::graph::{DType, Graph, Var};
use crate::ops::{BnVars, Unary};
use crate::store::{Init, Param, StateRef};

/// LayerNorm over the last axis with affine weight and bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Param,
    pub bias: Param,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(b: &mut Builder, name: &str, dim: usize, eps: f32) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(LayerNorm { weight: s.param("weight", &[dim], Init::Ones)?, bias: s.param("bias", &[dim], Init::Zeros)?, eps })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let w = g.param(&self.weight);
        let b = g.param(&self.bias);
        g.layer_norm(x, Some(w), Some(b), self.eps)
    }
}

/// LayerNorm over the channels of NCHW maps (timm's LayerNorm2d). Weight 1, bias 0.
#[derive(Clone, Debug)]
pub struct LayerNorm2d {
    pub weight: Param,
    pub bias: Param,
    pub eps: f32,
}

impl LayerNorm2d {
    pub fn new(b: &mut Builder, name: &str, c: usize, eps: f32) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(LayerNorm2d { weight: s.param("weight", &[c], Init::Ones)?, bias: s.param("bias", &[c], Init::Zeros)?, eps })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let w = g.param(&self.weight);
        let b = g.param(&self.bias);
        g.layer_norm2d(x, Some(w), Some(b), self.eps)
    }
}

/// BatchNorm2d with PyTorch's defaults: eps 1e-5, momentum 0.1, affine, tracking running stats
/// (mean 0, variance 1, counter 0 at the start). Weight 1, bias 0.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub weight: Param,
    pub bias: Param,
    pub running_mean: StateRef,
    pub running_var: StateRef,
    pub num_batches_tracked: StateRef,
    pub eps: f32,
    pub momentum: f32,
}

impl BatchNorm2d {
    pub fn new(b: &mut Builder, name: &str, c: usize) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(BatchNorm2d {
            weight: s.param("weight", &[c], Init::Ones)?,
            bias: s.param("bias", &[c], Init::Zeros)?,
            running_mean: s.state("running_mean", &[c], DType::F32, Init::Zeros)?,
            running_var: s.state("running_var", &[c], DType::F32, Init::Ones)?,
            num_batches_tracked: s.state("num_batches_tracked", &[1], DType::U32, Init::Zeros)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Batch statistics (and running-stat updates) in training, running stats in evaluation.
    pub fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        self.forward_act(g, x, f, None, Unary::Identity)
    }

    /// `act(bn(x) + residual)` as one fused op (one dispatch forward, one backward): `act` is
    /// `Unary::Identity`, `Relu` or `Relu6`, `residual` a tensor of the shape of `x`.
    pub fn forward_act(&self, g: &mut Graph, x: Var, f: &Fwd, residual: Option<Var>, act: Unary) -> Result<Var> {
        let v = BnVars {
            weight: Some(g.param(&self.weight)),
            bias: Some(g.param(&self.bias)),
            running_mean: g.state(&self.running_mean),
            running_var: g.state(&self.running_var),
            num_batches_tracked: g.state(&self.num_batches_tracked),
        };
        g.batch_norm_act(x, &v, self.eps, self.momentum, f.training(), residual, act)
    }
}

/// ResMLP's `Affine` norm: `alpha * x + beta`, both [1, 1, D] as timm stores them.
#[derive(Clone, Debug)]
pub struct Affine {
    pub alpha: Param,
    pub beta: Param,
}

impl Affine {
    pub fn new(b: &mut Builder, name: &str, dim: usize) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(Affine { alpha: s.param("alpha", &[1, 1, dim], Init::Ones)?, beta: s.param("beta", &[1, 1, dim], Init::Zeros)? })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let a = g.param(&self.alpha);
        let b = g.param(&self.beta);
        let y = g.mul(x, a)?;
        g.add(y, b)
    }
}
