//! Linear and LayerNorm layers (shared by every model family).

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
