//! MobileNetV2 as timm's `mobilenetv2_100` (names `conv_stem`, `bn1`, `blocks.i.j.*`,
//! `conv_head`, `bn2`, `classifier`), and `mobilenetv2_cifar` with a stride-1 stem for 32-px
//! inputs. Stage features are the outputs OFA-KD taps (papers-digest A4): after blocks 2, 5
//! and 12 of the flattened block list, and after conv_head + bn2 (+ ReLU6).
//!
//! Init as timm's `_init_weight_goog`: convolutions N(0, 2 / fan_out) with fan_out divided by
//! the groups, BatchNorm 1/0, classifier U(+-1/sqrt(num_classes)), bias 0.

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, check_input, family_entries, prefix_of};
use crate::error::Result;
use crate::graph::{Graph, Var};
use crate::nn::{BatchNorm2d, Builder, Conv2d, ConvInit, Fwd, Linear, conv_out, drop_path};
use crate::ops::{Conv2dSpec, Unary};
use crate::store::Init;

const GOOG: ConvInit = ConvInit::KaimingFanOut { per_group: true };

/// (expansion, out channels, blocks, stride of the first block) per stage.
const STAGES: [(usize, usize, usize, usize); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

/// Flattened block indices whose outputs are stage features 1..3 (stage 4 is the head).
const TAPS: [usize; 3] = [2, 5, 12];

/// A conv + BatchNorm (+ ReLU6), timm's ConvBnAct pieces.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
    act: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        b: &mut Builder,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: bool,
    ) -> Result<Self> {
        Ok(ConvBn {
            conv: Conv2d::new(b, conv, cin, cout, k, Conv2dSpec::new(stride, (k - 1) / 2, groups), false, GOOG)?,
            bn: BatchNorm2d::new(b, bn, cout)?,
            act,
        })
    }
    /// act(bn(conv(x)) + residual), the BatchNorm, residual add and ReLU6 in one pass.
    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd, residual: Option<Var>) -> Result<Var> {
        let h = self.conv.forward(g, x)?;
        self.bn.forward_act(g, h, f, residual, if self.act { Unary::Relu6 } else { Unary::Identity })
    }
}

/// DepthwiseSeparableConv (stage 0: conv_dw, bn1, conv_pw, bn2) or InvertedResidual
/// (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); a skip connection when the shape is kept.
struct Block {
    layers: Vec<ConvBn>,
    skip: bool,
    drop_path: f32,
}

impl Block {
    fn new(b: &mut Builder, exp: usize, cin: usize, cout: usize, stride: usize, drop_path: f32) -> Result<Self> {
        let layers = if exp == 1 {
            vec![
                ConvBn::new(b, "conv_dw", "bn1", cin, cin, 3, stride, cin, true)?,
                ConvBn::new(b, "conv_pw", "bn2", cin, cout, 1, 1, 1, false)?,
            ]
        } else {
            let mid = cin * exp;
            vec![
                ConvBn::new(b, "conv_pw", "bn1", cin, mid, 1, 1, 1, true)?,
                ConvBn::new(b, "conv_dw", "bn2", mid, mid, 3, stride, mid, true)?,
                ConvBn::new(b, "conv_pwl", "bn3", mid, cout, 1, 1, 1, false)?,
            ]
        };
        Ok(Block { layers, skip: stride == 1 && cin == cout, drop_path })
    }
    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let (last, rest) = self.layers.split_last().expect("blocks have layers");
        let h = rest.iter().try_fold(x, |h, l| l.forward(g, h, f, None))?;
        if !self.skip {
            return last.forward(g, h, f, None);
        }
        if f.training() && self.drop_path > 0.0 && f.step.is_some() {
            // Stochastic depth drops the branch before the add.
            let h = last.forward(g, h, f, None)?;
            let h = drop_path(g, h, self.drop_path, f)?;
            return g.add(h, x);
        }
        // The skip add fused into the last BatchNorm.
        last.forward(g, h, f, Some(x))
    }
}

pub struct MobileNetV2 {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    classifier: Linear,
    features: Vec<FeatureShape>,
}

impl MobileNetV2 {
    pub fn new(b: &mut Builder, name: &str, cfg: &ModelConfig, stem_stride: usize) -> Result<Self> {
        let stem = ConvBn::new(b, "conv_stem", "bn1", cfg.in_chans, 32, 3, stem_stride, 1, true)?;
        let mut size = conv_out(cfg.img_size, 3, stem_stride, 1);
        let total: usize = STAGES.iter().map(|s| s.2).sum();
        let mut blocks = Vec::new();
        let mut features = Vec::new();
        let mut cin = 32;
        let mut bb = b.sub("blocks");
        for (si, &(exp, cout, n, stride)) in STAGES.iter().enumerate() {
            let mut sb = bb.sub(&si.to_string());
            for j in 0..n {
                let s = if j == 0 { stride } else { 1 };
                // timm: block drop-path rate = rate * block index / block count.
                let dp = cfg.drop_path * blocks.len() as f32 / total as f32;
                blocks.push(Block::new(&mut sb.sub(&j.to_string()), exp, cin, cout, s, dp)?);
                size = conv_out(size, 3, s, 1);
                cin = cout;
                if TAPS.contains(&(blocks.len() - 1)) {
                    features.push(FeatureShape::Map { c: cout, h: size, w: size });
                }
            }
        }
        let head = ConvBn::new(b, "conv_head", "bn2", cin, 1280, 1, 1, 1, true)?;
        features.push(FeatureShape::Map { c: 1280, h: size, w: size });
        let r = 1.0 / (cfg.num_classes as f32).sqrt();
        let classifier = Linear::with_init(b, "classifier", 1280, cfg.num_classes, true, Init::Uniform { lo: -r, hi: r }, Init::Zeros)?;
        Ok(MobileNetV2 { name: name.into(), prefix: prefix_of(b), cfg: cfg.clone(), stem, blocks, head, classifier, features })
    }
}

impl Backbone for MobileNetV2 {
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
        let mut h = self.stem.forward(g, x, &f, None)?;
        let mut features = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            h = g.scoped(&format!("blocks[{i}]"), |g| blk.forward(g, h, &f))?;
            if TAPS.contains(&i) {
                features.push(h);
            }
        }
        let h = self.head.forward(g, h, &f, None)?;
        features.push(h);
        let pooled = g.global_avg_pool(h)?;
        let logits = self.classifier.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        self.features.clone()
    }
    fn pooled_dim(&self) -> usize {
        1280
    }
    fn head_weight(&self) -> &str {
        "classifier.weight"
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

family_entries! {
    head_weight: "classifier.weight";
    "mobilenetv2", "MobileNetV2 1.0 (timm mobilenetv2_100 names), stride-2 stem", 224, 1000
        => |b, cfg, name| MobileNetV2::new(b, name, cfg, 2);
    "mobilenetv2_cifar", "MobileNetV2 1.0 (timm names), stride-1 stem for 32-px inputs", 32, 100
        => |b, cfg, name| MobileNetV2::new(b, name, cfg, 1);
}
