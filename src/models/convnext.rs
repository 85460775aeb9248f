//! ConvNeXt as timm defines it (names `stem.0/1`, `stages.i.downsample.0/1`,
//! `stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`, `head.norm`, `head.fc`):
//! `convnext_atto` (conv-MLP: LayerNorm2d and 1x1 convolutions, as timm's `conv_mlp=True`) and
//! `convnext_tiny` (channels-last LayerNorm and Linear MLP, timm's default), with the 4x4
//! patch stem, and `_p2` variants whose stem is a 2x2 stride-2 patch conv for 32-px inputs.
//!
//! The `_p2` variants are timm's model with `stem.0` replaced by `Conv2d(3, dims[0], 2, 2)`:
//! stage maps of 16/8/4/2 px at 32 px. (timm's own `patch_size=2` argument instead adds a
//! stride-2 downsample to stage 0, which leaves a 1x1 map at the last stage of a 32-px input.)
//!
//! Block: x + drop_path(gamma * fc2(gelu(fc1(norm(conv_dw7x7(x)))))). Head: global average
//! pool, LayerNorm (`head.norm`), `head.fc`; the pooled feature is the normalised one.
//! Init as timm: trunc_normal(0.02) weights, zero biases, layer scale 1e-6.

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, check_input, family_entries, prefix_of};
use crate::error::Result;
use crate::graph::{Graph, Var};
use crate::nn::{Builder, Conv2d, ConvInit, Fwd, LayerNorm, LayerNorm2d, Linear, drop_path};
use crate::ops::Conv2dSpec;
use crate::store::{Init, Param};

const TRUNC: ConvInit = ConvInit::TruncNormal(0.02);
const EPS: f32 = 1e-6;

/// The block's pointwise MLP: 1x1 convolutions on NCHW maps (conv-MLP) or Linear layers on
/// channels-last tokens.
enum Mlp {
    Conv { norm: LayerNorm2d, fc1: Conv2d, fc2: Conv2d },
    Linear { norm: LayerNorm, fc1: Linear, fc2: Linear },
}

struct Block {
    conv_dw: Conv2d,
    mlp: Mlp,
    gamma: Param,
    drop_path: f32,
}

impl Block {
    fn new(b: &mut Builder, dim: usize, conv_mlp: bool, drop_path: f32) -> Result<Self> {
        let conv_dw = Conv2d::new(b, "conv_dw", dim, dim, 7, Conv2dSpec::new(1, 3, dim), true, TRUNC)?;
        let mlp = if conv_mlp {
            let norm = LayerNorm2d::new(b, "norm", dim, EPS)?;
            let mut m = b.sub("mlp");
            let fc1 = Conv2d::new(&mut m, "fc1", dim, 4 * dim, 1, Conv2dSpec::new(1, 0, 1), true, TRUNC)?;
            let fc2 = Conv2d::new(&mut m, "fc2", 4 * dim, dim, 1, Conv2dSpec::new(1, 0, 1), true, TRUNC)?;
            Mlp::Conv { norm, fc1, fc2 }
        } else {
            let norm = LayerNorm::new(b, "norm", dim, EPS)?;
            let mut m = b.sub("mlp");
            let fc1 = Linear::new_trunc(&mut m, "fc1", dim, 4 * dim, true)?;
            let fc2 = Linear::new_trunc(&mut m, "fc2", 4 * dim, dim, true)?;
            Mlp::Linear { norm, fc1, fc2 }
        };
        let gamma = b.param("gamma", &[dim], Init::Const(1e-6))?;
        Ok(Block { conv_dw, mlp, gamma, drop_path })
    }

    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let h = self.conv_dw.forward(g, x)?;
        let h = match &self.mlp {
            Mlp::Conv { norm, fc1, fc2 } => {
                let h = norm.forward(g, h)?;
                let h = fc1.forward(g, h)?;
                let h = g.gelu(h)?;
                fc2.forward(g, h)?
            }
            Mlp::Linear { norm, fc1, fc2 } => {
                let h = g.permute(h, &[0, 2, 3, 1])?;
                let h = norm.forward(g, h)?;
                let h = fc1.forward(g, h)?;
                let h = g.gelu(h)?;
                let h = fc2.forward(g, h)?;
                g.permute(h, &[0, 3, 1, 2])?
            }
        };
        let c = self.gamma.shape()[0];
        let gm = g.param(&self.gamma);
        let gm = g.reshape(gm, &[1, c, 1, 1])?;
        let h = g.mul(h, gm)?;
        let h = drop_path(g, h, self.drop_path, f)?;
        g.add(h, x)
    }
}

struct Stage {
    downsample: Option<(LayerNorm2d, Conv2d)>,
    blocks: Vec<Block>,
}

pub struct ConvNeXt {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    stem: (Conv2d, LayerNorm2d),
    stages: Vec<Stage>,
    head_norm: LayerNorm,
    head_fc: Linear,
    features: Vec<FeatureShape>,
}

