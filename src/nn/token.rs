//! Layers of the token families (ViT, Swin, MLP-Mixer, ResMLP), named as timm names them:
//! patch embedding, the MLP, multi-head self-attention, ResMLP's Affine, and residual
//! branches with drop path.

use super::{Builder, Fwd, Linear, torch_default_init};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::ops::AttnImpl;
use crate::store::{Init, Param};

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

/// Non-overlapping patch embedding: timm's `PatchEmbed` conv (`proj.weight` [D, C, p, p]).
/// With stride equal to the kernel it is a reshape of the image into patches and one matmul
/// with the flattened weight: no convolution kernel needed.
#[derive(Clone, Debug)]
pub struct PatchEmbed {
    pub weight: Param,
    pub bias: Param,
    pub patch: usize,
}

impl PatchEmbed {
    /// `mixer_init`: timm's Mixer stem init (lecun normal, zero bias) instead of PyTorch's
    /// conv default (which timm's ViT and Swin keep).
    pub fn new(b: &mut Builder, name: &str, in_chans: usize, dim: usize, patch: usize, mixer_init: bool) -> Result<Self> {
        let fan_in = in_chans * patch * patch;
        let (w, bi) = if mixer_init {
            // lecun_normal_: variance 1/fan_in (timm truncates at 2 std; a plain normal here).
            (Init::Normal { std: (1.0 / fan_in as f32).sqrt() }, Init::Zeros)
        } else {
            (torch_default_init(fan_in), torch_default_init(fan_in))
        };
        let mut s = b.sub(name);
        Ok(PatchEmbed { weight: s.param("weight", &[dim, in_chans, patch, patch], w)?, bias: s.param("bias", &[dim], bi)?, patch })
    }

    pub fn dim(&self) -> usize {
        self.weight.shape()[0]
    }

    /// [B, C, H, W] -> [B, (H/p)*(W/p), D], patches in row-major order (timm's flatten(2)).
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let s = g.shape(x).to_vec();
        let (p, d) = (self.patch, self.dim());
        let c = self.weight.shape()[1];
        if s.len() != 4 || s[1] != c || s[2] % p != 0 || s[3] % p != 0 {
            return Err(Error::shape(
                "patch_embed",
                format!("input {s:?} is not [B, {c}, H, W] with H and W multiples of the patch size {p}"),
            ));
        }
        let (b, hp, wp) = (s[0], s[2] / p, s[3] / p);
        let x6 = g.reshape(x, &[b, c, hp, p, wp, p])?;
        let x6 = g.permute(x6, &[0, 2, 4, 1, 3, 5])?;
        let rows = g.reshape(x6, &[b * hp * wp, c * p * p])?;
        let w = g.param(&self.weight);
        let w2 = g.reshape(w, &[d, c * p * p])?;
        let bias = g.param(&self.bias);
        let y = g.matmul_ex(rows, w2, false, true, Some(bias))?;
        g.reshape(y, &[b, hp * wp, d])
    }
}

/// timm's `Mlp`: fc1 -> GELU -> fc2 (dropout 0).
#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(b: &mut Builder, name: &str, dim: usize, hidden: usize, style: InitStyle) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(Mlp {
            fc1: style.new_linear(&mut s, "fc1", dim, hidden, true, true)?,
            fc2: style.new_linear(&mut s, "fc2", hidden, dim, true, true)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let h = self.fc1.forward(g, x)?;
        let h = g.gelu(h)?;
        self.fc2.forward(g, h)
    }
}

/// timm's `Attention` (and Swin's `WindowAttention` without its bias table): qkv Linear,
/// fused multi-head self-attention, output projection.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
    /// Fused kernels by default; the materialised path for comparisons.
    pub imp: AttnImpl,
}

impl SelfAttention {
    pub fn new(b: &mut Builder, name: &str, dim: usize, heads: usize, qkv_bias: bool) -> Result<Self> {
        if dim % heads != 0 {
            return Err(Error::shape("attention", format!("dim {dim} is not divisible by {heads} heads")));
        }
        let mut s = b.sub(name);
        Ok(SelfAttention {
            qkv: Linear::new_trunc(&mut s, "qkv", dim, 3 * dim, qkv_bias)?,
            proj: Linear::new_trunc(&mut s, "proj", dim, dim, true)?,
            heads,
            imp: AttnImpl::Fused,
        })
    }

    /// x [B, N, D] -> [B, N, D]; `bias` [G, H, N, N] as in [`Graph::attention`].
    pub fn forward(&self, g: &mut Graph, x: Var, bias: Option<Var>) -> Result<Var> {
        let qkv = self.qkv.forward(g, x)?;
        let o = g.attention_with(qkv, self.heads, bias, self.imp)?;
        self.proj.forward(g, o)
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

/// `x + drop_path(y)`: in training, whole samples of the branch are dropped with
/// probability `rate` (and the rest scaled by 1/(1-rate)).
pub fn residual(g: &mut Graph, x: Var, y: Var, rate: f32, f: &Fwd) -> Result<Var> {
    let y = if f.training() && rate > 0.0 {
        let step = f.step.ok_or_else(|| Error::usage("drop path in training needs the step counter (Fwd::train)"))?;
        g.drop_path(y, rate, step, f.seed)?
    } else {
        y
    };
    g.add(x, y)
}

/// timm's stochastic-depth schedule: rates rise linearly from 0 to `rate` over all blocks.
pub fn drop_path_rates(rate: f32, blocks: usize) -> Vec<f32> {
    if blocks <= 1 {
        return vec![0.0; blocks];
    }
    (0..blocks).map(|i| rate * i as f32 / (blocks - 1) as f32).collect()
}

/// Blocks whose outputs are the four stage features of a plain (isotropic) token model:
/// OFA-KD's taps for depth 12 (blocks 1, 3, 9, 11: the stage ends of a 2-2-6-2 Swin), else
/// four evenly spaced blocks ending with the last.
pub fn feature_blocks(depth: usize) -> Vec<usize> {
    if depth == 12 {
        return vec![1, 3, 9, 11];
    }
    (1..=4).map(|k| (depth * k).div_ceil(4).max(1) - 1).collect()
}
