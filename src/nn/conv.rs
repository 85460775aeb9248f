//! Convolutional layers with PyTorch parameter names: Conv2d (`weight`, `bias`), BatchNorm2d
//! (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`) and timm's
//! LayerNorm2d (`weight`, `bias`).

use super::{Builder, Fwd, torch_default_init};
use crate::error::Result;
use crate::graph::{DType, Graph, Var};
use crate::ops::{BnVars, Conv2dSpec};
use crate::store::{Init, Param, StateRef};

/// How a convolution's weight starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConvInit {
    /// PyTorch's default (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)), bias alike.
    Torch,
    /// `kaiming_normal_(mode='fan_out', nonlinearity='relu')`: N(0, 2 / (Cout*KH*KW)), as
    /// torchvision and the CIFAR ResNets of CRD do. timm's EfficientNet family divides fan_out
    /// by the groups (`fan_out_groups`). Bias zero.
    KaimingFanOut { per_group: bool },
    /// timm ConvNeXt: trunc_normal(std), bias zero.
    TruncNormal(f32),
}

/// A 2-D convolution, weight [Cout, Cin/groups, KH, KW].
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Param,
    pub bias: Option<Param>,
    pub spec: Conv2dSpec,
}

impl Conv2d {
    /// A square `k` x `k` convolution.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        spec: Conv2dSpec,
        bias: bool,
        init: ConvInit,
    ) -> Result<Self> {
        let groups = spec.groups.max(1);
        let fan_in = cin / groups * k * k;
        let (w, bi) = match init {
            ConvInit::Torch => (torch_default_init(fan_in), torch_default_init(fan_in)),
            ConvInit::KaimingFanOut { per_group } => {
                let fan_out = cout * k * k / if per_group { groups } else { 1 };
                (Init::Normal { std: (2.0 / fan_out.max(1) as f32).sqrt() }, Init::Zeros)
            }
            ConvInit::TruncNormal(std) => (Init::TruncNormal { std }, Init::Zeros),
        };
        let mut s = b.sub(name);
        Ok(Conv2d {
            weight: s.param("weight", &[cout, cin / groups, k, k], w)?,
            bias: if bias { Some(s.param("bias", &[cout], bi)?) } else { None },
            spec,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let w = g.param(&self.weight);
        let b = self.bias.as_ref().map(|b| g.param(b));
        g.conv2d(x, w, b, self.spec)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
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
        let v = BnVars {
            weight: Some(g.param(&self.weight)),
            bias: Some(g.param(&self.bias)),
            running_mean: g.state(&self.running_mean),
            running_var: g.state(&self.running_var),
            num_batches_tracked: g.state(&self.num_batches_tracked),
        };
        g.batch_norm(x, &v, self.eps, self.momentum, f.training())
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

/// Output size of a convolution or pooling window along one axis.
pub fn conv_out(size: usize, k: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(k) / stride + 1
}

/// Stochastic depth on a residual branch in training (identity in evaluation or at rate 0).
pub fn drop_path(g: &mut Graph, x: Var, p: f32, f: &Fwd) -> Result<Var> {
    match f.step {
        Some(step) if f.training() && p > 0.0 => g.drop_path(x, p, step, f.seed),
        _ => Ok(x),
    }
}
