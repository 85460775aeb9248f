//! Multi-head self-attention with timm's parameter names (`qkv`, `proj`).

use super::{Builder, Linear};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::ops::AttnImpl;

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
