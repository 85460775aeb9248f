//! Backbones by name: CNNs, vision transformers, MLP mixers. Each family has its own file
//! and declares its names with the one `family_entries!` macro; [`registry`] lists them all.
//! Parameter names and layouts are exactly those of the PyTorch/timm state dicts they mirror,
//! so `.safetensors` files move both ways.

pub mod convnext;
pub mod mixer;
pub mod mobilenetv2;
pub mod resnet;
pub mod swin;
pub mod vit;

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::nn::{Builder, Fwd};
use crate::store::Store;

/// Architecture family: decides the OFA-KD branch design and what FitNet may pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Convolutional: stage features are [C, H, W] maps.
    Cnn,
    /// Vision transformer: token features [N, D] (with class tokens).
    Vit,
    /// Swin: token features on a shrinking grid, no class token.
    Swin,
    /// MLP-Mixer / ResMLP: token features [N, D], no class token.
    Mlp,
}

/// Shape of one stage feature, per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureShape {
    /// NCHW map.
    Map { c: usize, h: usize, w: usize },
    /// [tokens, dim], of which the first `prefix` are class/distillation tokens.
    Tokens { n: usize, d: usize, prefix: usize },
}

impl FeatureShape {
    pub fn numel(&self) -> usize {
        match *self {
            FeatureShape::Map { c, h, w } => c * h * w,
            FeatureShape::Tokens { n, d, .. } => n * d,
        }
    }
}

impl std::fmt::Display for FeatureShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FeatureShape::Map { c, h, w } => write!(f, "{c}x{h}x{w}"),
            FeatureShape::Tokens { n, d, prefix } if prefix > 0 => write!(f, "{n}x{d} (incl. {prefix} class token)"),
            FeatureShape::Tokens { n, d, .. } => write!(f, "{n}x{d}"),
        }
    }
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

/// What a model is built for.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub in_chans: usize,
    pub img_size: usize,
    pub num_classes: usize,
    /// Stochastic-depth rate for the last block (linearly scaled over depth, as timm).
    pub drop_path: f32,
}

impl ModelConfig {
    pub fn new(in_chans: usize, img_size: usize, num_classes: usize) -> Self {
        ModelConfig { in_chans, img_size, num_classes, drop_path: 0.0 }
    }
}

/// Results of a forward pass.
#[derive(Clone, Debug)]
pub struct Output {
    /// [B, num_classes]
    pub logits: Var,
    /// Stage features (see [`Backbone::feature_shapes`]), batch first.
    pub features: Vec<Var>,
    /// The pooled feature the head reads, [B, pooled_dim].
    pub pooled: Var,
}

/// A model that can be built into a graph.
pub trait Backbone {
    /// Registry name ("resnet20", "vit_micro_p4", ...).
    fn name(&self) -> &str;
    fn family(&self) -> Family;
    fn config(&self) -> &ModelConfig;
    /// Add the forward pass of a batch `x` [B, C, H, W] to `g`.
    fn forward(&self, g: &mut Graph, x: Var, f: Fwd) -> Result<Output>;
    /// Per-image shapes of the stage features `forward` returns.
    fn feature_shapes(&self) -> Vec<FeatureShape>;
    /// Width of the pooled feature (OFA-KD's `stage_info(-1)`).
    fn pooled_dim(&self) -> usize;
    /// Name (without prefix) of the classifier weight, whose first dim is the class count.
    fn head_weight(&self) -> &str;
    /// Store prefix of every tensor of this model ("" or "teacher.", ...).
    fn prefix(&self) -> &str;
}

/// A registry entry: a name, a one-line description, defaults, and a constructor.
pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    /// Name of the classifier weight ([classes, dim]); `predict` reads the class count there.
    pub head_weight: &'static str,
    /// Input size and class count the model is usually built for.
    pub default_img: usize,
    pub default_classes: usize,
    pub build: fn(&mut Builder, &ModelConfig) -> Result<Box<dyn Backbone>>,
}

