//! Vision transformers: timm's `VisionTransformer` with a class token, learned position
//! embedding, qkv bias, pre-norm blocks, LayerNorm eps 1e-6 and token pooling. Parameter
//! names are timm's (`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.attn.qkv.*`,
//! ..., `norm.*`, `head.*`).

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, family_entries, feature_blocks};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::{Block, Builder, Fwd, LayerNorm, Linear, PatchEmbed, drop_path_rates};
use crate::ops::AttnImpl;
use crate::store::{Init, Param};

/// Architecture of one ViT variant.
#[derive(Clone, Copy, Debug)]
pub struct VitArch {
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f32,
}

const EPS: f32 = 1e-6;

/// A ViT/DeiT backbone.
pub struct Vit {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    arch: VitArch,
    patch_embed: PatchEmbed,
    cls_token: Param,
    pos_embed: Param,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    taps: Vec<usize>,
}

impl Vit {
    pub fn new(b: &mut Builder, name: &str, arch: VitArch, cfg: &ModelConfig) -> Result<Self> {
        let VitArch { patch, dim, depth, heads, mlp_ratio } = arch;
        if cfg.img_size % patch != 0 {
            return Err(Error::usage(format!("{name}: image size {} is not a multiple of the patch size {patch}", cfg.img_size)));
        }
        let tokens = (cfg.img_size / patch).pow(2) + 1;
        // Registration order follows timm's state dict.
        let cls_token = b.param_with("cls_token", &[1, 1, dim], Init::Normal { std: 1e-6 }, false)?;
        let pos_embed = b.param_with("pos_embed", &[1, tokens, dim], Init::TruncNormal { std: 0.02 }, false)?;
        let patch_embed = PatchEmbed::new(&mut b.sub("patch_embed"), "proj", cfg.in_chans, dim, patch, false)?;
        let rates = drop_path_rates(cfg.drop_path, depth);
        let mut blocks = Vec::with_capacity(depth);
        for (i, &drop_path) in rates.iter().enumerate() {
            blocks.push(Block::new(b, &format!("blocks.{i}"), dim, heads, mlp_ratio, true, EPS, drop_path)?);
        }
        let norm = LayerNorm::new(b, "norm", dim, EPS)?;
        let head = Linear::new_trunc(b, "head", dim, cfg.num_classes, true)?;
        Ok(Vit {
            name: name.to_string(),
            prefix: b.prefix().to_string(),
            cfg: cfg.clone(),
            arch,
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            taps: feature_blocks(depth),
        })
    }

    /// Use another attention implementation in every block (benchmarks compare them).
    pub fn with_attention(mut self, imp: AttnImpl) -> Self {
        for b in &mut self.blocks {
            b.attn.imp = imp;
        }
        self
    }

    fn tokens(&self) -> usize {
        (self.cfg.img_size / self.arch.patch).pow(2) + 1
    }
}

impl Backbone for Vit {
    fn name(&self) -> &str {
        &self.name
    }
    fn family(&self) -> Family {
        Family::Vit
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn forward(&self, g: &mut Graph, x: Var, f: Fwd) -> Result<Output> {
        let b = g.shape(x)[0];
        let d = self.arch.dim;
        let patches = self.patch_embed.forward(g, x)?;
        if g.shape(patches)[1] + 1 != self.tokens() {
            return Err(Error::shape(
                "vit",
                format!("{}: input {:?} does not match the model's {}px position embedding", self.name, g.shape(x), self.cfg.img_size),
            ));
        }
        let cls = g.param(&self.cls_token);
        let cls = g.expand(cls, &[b, 1, d])?;
        let t = g.concat(&[cls, patches], 1)?;
        let pos = g.param(&self.pos_embed);
        let mut t = g.add(t, pos)?;
        let mut features = Vec::with_capacity(4);
        for (i, blk) in self.blocks.iter().enumerate() {
            t = g.scoped(&format!("blocks.{i}"), |g| blk.forward(g, t, &f))?;
            if self.taps.contains(&i) {
                features.push(t);
            }
        }
        let t = self.norm.forward(g, t)?;
        // The class token (a gather: its gradient is one dispatch, a slice's two).
        let cls_out = g.gather_axis(t, 1, &[0])?;
        let pooled = g.reshape(cls_out, &[b, d])?;
        let logits = self.head.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        vec![FeatureShape::Tokens { n: self.tokens(), d: self.arch.dim, prefix: 1 }; self.taps.len()]
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

const fn a(patch: usize, dim: usize, depth: usize, heads: usize) -> VitArch {
    VitArch { patch, dim, depth, heads, mlp_ratio: 4.0 }
}

/// The registry's architecture of a ViT name.
pub fn arch(name: &str) -> Option<VitArch> {
    match name {
        "vit_micro_p4" => Some(a(4, 128, 6, 4)),
        "vit_nano_p4" => Some(a(4, 32, 4, 2)),
        "vit_tiny_p4" => Some(a(4, 192, 12, 3)),
        "vit_small_p4" => Some(a(4, 384, 12, 6)),
        "deit_tiny_patch16_224" => Some(a(16, 192, 12, 3)),
        _ => None,
    }
}

family_entries! {
    head_weight: "head.weight";
    "vit_micro_p4", "ViT, patch 4, dim 128, depth 6, 4 heads (32-px)", 32, 100
        => |b, cfg, name| Vit::new(b, name, registry_arch(name), cfg);
    "vit_nano_p4", "ViT, patch 4, dim 32, depth 4, 2 heads (32-px; demos, embedding, tests)", 32, 10
        => |b, cfg, name| Vit::new(b, name, registry_arch(name), cfg);
    "vit_tiny_p4", "DeiT-Tiny at 32 px: patch 4, dim 192, depth 12, 3 heads", 32, 100
        => |b, cfg, name| Vit::new(b, name, registry_arch(name), cfg);
    "vit_small_p4", "ViT-S at 32 px: patch 4, dim 384, depth 12, 6 heads", 32, 100
        => |b, cfg, name| Vit::new(b, name, registry_arch(name), cfg);
    "deit_tiny_patch16_224", "DeiT-Tiny (timm deit_tiny_patch16_224)", 224, 1000
        => |b, cfg, name| Vit::new(b, name, registry_arch(name), cfg);
}

/// [`arch`] of a name the registry lists.
fn registry_arch(name: &str) -> VitArch {
    arch(name).expect("every ViT entry has an architecture")
}
