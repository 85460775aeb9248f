//! The pre-norm transformer block of ViT/DeiT, also the block OFA-KD's token branches stack.

use super::{Builder, Fwd, InitStyle, LayerNorm, Mlp, SelfAttention, residual};
use crate::error::Result;
use crate::graph::{Graph, Var};

/// timm's pre-norm transformer `Block` (`norm1`, `attn.qkv`, `attn.proj`, `norm2`,
/// `mlp.fc1`, `mlp.fc2`); also the block OFA-KD's token branches stack.
#[derive(Clone, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: SelfAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub drop_path: f32,
}

impl Block {
    /// A block of width `dim` with timm's ViT initialisation.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut Builder,
        name: &str,
        dim: usize,
        heads: usize,
        mlp_ratio: f32,
        qkv_bias: bool,
        eps: f32,
        drop_path: f32,
    ) -> Result<Self> {
        let mut s = b.sub(name);
        let hidden = (dim as f32 * mlp_ratio) as usize;
        Ok(Block {
            norm1: LayerNorm::new(&mut s, "norm1", dim, eps)?,
            attn: SelfAttention::new(&mut s, "attn", dim, heads, qkv_bias)?,
            norm2: LayerNorm::new(&mut s, "norm2", dim, eps)?,
            mlp: Mlp::new(&mut s, "mlp", dim, hidden, InitStyle::Vit)?,
            drop_path,
        })
    }

    /// x [B, N, dim] -> [B, N, dim].
    pub fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let h = self.norm1.forward(g, x)?;
        let h = self.attn.forward(g, h, None)?;
        let x = residual(g, x, h, self.drop_path, f)?;
        let h = self.norm2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        residual(g, x, h, self.drop_path, f)
    }
}