impl Entry {
    pub fn default_config(&self) -> ModelConfig {
        ModelConfig::new(3, self.default_img, self.default_classes)
    }
}

/// Defines a family's `pub fn entries() -> Vec<Entry>`: every family file declares its
/// registry names with this one macro. After the classifier weight the family's models share,
/// one line per model, in registry order:
///
/// ```text
/// "name", "about", default image size, default class count => |b, cfg, name| constructor;
/// ```
///
/// The constructor sees the builder, the config and the entry's name (`&'static str`) and
/// gives `Result<M>` for some [`Backbone`] `M`; the entry boxes it.
macro_rules! family_entries {
    (head_weight: $head:literal; $($name:literal, $about:literal, $img:literal, $classes:literal
        => |$b:ident, $cfg:ident, $n:ident| $model:expr;)+) => {
        pub fn entries() -> Vec<$crate::models::Entry> {
            vec![$($crate::models::Entry {
                name: $name,
                about: $about,
                head_weight: $head,
                default_img: $img,
                default_classes: $classes,
                build: |$b, $cfg| {
                    let $n: &'static str = $name;
                    Ok(Box::new($model?))
                },
            }),+]
        }
    };
}
pub(crate) use family_entries;

/// All model names, by family file.
pub fn registry() -> Vec<Entry> {
    let mut v = Vec::new();
    v.extend(resnet::entries());
    v.extend(mobilenetv2::entries());
    v.extend(convnext::entries());
    v.extend(vit::entries());
    v.extend(swin::entries());
    v.extend(mixer::entries());
    v
}

pub fn names() -> Vec<&'static str> {
    registry().iter().map(|e| e.name).collect()
}

pub fn entry(name: &str) -> Result<Entry> {
    let reg = registry();
    let known = reg.iter().map(|e| e.name).collect::<Vec<_>>().join(", ");
    reg.into_iter().find(|e| e.name == name).ok_or_else(|| Error::usage(format!("unknown model '{name}'; known models: {known}")))
}

/// Build a model by name, registering its tensors in `store` under `prefix`.
pub fn build(name: &str, store: &mut Store, prefix: &str, cfg: &ModelConfig) -> Result<Box<dyn Backbone>> {
    let e = entry(name)?;
    let mut b = Builder::new(store, prefix);
    (e.build)(&mut b, cfg)
}

/// The store prefix of a model built under `b` ("" or "teacher.").
pub(crate) fn prefix_of(b: &Builder) -> String {
    if b.prefix().is_empty() { String::new() } else { format!("{}.", b.prefix()) }
}

/// The input of a fully convolutional model with global pooling (ResNets): [B, in_chans, H, W]
/// of any size (OBoW's student sees full-size crops and half-size patches); the stage feature
/// shapes the model reports are those at `img_size`.
pub(crate) fn check_input_any_size(g: &Graph, name: &str, cfg: &ModelConfig, x: Var) -> Result<()> {
    let s = g.shape(x);
    if s.len() != 4 || s[1] != cfg.in_chans {
        return Err(Error::shape("model input", format!("{name} takes [B, {}, H, W] images, the input is {s:?}", cfg.in_chans)));
    }
    Ok(())
}

/// The input must be [B, in_chans, img_size, img_size] as the model was built for (its stage
/// feature shapes depend on it).
pub(crate) fn check_input(g: &Graph, name: &str, cfg: &ModelConfig, x: Var) -> Result<()> {
    let s = g.shape(x);
    if s.len() != 4 || s[1] != cfg.in_chans || s[2] != cfg.img_size || s[3] != cfg.img_size {
        return Err(Error::shape(
            "model input",
            format!("{name} was built for [B, {}, {}, {}] images, the input is {s:?}", cfg.in_chans, cfg.img_size, cfg.img_size),
        ));
    }
    Ok(())
}
