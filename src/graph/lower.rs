//! What an op emits when it is lowered: dispatches of WGSL kernels over tensors.
//!
//! Binding convention (every kernel in `shaders/` follows it): binding 0 is the uniform
//! parameter block, bindings 1..=n are the storage buffers in the order the op lists them.
//! All storage bindings are `read_write`: tensors share arena buffers, and WebGPU forbids
//! read-only and writable bindings of the same buffer in one dispatch. For the same reason no
//! two bindings of one dispatch may overlap: a binding a kernel ignores gets
//! [`Lowering::unused`], and a tensor read through two bindings (`x @ x^T`) gets a copy for the
//! second (the plan compiler does that and rejects any overlap left).

use super::{NodeRef, Op, Var};
use crate::gpu::{BindingKind, Context, KernelKey, KernelProfile};
use std::sync::Arc;

/// A storage binding of a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// A tensor of the graph.
    T(Var),
    /// Scratch memory of the node being lowered (see [`Lowering::scratch`]).
    Scratch(usize),
    /// Slice `part` of `parts` equal slices of a tensor's bytes (rows of its leading axis).
    /// Ops never bind it themselves: the plan compiler rewrites the bindings of a node it
    /// runs as batch slices ([`BatchSplit`]).
    Part { var: Var, part: u32, parts: u32 },
}

/// How one tensor of a node takes part when the node runs as slices of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitRole {
    /// Cut along its leading axis: slice `j` of `k` reads or writes rows `j*L/k..(j+1)*L/k`.
    Rows,
    /// Read whole by every slice (weights, biases, broadcast operands). Inputs only.
    Whole,
    /// An output each slice contributes a partial sum to (weight gradients); the plan adds
    /// the slices' results. Outputs only.
    Sum,
}

/// An op's answer to [`Op::batch_split`]: the role of each input and output, and what to
/// lower for one slice. Build it with [`BatchSplit::rows`] and the modifiers.
#[derive(Clone, Debug)]
pub struct BatchSplit {
    pub inputs: Vec<SplitRole>,
    pub outputs: Vec<SplitRole>,
    /// Each slice holds a multiple of this many leading rows of every `Rows` tensor
    /// (attention with a bias of G groups: G, so that batch b still uses bias[b % G]).
    pub unit: usize,
    /// The op lowered for one slice when it is not the node's own (ops that keep shapes in
    /// their fields instead of reading them from the [`NodeRef`]).
    pub op: Option<Arc<dyn Op>>,
}

impl BatchSplit {
    /// Every input and output of `n` cut along its leading axis.
    pub fn rows(n: &NodeRef) -> Self {
        BatchSplit { inputs: vec![SplitRole::Rows; n.inputs.len()], outputs: vec![SplitRole::Rows; n.outputs.len()], unit: 1, op: None }
    }
    /// Inputs `idx` read whole by every slice (indices past the node's inputs, such as an
    /// absent optional bias, are ignored).
    pub fn whole(mut self, idx: &[usize]) -> Self {
        for &i in idx {
            if let Some(r) = self.inputs.get_mut(i) {
                *r = SplitRole::Whole;
            }
        }
        self
    }
    /// Outputs `idx` summed over the slices.
    pub fn sum(mut self, idx: &[usize]) -> Self {
        for &i in idx {
            if let Some(r) = self.outputs.get_mut(i) {
                *r = SplitRole::Sum;
            }
        }
        self
    }
    /// Slices hold a multiple of `rows` leading rows.
    pub fn unit(mut self, rows: usize) -> Self {
        self.unit = rows.max(1);
        self
    }
    /// Lower `op` for each slice instead of the node's own op.
    pub fn op(mut self, op: impl Op + 'static) -> Self {
        self.op = Some(Arc::new(op));
        self
    }
}

/// The uniform parameter block of one dispatch, as 32-bit words.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }
    pub fn u(mut self, v: usize) -> Self {
        self.0.push(u32::try_from(v).expect("kernel parameter exceeds u32"));
        self
    }
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    /// Pad to a multiple of 4 words, so a `vec4<u32>` array can follow.
    pub fn align4(mut self) -> Self {
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }
    /// Append `vals` as a fixed-size `array<vec4<u32>, N/4>` of `n` words (zero padded).
    pub fn arr(mut self, vals: &[usize], n: usize) -> Self {
        assert!(vals.len() <= n, "kernel parameter array too long");
        self = self.align4();
        for i in 0..n {
            self = self.u(vals.get(i).copied().unwrap_or(0));
        }
        self
    }
}

