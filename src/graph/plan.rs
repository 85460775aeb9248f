//! The plan compiler: a graph becomes one ordered list of dispatches whose pipelines, bind
//! groups, uniforms and memory are all created once. A step is one command encoder, one
//! compute pass and one `submit`.

use super::arena::{self, Block};
use super::lower::{Bind, Cmd, Lowering};
use super::{DType, Graph, Source, TensorInfo, Var};
use crate::error::{Error, Result};
use crate::gpu::{Context, ReadbackSlot};
use crate::store::{Store, Which};
use std::collections::{HashMap, HashSet};
use std::fmt;

#[cfg(not(target_arch = "wasm32"))]
fn web_time_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// What a compiled plan costs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Graph nodes kept after dead-code elimination.
    pub nodes: usize,
    /// Compute dispatches per step.
    pub dispatches: usize,
    /// Bytes of the arena holding intermediate tensors, with reuse by liveness.
    pub arena_bytes: u64,
    /// Bytes those intermediates would take without reuse.
    pub naive_bytes: u64,
    /// Plan-owned persistent bytes (inputs, constants, kept outputs).
    pub io_bytes: u64,
    /// Distinct pipelines the plan uses.
    pub pipelines: usize,
}

impl fmt::Display for PlanStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} dispatches/step, {} pipelines, arena {:.2} MiB (naive {:.2} MiB, {:.1}x reuse), io {:.2} MiB",
            self.dispatches,
            self.pipelines,
            self.arena_bytes as f64 / 1048576.0,
            self.naive_bytes as f64 / 1048576.0,
            self.naive_bytes as f64 / self.arena_bytes.max(1) as f64,
            self.io_bytes as f64 / 1048576.0
        )
    }
}

/// Where a tensor's bytes are.
#[derive(Clone, Debug)]
struct Slot {
    buffer: wgpu::Buffer,
    offset: u64,
    bytes: u64,
}

struct CompiledCmd {
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// A compiled, replayable step.
pub struct Plan {
    ctx: Context,
    name: String,
    cmds: Vec<CompiledCmd>,
    /// Storage of every tensor the host may write or read.
    slots: HashMap<Var, Slot>,
    infos: Vec<TensorInfo>,
    inputs: HashMap<String, Var>,
    stats: PlanStats,
    /// Labels of the nodes behind each dispatch (profiling, debugging).
    cmd_labels: Vec<String>,
    /// Name (with its scopes) of each dispatch's node's first output, for profiles.
    cmd_scopes: Vec<String>,
    /// Store state (by id) to the var that refers to it in this plan's graph.
    state_vars: HashMap<usize, Var>,
    // Keep the buffers alive for as long as the bind groups.
    _arena: Vec<wgpu::Buffer>,
    _io: Vec<wgpu::Buffer>,
    _uniforms: wgpu::Buffer,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plan({}: {})", self.name, self.stats)
    }
}

/// WebGPU rejects a dispatch whose storage bindings overlap when either is writable, and all of
/// ours are `read_write`. An op that reads one tensor through two bindings (`x @ x^T`,
/// `x * x`) gets a copy of it, made just before, for the later binding. Ops that write an input
/// in place are left alone: their bindings must already be distinct (the overlap check in
/// `compile` says so if not).
fn copy_repeated_reads(g: &Graph, cmds: Vec<Cmd>, scratch: &mut Vec<(usize, u64, String)>) -> Vec<Cmd> {
    use crate::gpu::{BindingKind, KernelKey};
    use crate::tensor::MAX_RANK;
    let mut out = Vec::with_capacity(cmds.len());
    for mut c in cmds {
        if g.nodes[c.node].op.writes().is_empty() {
            for j in 1..c.binds.len() {
                let Bind::T(v) = c.binds[j] else { continue };
                let root = g.root(v);
                if !c.binds[..j].iter().any(|b| matches!(*b, Bind::T(u) if g.root(u) == root)) {
                    continue;
                }
                // Only inputs are read: an output bound twice is a placeholder mistake, which
                // the overlap check reports (a copy would swallow the writes).
                if g.nodes[c.node].outputs.iter().any(|&o| g.root(o) == root) {
                    continue;
                }
                let info = g.info(v);
                let n = info.numel();
                scratch.push((c.node, info.bytes(), format!("copy of '{}'", info.name)));
                let copy = Bind::Scratch(scratch.len() - 1);
                let mut key = KernelKey::new("layout", "gather");
                key.bindings = vec![(0, BindingKind::Uniform), (1, BindingKind::ReadWrite), (2, BindingKind::ReadWrite)];
                let params = super::Params::new().u(n).u(1).u(0).u(0).arr(&[n], MAX_RANK).arr(&[1], MAX_RANK).0;
                out.push(Cmd { node: c.node, key, params, binds: vec![Bind::T(v), copy], groups: super::lower::grid_for(n, 256) });
                c.binds[j] = copy;
            }
        }
        out.push(c);
    }
    out
}

