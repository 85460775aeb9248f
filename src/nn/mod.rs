//! Layers built from ops, with parameter names that match PyTorch/timm state dicts.
//!
//! A layer is a plain struct of [`Param`]s made by a constructor that registers them through a
//! [`Builder`] (which carries the dotted name prefix), and a `forward(&self, g, x, ..)` that
//! adds its ops to a graph. Nothing here touches wgpu. One file per kind of layer (linear,
//! conv, norm, attention, mlp, patch, block, drop for stochastic depth), whatever family uses
//! it; everything is re-exported here.

mod attention;
mod block;
mod conv;
mod drop;
mod linear;
mod mlp;
mod norm;
mod patch;

pub use attention::SelfAttention;
pub use block::Block;
pub use conv::{Conv2d, ConvInit, conv_out};
pub use drop::{drop_path, drop_path_rates, residual};
pub use linear::{InitStyle, Linear};
pub use mlp::Mlp;
pub use norm::{Affine, BatchNorm2d, LayerNorm, LayerNorm2d};
pub use patch::{PatchEmbed, PatchMerging};

use crate::error::Result;
use crate::graph::{DType, Var};
use crate::store::{Init, Param, StateRef, Store};

/// Training or evaluation behaviour (BatchNorm statistics, dropout, drop path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What a forward pass needs beyond the input: the mode, and in training the U32 step
/// counter that seeds dropout and drop path.
#[derive(Clone, Copy, Debug)]
pub struct Fwd {
    pub mode: Mode,
    pub step: Option<Var>,
    pub seed: u32,
}

impl Fwd {
    pub fn eval() -> Self {
        Fwd { mode: Mode::Eval, step: None, seed: 0 }
    }
    pub fn train(step: Var, seed: u32) -> Self {
        Fwd { mode: Mode::Train, step: Some(step), seed }
    }
    pub fn training(&self) -> bool {
        self.mode == Mode::Train
    }
}

/// Registers tensors in a store under a dotted prefix ("layer1.0.conv1.weight").
pub struct Builder<'a> {
    pub store: &'a mut Store,
    prefix: String,
}

impl<'a> Builder<'a> {
    pub fn new(store: &'a mut Store, prefix: &str) -> Self {
        Builder { store, prefix: prefix.trim_end_matches('.').to_string() }
    }

    /// Full name of a tensor registered here.
    pub fn name(&self, n: &str) -> String {
        if self.prefix.is_empty() { n.to_string() } else { format!("{}.{n}", self.prefix) }
    }

    /// A builder for a child module.
    pub fn sub(&mut self, name: &str) -> Builder<'_> {
        let prefix = self.name(name);
        Builder { store: self.store, prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A trainable parameter; weight decay applies to rank >= 2 tensors.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Param> {
        let n = self.name(name);
        self.store.param(&n, shape, init)
    }

    /// A trainable parameter with explicit weight-decay choice.
    pub fn param_with(&mut self, name: &str, shape: &[usize], init: Init, decay: bool) -> Result<Param> {
        let n = self.name(name);
        self.store.param_with(&n, shape, init, decay)
    }

    /// Non-trainable state (BatchNorm running stats, counters).
    pub fn state(&mut self, name: &str, shape: &[usize], dtype: DType, init: Init) -> Result<StateRef> {
        let n = self.name(name);
        self.store.state(&n, shape, dtype, init)
    }
}

/// PyTorch's default init for Linear/Conv weights and biases (kaiming_uniform with a=sqrt(5)):
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub fn torch_default_init(fan_in: usize) -> Init {
    let k = 1.0 / (fan_in.max(1) as f32).sqrt();
    Init::Uniform { lo: -k, hi: k }
}
