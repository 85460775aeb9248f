//! The two-layer MLP of transformer and mixer blocks, with timm's names (`fc1`, `fc2`).

use super::{Builder, InitStyle, Linear};
use crate::error::Result;
use crate::graph::{Graph, Var};

/// timm's `Mlp`: fc1 -> GELU -> fc2 (dropout 0).
#[derive(Clone, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new(b: &mut Builder, name: &str, dim: usize, hidden: usize, style: InitStyle) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(Mlp {
            fc1: style.new_linear(&mut s, "fc1", dim, hidden, true, true)?,
            fc2: style.new_linear(&mut s, "fc2", hidden, dim, true, true)?,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let h = self.fc1.forward(g, x)?;
        let h = g.gelu(h)?;
        self.fc2.forward(g, h)
    }
}