/// A readback in flight for several tensors (see [`Plan::request`]).
pub struct Pending {
    slot: ReadbackSlot,
    parts: Vec<(Var, u64, u64, DType)>,
}

impl Pending {
    fn split(&self, bytes: &[u8]) -> Vec<Vec<f32>> {
        self.parts
            .iter()
            .map(|&(_, off, len, dt)| {
                let b = &bytes[off as usize..(off + len) as usize];
                match dt {
                    DType::F32 => bytemuck::pod_collect_to_vec(b),
                    DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(b).into_iter().map(|v| v as f32).collect(),
                }
            })
            .collect()
    }

    /// The values (one vector per requested tensor) if they have arrived; never blocks.
    pub fn try_take(&mut self, ctx: &Context) -> Result<Option<Vec<Vec<f32>>>> {
        Ok(self.slot.try_take(ctx)?.map(|b| self.split(&b)))
    }

    /// Await the values.
    pub async fn take(mut self, ctx: &Context) -> Result<Vec<Vec<f32>>> {
        let b = self.slot.take(ctx).await?;
        Ok(self.split(&b))
    }

    /// Block until the values are here (native; only where the caller asks to wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(mut self, ctx: &Context) -> Result<Vec<Vec<f32>>> {
        let b = self.slot.wait(ctx)?;
        Ok(self.split(&b))
    }
}

