//! The step counter: one U32 that a single-thread kernel (`shaders/counter.wgsl`) advances by
//! one when the plan reaches the node. It ends a training step (the optimizer's step, read by
//! the LR schedule and the data sampler) and an evaluation graph (the batch counter, so each
//! replay reads the next batch): a replayed plan needs no host writes.

use crate::error::{Error, Result};
use crate::graph::{Bind, DType, Graph, Lowering, NodeRef, Op, Params, Var};

#[derive(Debug)]
struct TickOp;

impl Op for TickOp {
    fn name(&self) -> &'static str {
        "tick"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        l.dispatch("counter", "tick", Params::new(), &[Bind::T(n.inputs[0].var)], [1, 1, 1]);
        Ok(())
    }
}

impl Graph {
    /// Add 1 to a U32 [1] counter (stored state) when the plan reaches this node.
    pub fn tick(&mut self, counter: Var) -> Result<()> {
        if self.dtype(counter) != DType::U32 || self.numel(counter) != 1 {
            return Err(Error::shape("tick", "the counter must be a U32 tensor of one element (a step counter)"));
        }
        self.push(TickOp, &[counter], vec![1], DType::F32)?;
        Ok(())
    }

    /// [`Graph::tick`] under the name data recipes use: put it last in an evaluation graph so
    /// each replay reads the next batch.
    pub fn data_tick(&mut self, counter: Var) -> Result<()> {
        self.tick(counter)
    }
}
