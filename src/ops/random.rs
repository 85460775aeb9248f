//! Dropout and drop path (stochastic depth) for training. The mask is a counter-based hash of
//! (seed, step counter, per-node salt, element or sample index): no mask tensor is stored,
//! the backward pass recomputes it, and a seeded run replays exactly.

use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, DType, Graph, Lowering, NodeRef, Op, Params, Var};

#[derive(Debug, Clone, Copy)]
struct DropOp {
    p: f32,
    /// Elements sharing one draw (1: dropout; C*H*W or tokens*dim: drop path).
    group: usize,
    salt: u32,
    seed: u32,
}

impl Op for DropOp {
    fn name(&self) -> &'static str {
        if self.group == 1 { "dropout" } else { "drop_path" }
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None, None]) };
        let shape = n.inputs[0].shape.clone();
        Ok(vec![Some(g.push(*self, &[gy, n.inputs[1].var], shape, DType::F32)?), None])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let len = n.outputs[0].numel();
        let p = Params::new().u(len).u(self.group).u(self.salt as usize).u(self.seed as usize).f(self.p).f(0.0).f(0.0).f(0.0);
        l.dispatch(
            "elementwise",
            "drop",
            p,
            &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.inputs[1].var)],
            grid_for(len, 256),
        );
        Ok(())
    }
}

impl Graph {
    fn drop_generic(&mut self, x: Var, p: f32, group: usize, step: Var, seed: u32) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::shape("dropout", format!("drop probability {p} must be in [0, 1)")));
        }
        if self.dtype(step) != DType::U32 {
            return Err(Error::shape("dropout", "the step counter must be a U32 tensor"));
        }
        if p == 0.0 {
            return Ok(x);
        }
        // The node index decorrelates layers that share a step counter.
        let salt = self.nodes.len() as u32;
        let shape = self.shape(x).to_vec();
        self.push(DropOp { p, group, salt, seed }, &[x, step], shape, DType::F32)
    }

    /// Dropout with probability `p`; `step` is the U32 step counter that varies the mask.
    pub fn dropout(&mut self, x: Var, p: f32, step: Var, seed: u32) -> Result<Var> {
        self.drop_generic(x, p, 1, step, seed)
    }

    /// Drop path (stochastic depth): drop whole samples (axis 0) of a residual branch.
    pub fn drop_path(&mut self, x: Var, p: f32, step: Var, seed: u32) -> Result<Var> {
        let s = self.shape(x);
        let per_sample = s[1..].iter().product::<usize>().max(1);
        self.drop_generic(x, p, per_sample, step, seed)
    }
}