/// One recorded dispatch.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub node: usize,
    pub key: KernelKey,
    pub params: Vec<u32>,
    pub binds: Vec<Bind>,
    pub groups: [u32; 3],
}

/// Collects the dispatches of each node, in order.
pub struct Lowering<'a> {
    pub ctx: &'a Context,
    pub(crate) cmds: Vec<Cmd>,
    /// Scratch buffers: (node, bytes, name).
    pub(crate) scratch: Vec<(usize, u64, String)>,
    pub(crate) node: usize,
}

/// Largest workgroup count in one dimension WebGPU guarantees.
pub const MAX_GROUPS: u64 = 65535;

impl<'a> Lowering<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Self {
        Lowering { ctx, cmds: Vec::new(), scratch: Vec::new(), node: 0 }
    }

    pub fn profile(&self) -> &KernelProfile {
        &self.ctx.profile
    }

    /// Dispatch `entry` of `shader` with the given parameters and storage bindings.
    pub fn dispatch(&mut self, shader: &'static str, entry: &'static str, params: Params, binds: &[Bind], groups: [u32; 3]) {
        self.dispatch_key(KernelKey::new(shader, entry), params, binds, groups)
    }

    /// Like [`Self::dispatch`], for an entry point that reduces across its workgroup through
    /// the `wg_reduce_*` header: from the family `{shader}_sg` (the same file over subgroup
    /// operations) where the profile has subgroups, else from `shader` (the shared-memory tree).
    pub fn dispatch_wg_reduce(&mut self, shader: &'static str, entry: &'static str, params: Params, binds: &[Bind], groups: [u32; 3]) {
        let shader = if self.profile().subgroups { subgroup_family(shader) } else { shader };
        self.dispatch(shader, entry, params, binds, groups)
    }

    /// Like [`Self::dispatch`] with override constants already set in `key`.
    pub fn dispatch_key(&mut self, mut key: KernelKey, params: Params, binds: &[Bind], groups: [u32; 3]) {
        key.bindings =
            std::iter::once((0, BindingKind::Uniform)).chain((0..binds.len()).map(|i| (i as u32 + 1, BindingKind::ReadWrite))).collect();
        self.cmds.push(Cmd { node: self.node, key, params: params.0, binds: binds.to_vec(), groups });
    }

    /// Temporary memory for this node only (partial sums, indices).
    pub fn scratch(&mut self, elems: usize, name: &str) -> Bind {
        self.scratch.push((self.node, (elems.max(1) * 4) as u64, name.to_string()));
        Bind::Scratch(self.scratch.len() - 1)
    }

    /// A placeholder for a binding the kernel does not touch in this configuration (no bias,
    /// no affine weights). Never pass another tensor of the dispatch instead: WebGPU rejects
    /// two overlapping read_write bindings in one dispatch (native wgpu does not check).
    pub fn unused(&mut self) -> Bind {
        self.scratch(1, "unused binding")
    }
}

/// The registered subgroup twin `{shader}_sg` of a family (a `&'static` name, as kernel keys
/// hold). Missing is a bug in the registry (`src/gpu/kernels.rs`), caught by any test that
/// lowers the op under a profile with subgroups.
fn subgroup_family(shader: &str) -> &'static str {
    crate::gpu::shader_names()
        .into_iter()
        .find(|n| n.strip_suffix("_sg") == Some(shader))
        .unwrap_or_else(|| panic!("shader family '{shader}' has no subgroup twin '{shader}_sg' in src/gpu/kernels.rs"))
}

/// Workgroup grid for `n` workgroups: 2-D when `n` exceeds one dimension's limit. Kernels
/// recover the linear id with `wg_linear` from the prelude.
pub fn grid(n: usize) -> [u32; 3] {
    let n = n.max(1) as u64;
    if n <= MAX_GROUPS {
        [n as u32, 1, 1]
    } else {
        let y = n.div_ceil(MAX_GROUPS);
        let x = n.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

/// Grid for one thread per element with workgroups of `wg` threads.
pub fn grid_for(elems: usize, wg: usize) -> [u32; 3] {
    grid(elems.div_ceil(wg))
}