fn make_buffers(ctx: &Context, sizes: &[u64], label: &str) -> Vec<wgpu::Buffer> {
    sizes
        .iter()
        .map(|&s| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: s.max(16).div_ceil(16) * 16,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .collect()
}

impl Plan {
    /// Compile `graph` against `store` (uploaded to the GPU first if needed).
    pub fn compile(ctx: &Context, graph: &Graph, store: &mut Store, name: &str) -> Result<Plan> {
        store.upload(ctx)?;
        let g = graph;
        let align = ctx.offset_align();
        let page = ctx.max_binding() / align * align;

        // 1. Dead-code elimination: keep nodes that write state or feed kept tensors / grads.
        let mut wanted: HashSet<Var> = g.kept.iter().copied().collect();
        wanted.extend(g.param_grads.iter().map(|(_, v)| *v));
        let mut needed = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if !n.op.writes().is_empty() || n.outputs.iter().any(|o| wanted.contains(o)) {
                needed[i] = true;
                wanted.extend(n.inputs.iter().copied());
            }
        }

        // 2. Lower the needed nodes in order.
        let mut low = Lowering::new(ctx);
        for (i, n) in g.nodes.iter().enumerate() {
            if needed[i] && n.op.alias_of().is_none() {
                low.node = i;
                n.op.lower(&g.node_ref(i), &mut low)?;
            }
        }
        let Lowering { cmds, mut scratch, .. } = low;
        let cmds = copy_repeated_reads(g, cmds, &mut scratch);

        // 3. Decide where every touched tensor lives.
        let grad_of: HashMap<Var, &crate::store::Param> = g.param_grads.iter().map(|(p, v)| (g.root(*v), p)).collect();
        let kept: HashSet<Var> = g.kept.iter().map(|&v| g.root(v)).collect();
        let mut slots: HashMap<Var, Slot> = HashMap::new();
        // Arena blocks: tensors (by root var) and scratch (by index).
        let mut life: HashMap<Var, (usize, usize)> = HashMap::new();
        let mut scratch_life: Vec<(usize, usize)> = vec![(usize::MAX, 0); scratch.len()];
        let mut io_vars: Vec<Var> = Vec::new();
        let touch = |v: Var, i: usize, life: &mut HashMap<Var, (usize, usize)>| {
            let e = life.entry(v).or_insert((i, i));
            e.0 = e.0.min(i);
            e.1 = e.1.max(i);
        };
        for (ci, c) in cmds.iter().enumerate() {
            for b in &c.binds {
                match *b {
                    Bind::T(v) => touch(g.root(v), ci, &mut life),
                    Bind::Scratch(s) => {
                        scratch_life[s].0 = scratch_life[s].0.min(ci);
                        scratch_life[s].1 = scratch_life[s].1.max(ci);
                    }
                }
            }
        }
        // Kept tensors and every input must exist even if no command touches them (the host
        // writes inputs whether or not this plan happens to read them).
        let inputs_all = (0..g.tensors.len() as u32).map(Var).filter(|&v| matches!(g.info(v).source, Source::Input { .. }));
        for v in kept.iter().copied().chain(inputs_all) {
            life.entry(v).or_insert((0, 0));
        }
        let mut arena_vars: Vec<Var> = Vec::new();
        let mut vars: Vec<Var> = life.keys().copied().collect();
        vars.sort();
        for v in vars {
            let info = g.info(v);
            match &info.source {
                Source::Param(p) => {
                    let (buffer, l) = store.param_binding(p, Which::Value)?;
                    slots.insert(v, Slot { buffer, offset: l.offset, bytes: l.bytes });
                }
                Source::State(s) => {
                    let (buffer, l) = store.state_binding(s)?;
                    slots.insert(v, Slot { buffer, offset: l.offset, bytes: l.bytes });
                }
                Source::Pool { pool, page } => {
                    let pages = store.pages(pool.which())?;
                    let (buffer, bytes) = pages.get(*page).cloned().ok_or_else(|| Error::usage(format!("{pool:?} has no page {page}")))?;
                    slots.insert(v, Slot { buffer, offset: 0, bytes: bytes.max(4) });
                }
                Source::Input { .. } | Source::Const(_) => io_vars.push(v),
                Source::Node(_) if grad_of.contains_key(&v) => {
                    let (buffer, l) = store.param_binding(grad_of[&v], Which::Grad)?;
                    slots.insert(v, Slot { buffer, offset: l.offset, bytes: l.bytes });
                }
                Source::Node(_) if kept.contains(&v) => io_vars.push(v),
                Source::Node(_) => arena_vars.push(v),
            }
        }
        for &v in arena_vars.iter().chain(&io_vars) {
            let info = g.info(v);
            if info.bytes() > page {
                return Err(Error::TooLarge {
                    tensor: info.name.clone(),
                    bytes: info.bytes(),
                    limit_name: "max storage binding size",
                    limit: page,
                });
            }
        }
        for (i, (_, bytes, nm)) in scratch.iter().enumerate() {
            if *bytes > page {
                return Err(Error::TooLarge {
                    tensor: format!("scratch '{nm}'"),
                    bytes: *bytes,
                    limit_name: "max storage binding size",
                    limit: page,
                });
            }
            if scratch_life[i].0 == usize::MAX {
                scratch_life[i] = (0, 0);
            }
        }

        // 4. Arena: intermediates and scratch share pages by liveness.
        let mut blocks: Vec<Block> = arena_vars
            .iter()
            .map(|&v| {
                let (first, last) = life[&v];
                Block { bytes: g.info(v).bytes(), first, last }
            })
            .collect();
        blocks.extend(scratch.iter().zip(&scratch_life).map(|((_, bytes, _), &(first, last))| Block { bytes: *bytes, first, last }));
        let naive_bytes: u64 = blocks.iter().map(|b| b.bytes.div_ceil(align) * align).sum();
        let (offsets, arena_pages) = arena::allocate(&blocks, page, align);
        // Persistent plan memory: everything alive for the whole plan.
        let io_blocks: Vec<Block> = io_vars.iter().map(|&v| Block { bytes: g.info(v).bytes(), first: 0, last: usize::MAX }).collect();
        let (io_offsets, io_pages) = arena::allocate(&io_blocks, page, align);

        let label = format!("plan {name}");
        let (arena_bufs, io_bufs) = ctx.scoped(&format!("allocating memory for {label}"), || {
            (make_buffers(ctx, &arena_pages, "arena"), make_buffers(ctx, &io_pages, "io"))
        })?;
        let mut scratch_slots = Vec::with_capacity(scratch.len());
        for (i, off) in offsets.iter().enumerate() {
            let slot = Slot { buffer: arena_bufs[(off / page) as usize].clone(), offset: off % page, bytes: blocks[i].bytes };
            if i < arena_vars.len() {
                slots.insert(arena_vars[i], slot);
            } else {
                scratch_slots.push(slot);
            }
        }
        for (i, off) in io_offsets.iter().enumerate() {
            let v = io_vars[i];
            slots.insert(v, Slot { buffer: io_bufs[(off / page) as usize].clone(), offset: off % page, bytes: g.info(v).bytes() });
        }
        // Constants are written once.
        for &v in &io_vars {
            if let Source::Const(bits) = &g.info(v).source {
                let s = &slots[&v];
                ctx.queue.write_buffer(&s.buffer, s.offset, bytemuck::cast_slice(bits));
            }
        }

        // 5. Uniforms, pipelines and bind groups, created once.
        let ualign = ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let mut ubytes: Vec<u8> = Vec::new();
        let mut uoffs = Vec::with_capacity(cmds.len());
        for c in &cmds {
            let off = (ubytes.len() as u64).div_ceil(ualign) * ualign;
            ubytes.resize(off as usize, 0);
            uoffs.push(off);
            ubytes.extend_from_slice(bytemuck::cast_slice(&c.params));
            let len = (c.params.len() * 4).max(16).div_ceil(16) * 16;
            ubytes.resize(off as usize + len, 0);
        }
        let ubuf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniforms"),
            size: (ubytes.len() as u64).max(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue.write_buffer(&ubuf, 0, &ubytes);

        let resolve = |b: &Bind| -> &Slot {
            match *b {
                Bind::T(v) => &slots[&g.root(v)],
                Bind::Scratch(s) => &scratch_slots[s],
            }
        };
        let mut compiled = Vec::with_capacity(cmds.len());
        let mut cmd_labels = Vec::with_capacity(cmds.len());
        let mut cmd_scopes = Vec::with_capacity(cmds.len());
        let mut keys = HashSet::new();
        for (ci, c) in cmds.iter().enumerate() {
            let Cmd { key, params, binds, groups, node } = c;
            if groups.iter().any(|&n| n as u64 > super::lower::MAX_GROUPS) {
                return Err(Error::usage(format!(
                    "{}::{} dispatches {groups:?} workgroups, over the limit of 65535",
                    key.shader, key.entry
                )));
            }
            let pipeline = ctx.pipeline(key)?;
            let layout = ctx.bind_layout(key);
            let ulen = (params.len() as u64 * 4).max(16).div_ceil(16) * 16;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &ubuf,
                    offset: uoffs[ci],
                    size: std::num::NonZeroU64::new(ulen),
                }),
            }];
            let bound: Vec<&Slot> = binds.iter().map(resolve).collect();
            // WebGPU forbids overlapping storage bindings in one dispatch when either is
            // writable (all of ours are read_write); browsers reject the dispatch while native
            // wgpu lets it through. Catch it here, on every platform, with the op's name.
            for i in 0..bound.len() {
                for j in i + 1..bound.len() {
                    let (a, b) = (bound[i], bound[j]);
                    if a.buffer == b.buffer && a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes {
                        return Err(Error::usage(format!(
                            "{}::{} for {} binds overlapping memory at bindings {} and {}; WebGPU forbids aliasing \
                             writable storage bindings within one dispatch (browsers reject it): bind a distinct buffer",
                            key.shader,
                            key.entry,
                            g.nodes[*node].op.name(),
                            i + 1,
                            j + 1
                        )));
                    }
                }
            }
            for (bi, s) in bound.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: bi as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &s.buffer,
                        offset: s.offset,
                        size: std::num::NonZeroU64::new(s.bytes.div_ceil(4) * 4),
                    }),
                });
            }
            let bind_group = ctx.scoped(&format!("binding {}::{} for {}", key.shader, key.entry, g.nodes[*node].op.name()), || {
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(key.entry), layout: &layout, entries: &entries })
            })?;
            keys.insert(key.clone());
            cmd_labels.push(format!("{}:{}", g.nodes[*node].op.name(), key.entry));
            cmd_scopes.push(g.nodes[*node].outputs.first().map(|v| g.tensors[v.index()].name.clone()).unwrap_or_default());
            compiled.push(CompiledCmd { pipeline, bind_group, groups: *groups });
        }

        let inputs =
            io_vars.iter().filter(|&&v| matches!(g.info(v).source, Source::Input { .. })).map(|&v| (g.info(v).name.clone(), v)).collect();
        let stats = PlanStats {
            nodes: needed.iter().filter(|&&n| n).count(),
            dispatches: compiled.len(),
            arena_bytes: arena_pages.iter().sum(),
            naive_bytes,
            io_bytes: io_pages.iter().sum(),
            pipelines: keys.len(),
        };
        // Every var the host may address: map non-root (alias) vars to their root's slot.
        let mut all_slots = HashMap::new();
        for v in (0..g.tensors.len() as u32).map(Var) {
            if let Some(s) = slots.get(&g.root(v)) {
                let bytes = g.info(v).bytes();
                all_slots.insert(v, Slot { bytes, ..s.clone() });
            }
        }
        ctx.check(&format!("compiling {label}"))?;
        let state_vars = (0..g.tensors.len() as u32)
            .map(Var)
            .filter_map(|v| match &g.info(v).source {
                Source::State(s) if all_slots.contains_key(&v) => Some((s.id(), v)),
                _ => None,
            })
            .collect();
        Ok(Plan {
            state_vars,
            ctx: ctx.clone(),
            name: name.to_string(),
            cmds: compiled,
            slots: all_slots,
            infos: g.tensors.clone(),
            inputs,
            stats,
            cmd_labels,
            cmd_scopes,
            _arena: arena_bufs,
            _io: io_bufs,
            _uniforms: ubuf,
        })
    }

    pub fn stats(&self) -> &PlanStats {
        &self.stats
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    pub fn dispatch_labels(&self) -> &[String] {
        &self.cmd_labels
    }
    /// Per dispatch, the scoped name of its node's first output (e.g. `teacher/...`).
    pub fn dispatch_scopes(&self) -> &[String] {
        &self.cmd_scopes
    }

    /// The var of a stored state tensor in this plan (to read it with [`Self::request`]).
    pub fn state_var(&self, s: &crate::store::StateRef) -> Option<Var> {
        self.state_vars.get(&s.id()).copied()
    }

    /// Look up an input by the name given in the graph.
    pub fn input(&self, name: &str) -> Result<Var> {
        self.inputs.get(name).copied().ok_or_else(|| Error::usage(format!("plan '{}' has no input named '{name}'", self.name)))
    }

    fn slot(&self, v: Var) -> Result<&Slot> {
        self.slots.get(&v).ok_or_else(|| {
            let name = self.infos.get(v.index()).map(|t| t.name.as_str()).unwrap_or("?");
            Error::usage(format!("tensor '{name}' is not addressable in plan '{}': mark it with Graph::keep", self.name))
        })
    }

    fn check_len(&self, v: Var, n: usize, dtype: DType) -> Result<&TensorInfo> {
        let info = &self.infos[v.index()];
        if info.dtype != dtype {
            return Err(Error::BadInput { tensor: info.name.clone(), msg: format!("expects {:?} data, got {dtype:?}", info.dtype) });
        }
        if info.numel() != n {
            return Err(Error::BadInput {
                tensor: info.name.clone(),
                msg: format!("expects {} values (shape {:?}), got {n}", info.numel(), info.shape),
            });
        }
        Ok(info)
    }

    /// Write f32 values into an input (takes effect for the next submitted step).
    pub fn write(&self, v: Var, data: &[f32]) -> Result<()> {
        self.check_len(v, data.len(), DType::F32)?;
        let s = self.slot(v)?;
        self.ctx.queue.write_buffer(&s.buffer, s.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Write u32 values (labels are checked against their class count).
    pub fn write_u32(&self, v: Var, data: &[u32]) -> Result<()> {
        let info = self.check_len(v, data.len(), DType::U32)?;
        if let Source::Input { max: Some(max) } = info.source {
            if let Some((i, &bad)) = data.iter().enumerate().find(|&(_, &l)| l > max) {
                return Err(Error::BadInput {
                    tensor: info.name.clone(),
                    msg: format!("label {bad} at position {i} is out of range 0..={max} ({} classes)", max + 1),
                });
            }
        }
        let s = self.slot(v)?;
        self.ctx.queue.write_buffer(&s.buffer, s.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// The buffer, byte offset and shape of a tensor, for hosts that bind it directly.
    pub fn buffer_of(&self, v: Var) -> Result<(wgpu::Buffer, u64, Vec<usize>)> {
        let s = self.slot(v)?;
        Ok((s.buffer.clone(), s.offset, self.infos[v.index()].shape.clone()))
    }

    /// Record one step into `encoder` (hosts use their own encoder; nothing is submitted).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_n(encoder, 1)
    }

    /// Record `n` consecutive steps into one compute pass.
    pub fn encode_n(&self, encoder: &mut wgpu::CommandEncoder, n: usize) {
        self.encode_n_timed(encoder, n, None)
    }

    /// [`Self::encode_n`] with GPU timestamps written at the start and end of the pass
    /// (needs `TIMESTAMP_QUERY`).
    pub fn encode_n_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        n: usize,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(&self.name), timestamp_writes });
        for _ in 0..n {
            for c in &self.cmds {
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[]);
                pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
            }
        }
    }

    /// Run one step: one encoder, one submit. Does not wait for the GPU.
    pub fn step(&self) -> Result<()> {
        self.run(1)
    }

    /// Run `n` steps in one submit.
    pub fn run(&self, n: usize) -> Result<()> {
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(&self.name) });
        self.encode_n(&mut enc, n);
        self.ctx.scoped(&format!("running plan '{}'", self.name), || self.ctx.queue.submit([enc.finish()]))?;
        Ok(())
    }

    /// Submit each dispatch on its own (for the dispatch-cost benchmark only).
    #[doc(hidden)]
    pub fn step_unbatched(&self) -> Result<()> {
        for c in &self.cmds {
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[]);
                pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
            }
            self.ctx.queue.submit([enc.finish()]);
        }
        self.ctx.check("running a plan dispatch by dispatch")
    }

    /// Submit each dispatch on its own and wait for it (for the dispatch-cost benchmark only).
    #[doc(hidden)]
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_unbatched_waiting(&self) -> Result<()> {
        for c in &self.cmds {
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[]);
                pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
            }
            self.ctx.queue.submit([enc.finish()]);
            self.ctx.wait()?;
        }
        self.ctx.check("running a plan dispatch by dispatch")
    }

    /// Seconds each dispatch takes when run alone (submitted and waited on one by one), with
    /// its label (`op:entry`), for finding where a step's time goes. Includes the per-submit
    /// cost (PLATFORM.md: 130-280 us on lavapipe), so it is for kernels that take milliseconds.
    #[doc(hidden)]
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_dispatches(&self) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::with_capacity(self.cmds.len());
        for (c, label) in self.cmds.iter().zip(&self.cmd_labels) {
            let t = web_time_now();
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                pass.set_pipeline(&c.pipeline);
                pass.set_bind_group(0, &c.bind_group, &[]);
                pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
            }
            self.ctx.queue.submit([enc.finish()]);
            self.ctx.wait()?;
            out.push((label.clone(), t.elapsed().as_secs_f64()));
        }
        self.ctx.check("profiling a plan")?;
        Ok(out)
    }

    /// Start reading several tensors back (one copy, one mapping). Take the values later with
    /// [`Pending::try_take`] (never blocks), `take().await`, or `wait()` (native).
    pub fn request(&self, vars: &[Var]) -> Result<Pending> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        for &v in vars {
            let s = self.slot(v)?;
            let bytes = s.bytes.div_ceil(4) * 4;
            parts.push((v, total, s.bytes, self.infos[v.index()].dtype));
            total += bytes;
        }
        let mut slot = ReadbackSlot::new(&self.ctx, total, "plan readback");
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        for (i, &v) in vars.iter().enumerate() {
            let s = self.slot(v)?;
            enc.copy_buffer_to_buffer(&s.buffer, s.offset, slot.buffer(), parts[i].1, s.bytes.div_ceil(4) * 4);
        }
        self.ctx.scoped("copying results for readback", || self.ctx.queue.submit([enc.finish()]))?;
        slot.start();
        Ok(Pending { slot, parts })
    }

    /// Read one tensor, awaiting the GPU.
    pub async fn read_async(&self, v: Var) -> Result<Vec<f32>> {
        Ok(self.request(&[v])?.take(&self.ctx).await?.remove(0))
    }

    /// Read one tensor, blocking until the GPU is done (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, v: Var) -> Result<Vec<f32>> {
        Ok(self.request(&[v])?.wait(&self.ctx)?.remove(0))
    }

    /// Read a U32 tensor exactly (no float conversion).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, v: Var) -> Result<Vec<u32>> {
        let s = self.slot(v)?;
        let bytes = pollster::block_on(crate::gpu::Readback::read(&self.ctx, &s.buffer, s.offset, s.bytes))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
