//! Swin Transformer: timm's `SwinTransformer` (1.0 layout: tokens kept [B, H*W, C] in
//! row-major NHWC order, `PatchMerging` at the start of stages 1..3, `head.fc`).
//!
//! Shifted-window attention is three cheap pieces around the fused attention kernel:
//! - one gather does the cyclic shift (`torch.roll` by -shift) and the window partition
//!   together (a fixed permutation of tokens), another undoes both;
//! - the relative position bias is a gather of the table rows by the fixed index (repeated
//!   indices; its gradient sums them through a CSR inverse index);
//! - the shift mask (0 / -100, as timm) is a constant [nW, 1, N, N] added to that bias, and the
//!   sum goes into the attention kernel as a bias broadcast over images (window w of every
//!   image reads bias[w]).

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, family_entries};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::{Builder, Fwd, InitStyle, LayerNorm, Linear, Mlp, PatchEmbed, PatchMerging, SelfAttention, drop_path_rates, residual};
use crate::store::{Init, Param};

const EPS: f32 = 1e-5;
/// timm's value for masked-out pairs of a shifted window.
const MASK: f32 = -100.0;

/// Architecture of one Swin variant.
#[derive(Clone, Copy, Debug)]
pub struct SwinArch {
    pub patch: usize,
    pub window: usize,
    pub embed_dim: usize,
    pub depths: [usize; 4],
    pub heads: [usize; 4],
    pub mlp_ratio: f32,
}

/// Where each token goes for one block: a `res` x `res` map cut into `ws` x `ws` windows after
/// a cyclic shift by `shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowGeometry {
    pub res: usize,
    pub ws: usize,
    pub shift: usize,
}

impl WindowGeometry {
    /// timm's rule: a window as large as the map (or larger) shrinks to it and stops shifting.
    pub fn for_stage(res: usize, window: usize, shifted: bool) -> Result<Self> {
        let ws = window.min(res);
        let shift = if shifted && res > window { window / 2 } else { 0 };
        if res % ws != 0 {
            return Err(Error::usage(format!(
                "swin: a {res}x{res} token map does not split into {ws}x{ws} windows (padding is not supported)"
            )));
        }
        Ok(WindowGeometry { res, ws, shift })
    }

    pub fn windows(&self) -> usize {
        (self.res / self.ws).pow(2)
    }

    pub fn window_area(&self) -> usize {
        self.ws * self.ws
    }

    /// True when partitioning is the identity (one window, no shift).
    pub fn trivial(&self) -> bool {
        self.ws == self.res && self.shift == 0
    }

    /// Source token of each (window, position) slot: `roll(-shift)` then window partition.
    pub fn partition_index(&self) -> Vec<usize> {
        let (r, ws, s) = (self.res, self.ws, self.shift);
        let nw = r / ws;
        let mut idx = Vec::with_capacity(r * r);
        for wy in 0..nw {
            for wx in 0..nw {
                for py in 0..ws {
                    for px in 0..ws {
                        let (y, x) = (wy * ws + py, wx * ws + px);
                        idx.push(((y + s) % r) * r + (x + s) % r);
                    }
                }
            }
        }
        idx
    }

    /// The inverse permutation (window reverse, then `roll(+shift)`).
    pub fn reverse_index(&self) -> Vec<usize> {
        let p = self.partition_index();
        let mut inv = vec![0; p.len()];
        for (k, &t) in p.iter().enumerate() {
            inv[t] = k;
        }
        inv
    }