impl ConvNeXt {
    pub fn new(
        b: &mut Builder,
        name: &str,
        cfg: &ModelConfig,
        depths: [usize; 4],
        dims: [usize; 4],
        patch: usize,
        conv_mlp: bool,
    ) -> Result<Self> {
        let mut sb = b.sub("stem");
        let stem = (
            Conv2d::new(&mut sb, "0", cfg.in_chans, dims[0], patch, Conv2dSpec::new(patch, 0, 1), true, TRUNC)?,
            LayerNorm2d::new(&mut sb, "1", dims[0], EPS)?,
        );
        let mut size = cfg.img_size / patch;
        let total: usize = depths.iter().sum();
        let mut idx = 0;
        let mut stages = Vec::new();
        let mut features = Vec::new();
        let mut st = b.sub("stages");
        for i in 0..4 {
            let mut s = st.sub(&i.to_string());
            let downsample = if i > 0 {
                let mut d = s.sub("downsample");
                size /= 2;
                Some((
                    LayerNorm2d::new(&mut d, "0", dims[i - 1], EPS)?,
                    Conv2d::new(&mut d, "1", dims[i - 1], dims[i], 2, Conv2dSpec::new(2, 0, 1), true, TRUNC)?,
                ))
            } else {
                None
            };
            let mut blocks = Vec::new();
            let mut bs = s.sub("blocks");
            for j in 0..depths[i] {
                // timm: drop-path rates linearly spaced from 0 to the rate over all blocks.
                let dp = if total > 1 { cfg.drop_path * idx as f32 / (total - 1) as f32 } else { 0.0 };
                blocks.push(Block::new(&mut bs.sub(&j.to_string()), dims[i], conv_mlp, dp)?);
                idx += 1;
            }
            stages.push(Stage { downsample, blocks });
            features.push(FeatureShape::Map { c: dims[i], h: size, w: size });
        }
        let mut hb = b.sub("head");
        let head_norm = LayerNorm::new(&mut hb, "norm", dims[3], EPS)?;
        let head_fc = Linear::new_trunc(&mut hb, "fc", dims[3], cfg.num_classes, true)?;
        Ok(ConvNeXt { name: name.into(), prefix: prefix_of(b), cfg: cfg.clone(), stem, stages, head_norm, head_fc, features })
    }
}

impl Backbone for ConvNeXt {
    fn name(&self) -> &str {
        &self.name
    }
    fn family(&self) -> Family {
        Family::Cnn
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn forward(&self, g: &mut Graph, x: Var, f: Fwd) -> Result<Output> {
        check_input(g, &self.name, &self.cfg, x)?;
        let h = self.stem.0.forward(g, x)?;
        let mut h = self.stem.1.forward(g, h)?;
        let mut features = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            h = g.scoped(&format!("stages.{i}"), |g| -> Result<Var> {
                let mut h = h;
                if let Some((norm, conv)) = &stage.downsample {
                    h = norm.forward(g, h)?;
                    h = conv.forward(g, h)?;
                }
                stage.blocks.iter().try_fold(h, |h, blk| blk.forward(g, h, &f))
            })?;
            features.push(h);
        }
        let pooled = g.global_avg_pool(h)?;
        // LayerNorm2d of a 1x1 map is a LayerNorm over the channels.
        let pooled = self.head_norm.forward(g, pooled)?;
        let logits = self.head_fc.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        self.features.clone()
    }
    fn pooled_dim(&self) -> usize {
        self.head_fc.weight.shape()[1]
    }
    fn head_weight(&self) -> &str {
        "head.fc.weight"
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

const ATTO: ([usize; 4], [usize; 4]) = ([2, 2, 6, 2], [40, 80, 160, 320]);
const TINY: ([usize; 4], [usize; 4]) = ([3, 3, 9, 3], [96, 192, 384, 768]);

family_entries! {
    head_weight: "head.fc.weight";
    "convnext_atto", "ConvNeXt-Atto (timm convnext_atto, conv MLP), 4x4 patch stem", 224, 1000
        => |b, cfg, name| ConvNeXt::new(b, name, cfg, ATTO.0, ATTO.1, 4, true);
    "convnext_atto_p2", "ConvNeXt-Atto with a 2x2 patch stem for 32-px inputs", 32, 100
        => |b, cfg, name| ConvNeXt::new(b, name, cfg, ATTO.0, ATTO.1, 2, true);
    "convnext_tiny", "ConvNeXt-Tiny (timm convnext_tiny), 4x4 patch stem", 224, 1000
        => |b, cfg, name| ConvNeXt::new(b, name, cfg, TINY.0, TINY.1, 4, false);
    "convnext_tiny_p2", "ConvNeXt-Tiny with a 2x2 patch stem for 32-px inputs", 32, 100
        => |b, cfg, name| ConvNeXt::new(b, name, cfg, TINY.0, TINY.1, 2, false);
}
