//! ResNets with BasicBlocks, in two layouts that share their state-dict names:
//! - the CIFAR ResNets of He et al. 2016 as the CRD / mdistiller repositories define them
//!   (`resnet8` .. `resnet110`): 3x3 stem to 16 channels, three stages of (depth-2)/6 blocks
//!   with 16/32/64 channels, stage features = outputs of layer1..3;
//! - torchvision's `resnet18` / `resnet34`: 7x7 stride-2 stem and max pool (or, for the
//!   `_cifar` variants, a 3x3 stride-1 stem without max pool), four stages of 64..512 channels,
//!   stage features = outputs of layer1..4.
//!
//! Names: `conv1`, `bn1`, `layerS.B.{conv1,bn1,conv2,bn2}`, `layerS.B.downsample.{0,1}`, `fc`.
//! Init as both repositories: kaiming_normal(fan_out) convolutions, BatchNorm 1/0, PyTorch's
//! default Linear.

use super::{Backbone, Family, FeatureShape, ModelConfig, Output, check_input_any_size, family_entries, prefix_of};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::{BatchNorm2d, Builder, Conv2d, ConvInit, Fwd, Linear, conv_out, drop_path};
use crate::ops::{Conv2dSpec, PoolSpec, Unary};

const KAIMING: ConvInit = ConvInit::KaimingFanOut { per_group: false };

/// conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut (1x1 conv + BN when the shape
/// changes), then ReLU after the add.
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
    drop_path: f32,
}

impl BasicBlock {
    fn new(b: &mut Builder, cin: usize, cout: usize, stride: usize, drop_path: f32) -> Result<Self> {
        let downsample = if stride != 1 || cin != cout {
            let mut d = b.sub("downsample");
            Some((
                Conv2d::new(&mut d, "0", cin, cout, 1, Conv2dSpec::new(stride, 0, 1), false, KAIMING)?,
                BatchNorm2d::new(&mut d, "1", cout)?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv2d::new(b, "conv1", cin, cout, 3, Conv2dSpec::new(stride, 1, 1), false, KAIMING)?,
            bn1: BatchNorm2d::new(b, "bn1", cout)?,
            conv2: Conv2d::new(b, "conv2", cout, cout, 3, Conv2dSpec::new(1, 1, 1), false, KAIMING)?,
            bn2: BatchNorm2d::new(b, "bn2", cout)?,
            downsample,
            drop_path,
        })
    }

    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let h = self.conv1.forward(g, x)?;
        let h = self.bn1.forward_act(g, h, f, None, Unary::Relu)?;
        let h = self.conv2.forward(g, h)?;
        let sc = match &self.downsample {
            Some((conv, bn)) => {
                let s = conv.forward(g, x)?;
                bn.forward(g, s, f)?
            }
            None => x,
        };
        if f.training() && self.drop_path > 0.0 && f.step.is_some() {
            // Stochastic depth drops the branch before the add: bn2, drop, add, relu apart.
            let h = self.bn2.forward(g, h, f)?;
            let h = drop_path(g, h, self.drop_path, f)?;
            let y = g.add(h, sc)?;
            return g.relu(y);
        }
        // relu(bn2(h) + shortcut) in one pass.
        self.bn2.forward_act(g, h, f, Some(sc), Unary::Relu)
    }
}

/// The stem: CIFAR (3x3 stride 1, no pooling) or ImageNet (7x7 stride 2, max pool 3/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    Cifar,
    ImageNet,
}

pub struct ResNet {
    name: String,
    prefix: String,
    cfg: ModelConfig,
    stem: Stem,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<BasicBlock>>,
    fc: Linear,
    features: Vec<FeatureShape>,
}

impl ResNet {
    /// `blocks[s]` BasicBlocks of `widths[s]` channels per stage (stride 1 for the first stage,
    /// 2 after); the stem maps the input to `widths[0]` channels.
    pub fn new(b: &mut Builder, name: &str, cfg: &ModelConfig, stem: Stem, widths: &[usize], blocks: &[usize]) -> Result<Self> {
        let (k, s, p) = if stem == Stem::Cifar { (3, 1, 1) } else { (7, 2, 3) };
        let conv1 = Conv2d::new(b, "conv1", cfg.in_chans, widths[0], k, Conv2dSpec::new(s, p, 1), false, KAIMING)?;
        let bn1 = BatchNorm2d::new(b, "bn1", widths[0])?;
        let mut size = conv_out(cfg.img_size, k, s, p);
        if stem == Stem::ImageNet {
            size = conv_out(size, 3, 2, 1);
        }
        let total: usize = blocks.iter().sum();
        let mut layers = Vec::new();
        let mut features = Vec::new();
        let mut cin = widths[0];
        let mut idx = 0;
        for (si, (&w, &n)) in widths.iter().zip(blocks).enumerate() {
            let mut lb = b.sub(&format!("layer{}", si + 1));
            let mut stage = Vec::new();
            for bi in 0..n {
                let stride = if si > 0 && bi == 0 { 2 } else { 1 };
                // Stochastic depth rate grows linearly with depth (0 unless configured).
                let dp = if total > 1 { cfg.drop_path * idx as f32 / (total - 1) as f32 } else { 0.0 };
                stage.push(BasicBlock::new(&mut lb.sub(&bi.to_string()), cin, w, stride, dp)?);
                if stride == 2 {
                    size = conv_out(size, 3, 2, 1);
                }
                cin = w;
                idx += 1;
            }
            layers.push(stage);
            features.push(FeatureShape::Map { c: w, h: size, w: size });
        }
        let fc = Linear::new(b, "fc", cin, cfg.num_classes, true)?;
        Ok(ResNet { name: name.into(), prefix: prefix_of(b), cfg: cfg.clone(), stem, conv1, bn1, layers, fc, features })
    }
}

