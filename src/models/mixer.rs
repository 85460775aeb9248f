//! MLP-Mixer and ResMLP: timm's `MlpMixer` with `MixerBlock` (LayerNorm eps 1e-6, token and
//! channel MLPs) or `ResBlock` (Affine norms, a token Linear, layer scale). No class token;
//! the head reads the mean of the normalised tokens.

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, family_entries, feature_blocks};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::{Affine, Builder, Fwd, InitStyle, LayerNorm, Linear, Mlp, PatchEmbed, drop_path_rates, residual};
use crate::store::{Init, Param};

const EPS: f32 = 1e-6;

/// Which block the mixer stacks.
#[derive(Clone, Copy, Debug)]
pub enum MixerKind {
    /// MLP-Mixer: token MLP hidden = `tokens_ratio * dim`, channel MLP hidden = `channels_ratio * dim`.
    Mixer { tokens_ratio: f32, channels_ratio: f32 },
    /// ResMLP: token Linear (N x N), channel MLP `mlp_ratio * dim`, layer scale initialised to `init_values`.
    ResMlp { mlp_ratio: f32, init_values: f32 },
}

#[derive(Clone, Copy, Debug)]
pub struct MixerArch {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub kind: MixerKind,
}

/// A norm layer of either kind.
#[derive(Clone, Debug)]
enum Norm {
    Ln(LayerNorm),
    Affine(Affine),
}

impl Norm {
    fn new(b: &mut Builder, name: &str, dim: usize, kind: MixerKind) -> Result<Self> {
        Ok(match kind {
            MixerKind::Mixer { .. } => Norm::Ln(LayerNorm::new(b, name, dim, EPS)?),
            MixerKind::ResMlp { .. } => Norm::Affine(Affine::new(b, name, dim)?),
        })
    }
    fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        match self {
            Norm::Ln(n) => n.forward(g, x),
            Norm::Affine(a) => a.forward(g, x),
        }
    }
}

/// Token mixing: the MLP (Mixer) or Linear (ResMLP) over the token axis.
#[derive(Clone, Debug)]
enum TokenMix {
    Mlp(Mlp),
    Linear(Linear),
}

#[derive(Clone, Debug)]
struct Block {
    norm1: Norm,
    tokens: TokenMix,
    norm2: Norm,
    channels: Mlp,
    /// ResMLP layer scales ls1, ls2.
    ls: Option<(Param, Param)>,
    drop_path: f32,
}

impl Block {
    fn new(b: &mut Builder, dim: usize, seq: usize, kind: MixerKind, drop_path: f32) -> Result<Self> {
        let st = InitStyle::Mixer;
        // Registration in timm's state-dict order.
        match kind {
            MixerKind::Mixer { tokens_ratio, channels_ratio } => Ok(Block {
                norm1: Norm::new(b, "norm1", dim, kind)?,
                tokens: TokenMix::Mlp(Mlp::new(b, "mlp_tokens", seq, (tokens_ratio * dim as f32) as usize, st)?),
                norm2: Norm::new(b, "norm2", dim, kind)?,
                channels: Mlp::new(b, "mlp_channels", dim, (channels_ratio * dim as f32) as usize, st)?,
                ls: None,
                drop_path,
            }),
            MixerKind::ResMlp { mlp_ratio, init_values } => {
                let ls1 = b.param("ls1", &[dim], Init::Const(init_values))?;
                let ls2 = b.param("ls2", &[dim], Init::Const(init_values))?;
                Ok(Block {
                    norm1: Norm::new(b, "norm1", dim, kind)?,
                    tokens: TokenMix::Linear(st.new_linear(b, "linear_tokens", seq, seq, true, false)?),
                    norm2: Norm::new(b, "norm2", dim, kind)?,
                    channels: Mlp::new(b, "mlp_channels", dim, (mlp_ratio * dim as f32) as usize, st)?,
                    ls: Some((ls1, ls2)),
                    drop_path,
                })
            }
        }
    }

    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        // Token mixing acts on [B, D, N]: transpose, mix over the last axis, transpose back.
        let h = self.norm1.forward(g, x)?;
        let ht = g.transpose(h, 1, 2)?;
        let ht = match &self.tokens {
            TokenMix::Mlp(m) => m.forward(g, ht)?,
            TokenMix::Linear(l) => l.forward(g, ht)?,
        };
        let mut h = g.transpose(ht, 1, 2)?;
        if let Some((ls1, _)) = &self.ls {
            let s = g.param(ls1);
            h = g.mul(h, s)?;
        }
        let x = residual(g, x, h, self.drop_path, f)?;
        let h = self.norm2.forward(g, x)?;
        let mut h = self.channels.forward(g, h)?;
        if let Some((_, ls2)) = &self.ls {
            let s = g.param(ls2);
            h = g.mul(h, s)?;
        }
        residual(g, x, h, self.drop_path, f)
    }
}

