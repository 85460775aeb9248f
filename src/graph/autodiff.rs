//! Reverse-mode differentiation at build time: the backward ops are appended to the same
//! graph, so they are compiled into the same plan as the forward pass.

use super::{DType, Graph, Source, Var};
use crate::error::{Error, Result};
use crate::store::Param;
use std::collections::{HashMap, HashSet};

impl Graph {
    /// Gradients of the scalar `loss` with respect to `wrt` (`None` where `loss` does not
    /// depend on it). Gradients of tensors used several times are summed.
    pub fn gradients(&mut self, loss: Var, wrt: &[Var]) -> Result<Vec<Option<Var>>> {
        if self.numel(loss) != 1 {
            return Err(Error::shape("backward", format!("the loss must have one element, it has shape {:?}", self.shape(loss))));
        }
        // Which tensors depend on something in `wrt` (only those need gradients).
        let n_nodes = self.nodes.len();
        let mut depends: HashSet<Var> = wrt.iter().copied().collect();
        for n in &self.nodes[..n_nodes] {
            if n.inputs.iter().any(|i| depends.contains(i)) {
                depends.extend(n.outputs.iter().copied());
            }
        }
        if !depends.contains(&loss) {
            return Ok(vec![None; wrt.len()]);
        }
        let mut grads: HashMap<Var, Var> = HashMap::new();
        let seed = self.fill(self.shape(loss).to_vec().as_slice(), 1.0)?;
        grads.insert(loss, seed);
        for i in (0..n_nodes).rev() {
            let node = self.nodes[i].clone();
            if !node.outputs.iter().any(|o| grads.contains_key(o)) {
                continue;
            }
            if !node.inputs.iter().any(|v| depends.contains(v) && self.dtype(*v) == DType::F32) {
                continue;
            }
            let gy: Vec<Option<Var>> = node.outputs.iter().map(|o| grads.get(o).copied()).collect();
            let nref = self.node_ref(i);
            let gx = node.op.backward(self, &nref, &gy)?;
            if gx.len() != node.inputs.len() {
                return Err(Error::usage(format!(
                    "{}: backward returned {} gradients for {} inputs",
                    node.op.name(),
                    gx.len(),
                    node.inputs.len()
                )));
            }
            for (k, (&x, gxk)) in node.inputs.iter().zip(gx).enumerate() {
                let Some(gxk) = gxk else { continue };
                if !depends.contains(&x) {
                    continue;
                }
                if self.shape(gxk) != self.shape(x) {
                    return Err(Error::shape(
                        node.op.name(),
                        format!(
                            "backward gave input {k} a gradient of shape {:?}, the input has shape {:?}",
                            self.shape(gxk),
                            self.shape(x)
                        ),
                    ));
                }
                let acc = match grads.get(&x) {
                    Some(&prev) => self.add(prev, gxk)?,
                    None => gxk,
                };
                grads.insert(x, acc);
            }
        }
        Ok(wrt.iter().map(|v| grads.get(v).copied()).collect())
    }

    /// Differentiate `loss` with respect to every parameter the graph uses and route each
    /// gradient into the store's gradient slot of that parameter. Returns (parameter, gradient)
    /// for the parameters that received one (the optimizer updates exactly these).
    pub fn backward(&mut self, loss: Var) -> Result<Vec<(Param, Var)>> {
        let params = self.params();
        let vars: Vec<Var> = params.iter().map(|(_, v)| *v).collect();
        let grads = self.gradients(loss, &vars)?;
        self.set_param_grads(params.into_iter().zip(grads).filter_map(|((p, _), g)| g.map(|g| (p, g))).collect())
    }

    /// Route gradients into the store's gradient slots. A gradient whose memory cannot be the
    /// slot itself (it is another stored tensor, an input, or already routed) is copied.
    pub fn set_param_grads(&mut self, pairs: Vec<(Param, Var)>) -> Result<Vec<(Param, Var)>> {
        let mut used: HashSet<Var> = self.param_grads.iter().map(|(_, v)| self.root(*v)).collect();
        let mut out = Vec::with_capacity(pairs.len());
        for (p, gv) in pairs {
            let root = self.root(gv);
            let owned = matches!(self.info(root).source, Source::Node(_)) && !used.contains(&root) && !self.kept.contains(&root);
            let gv = if owned { gv } else { self.copy(gv)? };
            used.insert(self.root(gv));
            self.param_grads.push((p.clone(), gv));
            out.push((p, gv));
        }
        Ok(out)
    }
}
