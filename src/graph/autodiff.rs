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
        let wrt_set: HashSet<Var> = wrt.iter().copied().collect();
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
            // Gradients still to be read (by nodes not processed yet, or as results) must
            // keep their values: pin them while the backward may fuse epilogues into the ops
            // that produce its output gradients (`Graph::add_into`, `Graph::unary_grad`).
            let mut pins = live_gradients(self, &grads, i, &wrt_set);
            let flat: Vec<Var> = gy.iter().flatten().copied().collect();
            pins.extend(flat.iter().filter(|v| flat.iter().filter(|u| u == v).count() > 1));
            let gx = self.pinned_while(&pins, |g| node.op.backward(g, &nref, &gy))?;
            if gx.len() != node.inputs.len() {
                return Err(Error::usage(format!(
                    "{}: backward returned {} gradients for {} inputs",
                    node.op.name(),
                    gx.len(),
                    node.inputs.len()
                )));
            }
            for (k, (&x, &gxk)) in node.inputs.iter().zip(&gx).enumerate() {
                let Some(gxk) = gxk else { continue };
                if !depends.contains(&x) {
                    // Nothing needs it: an op computing it with other gradients may skip it.
                    let mut pins = live_gradients(self, &grads, i, &wrt_set);
                    pins.extend(gx.iter().enumerate().filter(|&(j, _)| j != k).filter_map(|(_, v)| *v));
                    self.pinned_while(&pins, |g| g.discard_output(gxk));
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
                    Some(&prev) => {
                        // `gxk` may absorb the sum unless another gradient (of this node's
                        // other inputs, or one still live) is the same tensor.
                        let mut pins = live_gradients(self, &grads, i, &wrt_set);
                        pins.extend(gx.iter().enumerate().filter(|&(j, _)| j != k).filter_map(|(_, v)| *v));
                        self.pinned_while(&pins, |g| g.add_into(prev, gxk))?
                    }
                    None => gxk,
                };
                grads.insert(x, acc);
            }
        }
        Ok(wrt.iter().map(|v| grads.get(v).copied()).collect())
    }

    /// Run `f` with `pins` kept (so no epilogue fusion rewrites the nodes that produce them),
    /// then unkeep the ones that were not kept before.
    fn pinned_while<T>(&mut self, pins: &[Var], f: impl FnOnce(&mut Graph) -> T) -> T {
        let before: HashSet<Var> = self.kept.iter().copied().collect();
        let added: HashSet<Var> = pins.iter().copied().filter(|v| !before.contains(v)).collect();
        self.kept.extend(added.iter().copied());
        let out = f(self);
        self.kept.retain(|v| !added.contains(v));
        out
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

/// Gradients that will still be read after node `i`'s backward: those of tensors whose
/// producers are not processed yet (earlier nodes) and the results (`wrt`).
fn live_gradients(g: &Graph, grads: &HashMap<Var, Var>, i: usize, wrt: &HashSet<Var>) -> Vec<Var> {
    grads.iter().filter(|(k, _)| wrt.contains(k) || matches!(g.info(**k).source, Source::Node(p) if p < i)).map(|(_, v)| *v).collect()
}
