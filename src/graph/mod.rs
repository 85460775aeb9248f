//! Symbolic graphs with static shapes.
//!
//! Model code calls ops on [`Var`]s; nothing runs. [`autodiff`] appends the backward ops to the
//! same graph, optimizers append their update ops, and [`plan`] compiles the result into one
//! ordered list of dispatches that is replayed every step.

mod arena;
pub mod autodiff;
pub mod cpu;
pub mod lower;
pub mod plan;

/// The element type lives in [`crate::tensor`] (the store needs it too); re-exported here
/// where graph code has always found it.
pub use crate::tensor::DType;
pub use cpu::CpuTensor;
pub use lower::{BatchSplit, Bind, Lowering, Params, SplitRole};
pub use plan::{Plan, PlanStats};

use crate::error::{Error, Result};
use crate::store::{Param, Pool, StateRef};
use crate::tensor::check_shape;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A symbolic tensor: an index into its graph.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) u32);

impl fmt::Debug for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

impl Var {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a tensor's values come from, which decides where it lives.
#[derive(Clone, Debug)]
pub enum Source {
    /// Written by the host (`Plan::write`) and kept across steps. `max` bounds U32 values
    /// (class labels), checked when written.
    Input { max: Option<u32> },
    /// Values fixed at build time, uploaded once when the plan is compiled.
    Const(Arc<Vec<u32>>),
    /// A trainable parameter in the store (`Store::param`).
    Param(Param),
    /// Non-trainable state in the store: running statistics, counters, frozen weights.
    State(StateRef),
    /// A whole page of a store pool: parameters, gradients, or an optimizer slot. Optimizers
    /// and the EMA update work on pages with chunk tables rather than tensor by tensor.
    Pool { pool: Pool, page: usize },
    /// Produced by a node; lives in the arena while it is needed (or shares its input's
    /// memory when the op is an alias, like reshape).
    Node(usize),
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub source: Source,
    pub name: String,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
}

/// A tensor as an op sees it: handle, shape, dtype.
#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub var: Var,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorDesc {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What an op node sees of itself while it differentiates or lowers.
#[derive(Clone, Debug)]
pub struct NodeRef {
    pub index: usize,
    pub inputs: Vec<TensorDesc>,
    pub outputs: Vec<TensorDesc>,
}

/// An operation: its gradient rule, its kernels, and its f64 reference (the unit DESIGN.md asks for).
pub trait Op: fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;

    /// Gradients of the inputs, given gradients of the outputs (`None` = zero). Adds ops to `g`.
    fn backward(&self, g: &mut Graph, n: &NodeRef, grads: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let _ = (g, grads);
        Err(Error::usage(format!("{} (node {}) has no gradient", self.name(), n.index)))
    }

    /// Record the dispatches that compute the outputs.
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()>;

    /// f64 reference of the forward pass, used by the tests.
    fn cpu(&self, n: &NodeRef, inputs: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let _ = inputs;
        Err(Error::usage(format!("{} (node {}) has no CPU reference", self.name(), n.index)))
    }

    /// Indices of inputs the op writes in place (state updates); their old values are read first.
    fn writes(&self) -> &[usize] {
        &[]
    }

    /// Floating-point operations of the forward computation (a multiply-add counts 2).
    fn flops(&self, n: &NodeRef) -> u64 {
        let _ = n;
        0
    }

    /// `Some(i)`: the single output is input `i` under another shape (no kernel, same memory).
    fn alias_of(&self) -> Option<usize> {
        None
    }

    /// May this node run as `parts` equal slices of the leading (batch) axis of its tensors?
    /// The plan compiler asks when one of them is over the storage-binding limit
    /// (docs/BATCH_SPLIT.md). `Some`: lowering the node (or the answer's `op`) with every
    /// [`lower::SplitRole::Rows`] tensor cut to `1/parts` of its leading axis computes that
    /// slice; the roles must not depend on `parts`. `None` (the default): the tensor is refused.
    fn batch_split(&self, n: &NodeRef, parts: usize) -> Option<lower::BatchSplit> {
        let _ = (n, parts);
        None
    }

