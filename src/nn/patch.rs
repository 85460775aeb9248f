//! Layers that turn images into tokens and shrink token grids, with timm's names: ViT's
//! `PatchEmbed` (`proj.*`) and Swin's `PatchMerging` (`norm.*`, `reduction.*`).

use super::{Builder, LayerNorm, Linear, torch_default_init};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::store::{Init, Param};

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

/// Swin's `PatchMerging`: 2x2 neighbours concatenated (timm's order), LayerNorm(4C),
/// Linear(4C -> 2C) without bias.
#[derive(Clone, Debug)]
pub struct PatchMerging {
    pub norm: LayerNorm,
    pub reduction: Linear,
}

impl PatchMerging {
    /// Merging of `dim`-wide tokens into `2 * dim`; LayerNorm eps `eps`.
    pub fn new(b: &mut Builder, name: &str, dim: usize, eps: f32) -> Result<Self> {
        let mut m = b.sub(name);
        Ok(PatchMerging {
            norm: LayerNorm::new(&mut m, "norm", 4 * dim, eps)?,
            reduction: Linear::new_trunc(&mut m, "reduction", 4 * dim, 2 * dim, false)?,
        })
    }

    /// [B, R*R, C] tokens of an R x R grid (`res` = R, even) -> [B, (R/2)^2, 2C].
    pub fn forward(&self, g: &mut Graph, x: Var, res: usize) -> Result<Var> {
        let s = g.shape(x).to_vec();
        let (b, c) = (s[0], s[2]);
        let x6 = g.reshape(x, &[b, res / 2, 2, res / 2, 2, c])?;
        // (b, i, j, dx, dy, c): x0=(0,0), x1=(1,0), x2=(0,1), x3=(1,1) as (dy, dx).
        let x6 = g.permute(x6, &[0, 1, 3, 4, 2, 5])?;
        let x = g.reshape(x6, &[b, (res / 2) * (res / 2), 4 * c])?;
        let x = self.norm.forward(g, x)?;
        self.reduction.forward(g, x)
    }
}
