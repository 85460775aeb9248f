//! Convolutional layers with PyTorch parameter names: Conv2d (`weight`, `bias`), and the
//! output-size rule of a convolution or pooling window.

use super::{Builder, torch_default_init};
use crate::error::Result;
use crate::graph::{Graph, Var};
use crate::ops::Conv2dSpec;
use crate::store::{Init, Param};

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

/// Output size of a convolution or pooling window along one axis.
pub fn conv_out(size: usize, k: usize, stride: usize, padding: usize) -> usize {
    (size + 2 * padding).saturating_sub(k) / stride + 1
}