    /// A variant of this op whose first output also adds one more input, appended last,
    /// F32 with as many elements as the output and read in its row-major order (the output's
    /// shape, or a reshape of it): `y = f(inputs) + addend`, in the same dispatch. Its
    /// backward gives that input the output's gradient (under the input's shape).
    /// `Graph::add_into` rewrites a node into this variant instead of adding an `add`
    /// dispatch (residuals, gradient sums).
    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        None
    }

    /// A variant of this op that also writes `u(y)` of its single output `y`, as one more
    /// output appended last (an activation epilogue: `fc1` and its GELU in one dispatch). Its
    /// backward receives that output's gradient too. `Graph::unary` asks for it.
    fn with_unary(&self, u: crate::ops::Unary) -> Option<Arc<dyn Op>> {
        let _ = u;
        None
    }

    /// A variant of this op whose first output `y` becomes `y * u'(x)`, with `x` one more
    /// input appended last, laid out as the addend of [`Op::with_addend`]: the gradient of a
    /// unary map fused into the op that produces the map's output gradient
    /// (`dX = (dY W) * gelu'(h)`). The variant may have no gradient of its own (it is made in
    /// backward passes). `Graph::unary_grad` asks for it.
    fn with_unary_grad(&self, u: crate::ops::Unary) -> Option<Arc<dyn Op>> {
        let _ = u;
        None
    }

    /// A variant of this op that leaves output `i` unwritten because nothing will read it
    /// (autodiff asks when it discards a gradient the op computed along with others it
    /// keeps: a linear layer's input gradient when the input is data).
    fn without_output(&self, i: usize) -> Option<Arc<dyn Op>> {
        let _ = i;
        None
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Arc<dyn Op>,
    pub inputs: Vec<Var>,
    pub outputs: Vec<Var>,
}