impl Backbone for ResNet {
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
        // Fully convolutional with global pooling: any input size (OBoW's patches).
        check_input_any_size(g, &self.name, &self.cfg, x)?;
        let h = self.conv1.forward(g, x)?;
        let mut h = self.bn1.forward_act(g, h, &f, None, Unary::Relu)?;
        if self.stem == Stem::ImageNet {
            h = g.max_pool2d(h, PoolSpec::new(3, 2, 1))?;
        }
        let mut features = Vec::new();
        for (si, stage) in self.layers.iter().enumerate() {
            h = g.scoped(&format!("layer{}", si + 1), |g| stage.iter().try_fold(h, |h, blk| blk.forward(g, h, &f)))?;
            features.push(h);
        }
        let pooled = g.global_avg_pool(h)?;
        let logits = self.fc.forward(g, pooled)?;
        Ok(Output { logits, features, pooled })
    }
    fn feature_shapes(&self) -> Vec<FeatureShape> {
        self.features.clone()
    }
    fn pooled_dim(&self) -> usize {
        self.fc.weight.shape()[1]
    }
    fn head_weight(&self) -> &str {
        "fc.weight"
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A CIFAR ResNet of `depth` = 6n+2 layers (n BasicBlocks per stage of 16, 32, 64 channels).
fn cifar_resnet(b: &mut Builder, cfg: &ModelConfig, name: &str, depth: usize) -> Result<ResNet> {
    if depth < 8 || (depth - 2) % 6 != 0 {
        return Err(Error::usage(format!("CIFAR ResNet depth {depth} must be 6n+2")));
    }
    let n = (depth - 2) / 6;
    ResNet::new(b, name, cfg, Stem::Cifar, &[16, 32, 64], &[n, n, n])
}

/// A torchvision ResNet (64, 128, 256, 512 channels).
fn tv_resnet(b: &mut Builder, cfg: &ModelConfig, name: &str, stem: Stem, blocks: [usize; 4]) -> Result<ResNet> {
    ResNet::new(b, name, cfg, stem, &[64, 128, 256, 512], &blocks)
}

family_entries! {
    head_weight: "fc.weight";
    "resnet8", "CIFAR ResNet-8 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 8);
    "resnet14", "CIFAR ResNet-14 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 14);
    "resnet20", "CIFAR ResNet-20 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 20);
    "resnet32", "CIFAR ResNet-32 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 32);
    "resnet44", "CIFAR ResNet-44 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 44);
    "resnet56", "CIFAR ResNet-56 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100 => |b, cfg, name| cifar_resnet(b, cfg, name, 56);
    "resnet110", "CIFAR ResNet-110 (He et al. 2016, CRD layout), 16/32/64 channels", 32, 100
        => |b, cfg, name| cifar_resnet(b, cfg, name, 110);
    "resnet18", "torchvision ResNet-18, ImageNet stem (7x7/2 + max pool)", 224, 1000
        => |b, cfg, name| tv_resnet(b, cfg, name, Stem::ImageNet, [2, 2, 2, 2]);
    "resnet18_cifar", "torchvision ResNet-18 names, CIFAR stem (3x3/1, no max pool) for 32-px inputs", 32, 100
        => |b, cfg, name| tv_resnet(b, cfg, name, Stem::Cifar, [2, 2, 2, 2]);
    "resnet34", "torchvision ResNet-34, ImageNet stem (7x7/2 + max pool)", 224, 1000
        => |b, cfg, name| tv_resnet(b, cfg, name, Stem::ImageNet, [3, 4, 6, 3]);
    "resnet34_cifar", "torchvision ResNet-34 names, CIFAR stem (3x3/1, no max pool) for 32-px inputs", 32, 100
        => |b, cfg, name| tv_resnet(b, cfg, name, Stem::Cifar, [3, 4, 6, 3]);
}