/// An MLP-Mixer or ResMLP backbone.
pub struct Mixer {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    arch: MixerArch,
    stem: PatchEmbed,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
    taps: Vec<usize>,
}

impl Mixer {
    pub fn new(b: &mut Builder, name: &str, arch: MixerArch, cfg: &ModelConfig) -> Result<Self> {
        let MixerArch { patch, dim, depth, kind } = arch;
        if cfg.img_size % patch != 0 {
            return Err(Error::usage(format!("{name}: image size {} is not a multiple of the patch size {patch}", cfg.img_size)));
        }
        let seq = (cfg.img_size / patch).pow(2);
        let stem = PatchEmbed::new(&mut b.sub("stem"), "proj", cfg.in_chans, dim, patch, true)?;
        let mut blocks = Vec::with_capacity(depth);
        for (i, &dp) in drop_path_rates(cfg.drop_path, depth).iter().enumerate() {
            blocks.push(Block::new(&mut b.sub(&format!("blocks.{i}")), dim, seq, kind, dp)?);
        }
        let norm = Norm::new(b, "norm", dim, kind)?;
        // timm zero-initialises the Mixer head.
        let head = Linear::with_init(b, "head", dim, cfg.num_classes, true, Init::Zeros, Init::Zeros)?;
        Ok(Mixer {
            name: name.to_string(),
            prefix: b.prefix().to_string(),
            cfg: cfg.clone(),
            arch,
            stem,
            blocks,
            norm,
            head,
            taps: feature_blocks(depth),
        })
    }

    fn seq(&self) -> usize {
        (self.cfg.img_size / self.arch.patch).pow(2)
    }
}

impl Backbone for Mixer {
    fn name(&self) -> &str {
        &self.name
    }
    fn family(&self) -> Family {
        Family::Mlp
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn forward(&self, g: &mut Graph, x: Var, f: Fwd) -> Result<Output> {
        let mut t = self.stem.forward(g, x)?;
        if g.shape(t)[1] != self.seq() {
            return Err(Error::shape(
                "mixer",
                format!("{}: input {:?} does not match the model's {}px token count", self.name, g.shape(x), self.cfg.img_size),
            ));
        }
        let mut features = Vec::with_capacity(4);
        for (i, blk) in self.blocks.iter().enumerate() {
            t = g.scoped(&format!("blocks.{i}"), |g| blk.forward(g, t, &f))?;
            if self.taps.contains(&i) {
                features.push(t);
            }
        }
        let t = self.norm.forward(g, t)?;
        let pooled = g.mean(t, &[1], false)?;
        let logits = self.head.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        vec![FeatureShape::Tokens { n: self.seq(), d: self.arch.dim, prefix: 0 }; self.taps.len()]
    }
    fn pooled_dim(&self) -> usize {
        self.arch.dim
    }
    fn head_weight(&self) -> &str {
        "head.weight"
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

const fn a(patch: usize, dim: usize, depth: usize, kind: MixerKind) -> MixerArch {
    MixerArch { patch, dim, depth, kind }
}

const MIX: MixerKind = MixerKind::Mixer { tokens_ratio: 0.5, channels_ratio: 4.0 };
const RES: MixerKind = MixerKind::ResMlp { mlp_ratio: 4.0, init_values: 1e-4 };

family_entries! {
    head_weight: "head.weight";
    "mixer_micro_p4", "MLP-Mixer, patch 4, dim 128, depth 6 (32-px)", 32, 100 => |b, cfg, name| Mixer::new(b, name, a(4, 128, 6, MIX), cfg);
    "mixer_nano_p4", "MLP-Mixer, patch 4, dim 32, depth 4 (32-px; demos, embedding, tests)", 32, 10
        => |b, cfg, name| Mixer::new(b, name, a(4, 32, 4, MIX), cfg);
    "mixer_b16_224", "MLP-Mixer-B/16 (timm mixer_b16_224)", 224, 1000 => |b, cfg, name| Mixer::new(b, name, a(16, 768, 12, MIX), cfg);
    "resmlp_12_p4", "ResMLP-12 at 32 px: patch 4, dim 384", 32, 100 => |b, cfg, name| Mixer::new(b, name, a(4, 384, 12, RES), cfg);
    "resmlp_12_224", "ResMLP-12 (timm resmlp_12_224)", 224, 1000 => |b, cfg, name| Mixer::new(b, name, a(16, 384, 12, RES), cfg);
}
