//! Fully connected layers: `Linear` (PyTorch names `weight`, `bias`) and how each model family
//! initialises them when trained from scratch.

use super::{Builder, torch_default_init};
use crate::error::Result;
use crate::graph::{Graph, Var};
use crate::store::{Init, Param};

/// `y = x W^T + b`, weight [out, in] as PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// PyTorch's default initialisation.
    pub fn new(b: &mut Builder, name: &str, fan_in: usize, fan_out: usize, bias: bool) -> Result<Self> {
        Self::with_init(b, name, fan_in, fan_out, bias, torch_default_init(fan_in), torch_default_init(fan_in))
    }

    /// timm's ViT/MLP initialisation: trunc_normal(std=0.02) weight, zero bias.
    pub fn new_trunc(b: &mut Builder, name: &str, fan_in: usize, fan_out: usize, bias: bool) -> Result<Self> {
        Self::with_init(b, name, fan_in, fan_out, bias, Init::TruncNormal { std: 0.02 }, Init::Zeros)
    }

    pub fn with_init(b: &mut Builder, name: &str, fan_in: usize, fan_out: usize, bias: bool, w: Init, bi: Init) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(Linear {
            weight: s.param("weight", &[fan_out, fan_in], w)?,
            bias: if bias { Some(s.param("bias", &[fan_out], bi)?) } else { None },
        })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let w = g.param(&self.weight);
        let b = self.bias.as_ref().map(|b| g.param(b));
        g.linear(x, w, b)
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

/// How a family initialises its Linear layers when trained from scratch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitStyle {
    /// timm ViT/Swin (`init_weights_vit_timm`): trunc_normal(std=.02) weights, zero biases.
    Vit,
    /// timm MLP-Mixer/ResMLP (`_init_weights`): xavier_uniform weights; biases N(0, 1e-6)
    /// inside MLPs, zero elsewhere.
    Mixer,
}

impl InitStyle {
    /// (weight, bias) initialisers for a Linear; `in_mlp` as timm's `'mlp' in name`.
    pub fn linear(self, fan_in: usize, fan_out: usize, in_mlp: bool) -> (Init, Init) {
        match self {
            InitStyle::Vit => (Init::TruncNormal { std: 0.02 }, Init::Zeros),
            InitStyle::Mixer => {
                let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
                let bias = if in_mlp { Init::Normal { std: 1e-6 } } else { Init::Zeros };
                (Init::Uniform { lo: -a, hi: a }, bias)
            }
        }
    }

    pub fn new_linear(self, b: &mut Builder, name: &str, fan_in: usize, fan_out: usize, bias: bool, in_mlp: bool) -> Result<Linear> {
        let (w, bi) = self.linear(fan_in, fan_out, in_mlp);
        Linear::with_init(b, name, fan_in, fan_out, bias, w, bi)
    }
}