    /// timm's `relative_position_index` [N*N] into the [(2ws-1)^2, heads] table.
    pub fn relative_position_index(&self) -> Vec<usize> {
        let ws = self.ws;
        let n = ws * ws;
        let mut idx = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let dy = (i / ws) + ws - 1 - (j / ws);
                let dx = (i % ws) + ws - 1 - (j % ws);
                idx.push(dy * (2 * ws - 1) + dx);
            }
        }
        idx
    }

    /// timm's shifted-window `attn_mask` [nW, N, N] (0 within a region, -100 across), or
    /// None without a shift.
    pub fn mask(&self) -> Option<Vec<f32>> {
        if self.shift == 0 {
            return None;
        }
        let (r, ws, s) = (self.res, self.ws, self.shift);
        let region = |p: usize| {
            if p < r - ws {
                0
            } else if p < r - s {
                1
            } else {
                2
            }
        };
        let nw = r / ws;
        let n = ws * ws;
        let mut m = Vec::with_capacity(nw * nw * n * n);
        for wy in 0..nw {
            for wx in 0..nw {
                let id = |k: usize| region(wy * ws + k / ws) * 3 + region(wx * ws + k % ws);
                for i in 0..n {
                    for j in 0..n {
                        m.push(if id(i) == id(j) { 0.0 } else { MASK });
                    }
                }
            }
        }
        Some(m)
    }

    /// [B, res*res, C] -> [B * nW, N, C] (shifted, partitioned).
    pub fn partition(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let s = g.shape(x).to_vec();
        let x = if self.trivial() { x } else { g.gather_axis(x, 1, &self.partition_index())? };
        g.reshape(x, &[s[0] * self.windows(), self.window_area(), s[2]])
    }

    /// [B * nW, N, C] -> [B, res*res, C] (merged, shifted back).
    pub fn reverse(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let s = g.shape(x).to_vec();
        let x = g.reshape(x, &[s[0] / self.windows(), self.res * self.res, s[2]])?;
        if self.trivial() { Ok(x) } else { g.gather_axis(x, 1, &self.reverse_index()) }
    }

    /// Attention bias [G, heads, N, N]: the table lookup, plus the mask when shifted (G = nW).
    pub fn bias(&self, g: &mut Graph, table: Var) -> Result<Var> {
        let heads = g.shape(table)[1];
        let n = self.window_area();
        let rel = g.gather_axis(table, 0, &self.relative_position_index())?;
        let rel = g.transpose(rel, 0, 1)?;
        let rel = g.reshape(rel, &[1, heads, n, n])?;
        match self.mask() {
            None => Ok(rel),
            Some(m) => {
                let mv = g.constant(&[self.windows(), 1, n, n], &m)?;
                g.add(rel, mv)
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    table: Param,
    attn: SelfAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    geo: WindowGeometry,
    drop_path: f32,
}

impl Block {
    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let h = self.norm1.forward(g, x)?;
        let hw = self.geo.partition(g, h)?;
        let table = g.param(&self.table);
        let bias = self.geo.bias(g, table)?;
        let a = self.attn.forward(g, hw, Some(bias))?;
        let a = self.geo.reverse(g, a)?;
        let x = residual(g, x, a, self.drop_path, f)?;
        let h = self.norm2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        residual(g, x, h, self.drop_path, f)
    }
}

struct Stage {
    merge: Option<PatchMerging>,
    blocks: Vec<Block>,
    res: usize,
    dim: usize,
}

/// A Swin backbone.
pub struct Swin {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    patch_embed: PatchEmbed,
    patch_norm: LayerNorm,
    stages: Vec<Stage>,
    norm: LayerNorm,
    head: Linear,
}

impl Swin {
    pub fn new(b: &mut Builder, name: &str, arch: SwinArch, cfg: &ModelConfig) -> Result<Self> {
        let SwinArch { patch, window, embed_dim, depths, heads, mlp_ratio } = arch;
        if cfg.img_size % patch != 0 || (cfg.img_size / patch) % 8 != 0 {
            return Err(Error::usage(format!(
                "{name}: image size {} must be a multiple of 8 x the patch size {patch} (three 2x2 merges; padding is not supported)",
                cfg.img_size
            )));
        }
        let mut pe = b.sub("patch_embed");
        let patch_embed = PatchEmbed::new(&mut pe, "proj", cfg.in_chans, embed_dim, patch, false)?;
        let patch_norm = LayerNorm::new(&mut pe, "norm", embed_dim, EPS)?;
        let rates = drop_path_rates(cfg.drop_path, depths.iter().sum());
        let mut k = 0;
        let mut stages = Vec::with_capacity(4);
        let mut res = cfg.img_size / patch;
        let mut dim = embed_dim;
        for (i, (&depth, &nh)) in depths.iter().zip(&heads).enumerate() {
            let mut sb = b.sub(&format!("layers.{i}"));
            let merge = if i > 0 {
                let merge = PatchMerging::new(&mut sb, "downsample", dim, EPS)?;
                res /= 2;
                dim *= 2;
                Some(merge)
            } else {
                None
            };
            let mut blocks = Vec::with_capacity(depth);
            for j in 0..depth {
                let geo = WindowGeometry::for_stage(res, window, j % 2 == 1)?;
                let mut s = sb.sub(&format!("blocks.{j}"));
                let norm1 = LayerNorm::new(&mut s, "norm1", dim, EPS)?;
                let t = (2 * geo.ws - 1).pow(2);
                let table = s.sub("attn").param_with("relative_position_bias_table", &[t, nh], Init::TruncNormal { std: 0.02 }, false)?;
                blocks.push(Block {
                    norm1,
                    table,
                    attn: SelfAttention::new(&mut s, "attn", dim, nh, true)?,
                    norm2: LayerNorm::new(&mut s, "norm2", dim, EPS)?,
                    mlp: Mlp::new(&mut s, "mlp", dim, (dim as f32 * mlp_ratio) as usize, InitStyle::Vit)?,
                    geo,
                    drop_path: rates[k],
                });
                k += 1;
            }
            stages.push(Stage { merge, blocks, res, dim });
        }
        let norm = LayerNorm::new(b, "norm", dim, EPS)?;
        let head = Linear::new_trunc(&mut b.sub("head"), "fc", dim, cfg.num_classes, true)?;
        Ok(Swin { name: name.to_string(), prefix: b.prefix().to_string(), cfg: cfg.clone(), patch_embed, patch_norm, stages, norm, head })
    }
}

impl Backbone for Swin {
    fn name(&self) -> &str {
        &self.name
    }
    fn family(&self) -> Family {
        Family::Swin
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn forward(&self, g: &mut Graph, x: Var, f: Fwd) -> Result<Output> {
        let r0 = self.stages[0].res;
        let s = g.shape(x).to_vec();
        if s.len() != 4 || s[2] != self.cfg.img_size || s[3] != self.cfg.img_size {
            return Err(Error::shape(
                "swin",
                format!("{}: input {s:?} does not match the model's {}px size", self.name, self.cfg.img_size),
            ));
        }
        let t = self.patch_embed.forward(g, x)?;
        let mut t = self.patch_norm.forward(g, t)?;
        let mut features = Vec::with_capacity(4);
        let mut res = r0;
        for (i, st) in self.stages.iter().enumerate() {
            if let Some(m) = &st.merge {
                t = g.scoped(&format!("layers.{i}.downsample"), |g| m.forward(g, t, res))?;
            }
            res = st.res;
            for (j, blk) in st.blocks.iter().enumerate() {
                t = g.scoped(&format!("layers.{i}.blocks.{j}"), |g| blk.forward(g, t, &f))?;
            }
            features.push(t);
        }
        let t = self.norm.forward(g, t)?;
        let pooled = g.mean(t, &[1], false)?;
        let logits = self.head.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        self.stages.iter().map(|s| FeatureShape::Tokens { n: s.res * s.res, d: s.dim, prefix: 0 }).collect()
    }
    fn pooled_dim(&self) -> usize {
        self.stages.last().map_or(0, |s| s.dim)
    }
    fn head_weight(&self) -> &str {
        "head.fc.weight"
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

const TINY: ([usize; 4], [usize; 4]) = ([2, 2, 6, 2], [3, 6, 12, 24]);
// OFA-KD's students (custom_model/swin_transformer.py): depths 2-2-2-2, heads 2-4-8-16.
const SMALLS: ([usize; 4], [usize; 4]) = ([2, 2, 2, 2], [2, 4, 8, 16]);

const fn a(patch: usize, window: usize, embed_dim: usize, layout: ([usize; 4], [usize; 4])) -> SwinArch {
    SwinArch { patch, window, embed_dim, depths: layout.0, heads: layout.1, mlp_ratio: 4.0 }
}

family_entries! {
    head_weight: "head.fc.weight";
    "swin_tiny_224", "Swin-T (timm swin_tiny_patch4_window7_224)", 224, 1000 => |b, cfg, name| Swin::new(b, name, a(4, 7, 96, TINY), cfg);
    "swin_nano_224", "Swin-N, OFA-KD's student (embed 64, depths 2-2-2-2)", 224, 1000
        => |b, cfg, name| Swin::new(b, name, a(4, 7, 64, SMALLS), cfg);
    "swin_pico_224", "Swin-P, OFA-KD's student (embed 48, depths 2-2-2-2)", 224, 1000
        => |b, cfg, name| Swin::new(b, name, a(4, 7, 48, SMALLS), cfg);
    "swin_tiny_p2w4", "Swin-T layout at 32 px: patch 2, window 4", 32, 100 => |b, cfg, name| Swin::new(b, name, a(2, 4, 96, TINY), cfg);
    "swin_nano_p2w4", "Swin-N at 32 px: patch 2, window 4", 32, 100 => |b, cfg, name| Swin::new(b, name, a(2, 4, 64, SMALLS), cfg);
    "swin_pico_p2w4", "Swin-P at 32 px: patch 2, window 4", 32, 100 => |b, cfg, name| Swin::new(b, name, a(2, 4, 48, SMALLS), cfg);
}
