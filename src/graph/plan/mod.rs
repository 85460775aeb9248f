//! The plan compiler: a graph becomes one ordered list of dispatches whose pipelines, bind
//! groups, uniforms and memory are all created once. A step is one command encoder, one
//! compute pass and one `submit`.
//!
//! This file is the compiled [`Plan`] and what a host does with it (write inputs, record or
//! run steps, read results). [`Plan::compile`] runs the phases in order: dead-code
//! elimination and lowering (`compile`), where each tensor lives (`place`), and the
//! pipelines, uniforms and bind groups of each dispatch (`bind`); `overlap` keeps WebGPU's
//! rule against overlapping writable bindings.

mod bind;
mod compile;
mod overlap;
mod place;
mod split;

use super::{DType, Source, TensorInfo, Var};
use crate::error::{Error, Result};
use crate::gpu::{Context, ReadbackSlot};
use std::collections::HashMap;
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
    /// The pieces of every host-addressable tensor over the storage-binding limit.
    pieces: HashMap<Var, Vec<Slot>>,
    infos: Vec<TensorInfo>,
    inputs: HashMap<String, Var>,
    stats: PlanStats,
    /// Labels of the nodes behind each dispatch (profiling, debugging).
    cmd_labels: Vec<String>,
    /// The kernel (`family::entry`) of each dispatch.
    cmd_kernels: Vec<String>,
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

/// A readback in flight for several tensors (see [`Plan::request`]): one staging buffer, or
/// several when the tensors are more than one buffer may hold.
pub struct Pending {
    slots: Vec<ReadbackSlot>,
    /// What each slot has delivered so far.
    got: Vec<Option<Vec<u8>>>,
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

    /// The staging buffers' bytes end to end.
    fn joined(&mut self) -> Vec<u8> {
        self.got.iter_mut().flat_map(|b| b.take().unwrap_or_default()).collect()
    }

    /// The values (one vector per requested tensor) if they have arrived; never blocks.
    pub fn try_take(&mut self, ctx: &Context) -> Result<Option<Vec<Vec<f32>>>> {
        for (slot, got) in self.slots.iter_mut().zip(&mut self.got) {
            if got.is_none() {
                *got = slot.try_take(ctx)?;
            }
        }
        if self.got.iter().any(Option::is_none) {
            return Ok(None);
        }
        let b = self.joined();
        Ok(Some(self.split(&b)))
    }

    /// Await the values.
    pub async fn take(mut self, ctx: &Context) -> Result<Vec<Vec<f32>>> {
        for (slot, got) in self.slots.iter_mut().zip(&mut self.got) {
            if got.is_none() {
                *got = Some(slot.take(ctx).await?);
            }
        }
        let b = self.joined();
        Ok(self.split(&b))
    }

    /// Block until the values are here (native; only where the caller asks to wait).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(self, ctx: &Context) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.take(ctx))
    }
}

impl Plan {
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
    /// The kernel of each dispatch as `family::entry` (a label names the op and the entry
    /// only; the tile shape of a tiled matmul, for one, is in the family).
    pub fn dispatch_kernels(&self) -> &[String] {
        &self.cmd_kernels
    }
    /// How many dispatches of a step each kernel label (`op:entry`) accounts for, most
    /// frequent first (ties by label): where a plan's dispatches go.
    pub fn dispatch_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for l in &self.cmd_labels {
            *counts.entry(l.as_str()).or_default() += 1;
        }
        let mut out: Vec<(String, usize)> = counts.into_iter().map(|(l, n)| (l.to_string(), n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
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
            match self.pieces.get(&v) {
                Some(p) => Error::usage(format!(
                    "tensor '{name}' of plan '{}' is over the storage-binding limit and lives in {} pieces, not one buffer",
                    self.name,
                    p.len()
                )),
                None => Error::usage(format!("tensor '{name}' is not addressable in plan '{}': mark it with Graph::keep", self.name)),
            }
        })
    }

    /// The memory of a tensor in order: its slot, or its pieces.
    fn parts(&self, v: Var) -> Result<&[Slot]> {
        match self.pieces.get(&v) {
            Some(p) => Ok(p),
            None => self.slot(v).map(std::slice::from_ref),
        }
    }

    /// Write raw bytes over a tensor's memory (piece by piece).
    fn write_bytes(&self, v: Var, bytes: &[u8]) -> Result<()> {
        let parts = self.parts(v)?;
        let per = bytes.len() / parts.len();
        for (s, chunk) in parts.iter().zip(bytes.chunks(per.max(1))) {
            self.ctx.queue.write_buffer(&s.buffer, s.offset, chunk);
        }
        Ok(())
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
        self.write_bytes(v, bytemuck::cast_slice(data))
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
        self.write_bytes(v, bytemuck::cast_slice(data))
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

    /// Start reading several tensors back (one copy, one mapping; more when they exceed the
    /// largest buffer). Take the values later with [`Pending::try_take`] (never blocks),
    /// `take().await`, or `wait()` (native).
    pub fn request(&self, vars: &[Var]) -> Result<Pending> {
        let max = self.ctx.limits.max_buffer_size;
        let mut parts = Vec::new();
        // Each copy: source slot, staging buffer, offset in it. Pieces and whole tensors are
        // multiples of 4 bytes but the last, so the staging buffers join end to end.
        let mut copies: Vec<(&Slot, usize, u64)> = Vec::new();
        let mut sizes: Vec<u64> = vec![0];
        let mut total = 0u64;
        for &v in vars {
            let mut len = 0;
            for s in self.parts(v)? {
                let bytes = s.bytes.div_ceil(4) * 4;
                if sizes.last().is_some_and(|&z| z > 0 && z + bytes > max) {
                    sizes.push(0);
                }
                let last = sizes.len() - 1;
                copies.push((s, last, sizes[last]));
                sizes[last] += bytes;
                len += s.bytes;
            }
            parts.push((v, total, len, self.infos[v.index()].dtype));
            total += len.div_ceil(4) * 4;
        }
        let mut slots: Vec<ReadbackSlot> = sizes.iter().map(|&z| ReadbackSlot::new(&self.ctx, z, "plan readback")).collect();
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        for &(s, i, off) in &copies {
            enc.copy_buffer_to_buffer(&s.buffer, s.offset, slots[i].buffer(), off, s.bytes.div_ceil(4) * 4);
        }
        self.ctx.scoped("copying results for readback", || self.ctx.queue.submit([enc.finish()]))?;
        slots.iter_mut().for_each(ReadbackSlot::start);
        Ok(Pending { got: vec![None; slots.len()], slots, parts })
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
        let mut bytes = Vec::new();
        for s in self.parts(v)? {
            bytes.extend(pollster::block_on(crate::gpu::Readback::read(&self.ctx, &s.buffer, s.offset, s.bytes))?);
        }
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