/// A graph under construction.
#[derive(Default, Clone, Debug)]
pub struct Graph {
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) nodes: Vec<Node>,
    /// Tensors the host wants to read after a step: kept out of the arena.
    pub(crate) kept: Vec<Var>,
    /// Final gradient of each parameter, to be written into the store's gradient slots.
    pub(crate) param_grads: Vec<(Param, Var)>,
    params_seen: HashMap<usize, Var>,
    states_seen: HashMap<usize, Var>,
    scope: Vec<String>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn info(&self, v: Var) -> &TensorInfo {
        &self.tensors[v.index()]
    }
    pub fn shape(&self, v: Var) -> &[usize] {
        &self.tensors[v.index()].shape
    }
    pub fn dtype(&self, v: Var) -> DType {
        self.tensors[v.index()].dtype
    }
    pub fn numel(&self, v: Var) -> usize {
        self.tensors[v.index()].numel()
    }
    pub fn desc(&self, v: Var) -> TensorDesc {
        let t = self.info(v);
        TensorDesc { var: v, shape: t.shape.clone(), dtype: t.dtype }
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Name prefix for tensors created inside `f` (shows up in errors and statistics).
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> T) -> T {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    fn scoped_name(&self, name: &str) -> String {
        if self.scope.is_empty() { name.to_string() } else { format!("{}.{name}", self.scope.join(".")) }
    }

    pub(crate) fn new_tensor(&mut self, shape: Vec<usize>, dtype: DType, source: Source, name: String) -> Var {
        let v = Var(self.tensors.len() as u32);
        self.tensors.push(TensorInfo { shape, dtype, source, name });
        v
    }

    /// A tensor the host writes before each step (images, labels, targets).
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        check_shape("input", name, shape)?;
        Ok(self.new_tensor(shape.to_vec(), DType::F32, Source::Input { max: None }, name.to_string()))
    }

    /// Class labels in `0..classes`, checked when written.
    pub fn labels(&mut self, name: &str, shape: &[usize], classes: usize) -> Result<Var> {
        check_shape("labels", name, shape)?;
        let max = Some(classes.saturating_sub(1) as u32);
        Ok(self.new_tensor(shape.to_vec(), DType::U32, Source::Input { max }, name.to_string()))
    }

    /// A raw u32 input (indices, packed bytes).
    pub fn input_u32(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        check_shape("input", name, shape)?;
        Ok(self.new_tensor(shape.to_vec(), DType::U32, Source::Input { max: None }, name.to_string()))
    }

    /// Constant f32 values baked into the plan.
    pub fn constant(&mut self, shape: &[usize], values: &[f32]) -> Result<Var> {
        check_shape("constant", "constant", shape)?;
        let n: usize = shape.iter().product();
        if values.len() != n {
            return Err(Error::shape("constant", format!("{} values for shape {shape:?} ({n} elements)", values.len())));
        }
        let bits = values.iter().map(|v| v.to_bits()).collect();
        let name = self.scoped_name("const");
        Ok(self.new_tensor(shape.to_vec(), DType::F32, Source::Const(Arc::new(bits)), name))
    }

    /// Constant u32 values baked into the plan (index tables).
    pub fn constant_u32(&mut self, shape: &[usize], values: &[u32]) -> Result<Var> {
        check_shape("constant", "constant", shape)?;
        let n: usize = shape.iter().product();
        if values.len() != n {
            return Err(Error::shape("constant", format!("{} values for shape {shape:?} ({n} elements)", values.len())));
        }
        let name = self.scoped_name("const");
        Ok(self.new_tensor(shape.to_vec(), DType::U32, Source::Const(Arc::new(values.to_vec())), name))
    }

    /// A trainable parameter of the store; the same parameter always gives the same `Var`.
    pub fn param(&mut self, p: &Param) -> Var {
        if let Some(&v) = self.params_seen.get(&p.id()) {
            return v;
        }
        let v = self.new_tensor(p.shape().to_vec(), DType::F32, Source::Param(p.clone()), p.name().to_string());
        self.params_seen.insert(p.id(), v);
        v
    }

    /// Non-trainable stored state (running stats, counters, frozen weights).
    pub fn state(&mut self, s: &StateRef) -> Var {
        if let Some(&v) = self.states_seen.get(&s.id()) {
            return v;
        }
        let v = self.new_tensor(s.shape().to_vec(), s.dtype(), Source::State(s.clone()), s.name().to_string());
        self.states_seen.insert(s.id(), v);
        v
    }

    /// A whole page of a store pool as a tensor of `elems` f32.
    pub fn pool_page(&mut self, pool: Pool, page: usize, elems: usize) -> Var {
        let name = format!("{pool:?} page {page}");
        self.new_tensor(vec![elems.max(1)], DType::F32, Source::Pool { pool, page }, name)
    }

    /// Parameters used by this graph, in first-use order.
    pub fn params(&self) -> Vec<(Param, Var)> {
        let mut out: Vec<(Param, Var)> = self
            .tensors
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.source {
                Source::Param(p) => Some((p.clone(), Var(i as u32))),
                _ => None,
            })
            .collect();
        out.sort_by_key(|(_, v)| *v);
        out
    }

    /// Add a node. `outputs` gives (shape, dtype) of each output. Returns the output vars.
    pub fn add_node(&mut self, op: Arc<dyn Op>, inputs: &[Var], outputs: &[(Vec<usize>, DType)]) -> Result<Vec<Var>> {
        let index = self.nodes.len();
        let mut outs = Vec::with_capacity(outputs.len());
        for (i, (shape, dtype)) in outputs.iter().enumerate() {
            check_shape(op.name(), "output", shape)?;
            let base = if outputs.len() == 1 { op.name().to_string() } else { format!("{}.{i}", op.name()) };
            let name = self.scoped_name(&format!("{base}#{index}"));
            outs.push(self.new_tensor(shape.clone(), *dtype, Source::Node(index), name));
        }
        for &w in op.writes() {
            match self.tensors[inputs[w].index()].source {
                Source::State(_) | Source::Param(_) | Source::Input { .. } | Source::Pool { .. } => {}
                _ => {
                    return Err(Error::usage(format!(
                        "{} writes in place into '{}', which is not stored state",
                        op.name(),
                        self.info(inputs[w]).name
                    )));
                }
            }
        }
        self.nodes.push(Node { op, inputs: inputs.to_vec(), outputs: outs.clone() });
        Ok(outs)
    }

    /// Single-output convenience for [`Self::add_node`].
    pub fn push(&mut self, op: impl Op + 'static, inputs: &[Var], shape: Vec<usize>, dtype: DType) -> Result<Var> {
        Ok(self.add_node(Arc::new(op), inputs, &[(shape, dtype)])?[0])
    }

    /// Mark a tensor to be readable after each step (`Plan::read`).
    pub fn keep(&mut self, v: Var) -> Var {
        if !self.kept.contains(&v) {
            self.kept.push(v);
        }
        v
    }

    pub fn node_ref(&self, index: usize) -> NodeRef {
        let n = &self.nodes[index];
        NodeRef {
            index,
            inputs: n.inputs.iter().map(|&v| self.desc(v)).collect(),
            outputs: n.outputs.iter().map(|&v| self.desc(v)).collect(),
        }
    }

    /// Total FLOPs of the graph's ops (multiply-add = 2).
    pub fn flops(&self) -> u64 {
        (0..self.nodes.len()).map(|i| self.nodes[i].op.flops(&self.node_ref(i))).sum()
    }

    /// Follow alias ops (reshape) to the tensor that owns the memory.
    pub fn root(&self, mut v: Var) -> Var {
        loop {
            let Source::Node(n) = self.info(v).source else { return v };
            let node = &self.nodes[n];
            match node.op.alias_of() {
                Some(i) => v = node.inputs[i],
                None => return v,
            }
        }
    }
}
