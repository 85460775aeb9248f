//! Embedding training in a graphics application: train and distil on the host's own wgpu
//! device and queue, a bounded amount of work per frame, and draw what the network does into
//! the host's textures without copying tensors to the CPU.
//!
//! # The pieces
//! - [`adopt`]: a [`Context`] over the host's `wgpu::Device` and `wgpu::Queue` (the library
//!   then uses the limits and features the host opened the device with; [`recommended_limits`]
//!   and [`recommended_features`] say what to ask the adapter for).
//! - [`HostTrainer`]: wraps a compiled [`Run`] of any recipe (training, distillation, OBoW:
//!   model, objective, data on the GPU). Each call records a bounded number of steps ([`Budget`]) into the host's
//!   command encoder ([`HostTrainer::encode`]) or submits them itself ([`HostTrainer::submit`]);
//!   [`HostTrainer::poll`] collects metrics without blocking and [`HostTrainer::latest_metrics`]
//!   returns the newest ones. A GPU-side [`LossHistory`] records the mean loss of every call's
//!   steps, so the loss curve is drawn without a readback.
//! - [`TensorView`]: a tensor the host can bind directly (buffer, byte offset, shape): the
//!   student's logits and stage features of the last training batch
//!   ([`HostTrainer::outputs`]), the teacher/student CKA matrix ([`HostTrainer::cka_view`],
//!   recorded with [`HostTrainer::encode_cka`]), the loss ring, any kept tensor of a plan
//!   ([`crate::Plan::buffer_of`]).
//! - [`TextureWriter`] and [`Panel`]: compute kernels that write a tensor, arranged by a
//!   [`Layout`] (a grid of feature maps, a matrix such as a CKA matrix or an attention map, bars
//!   for a histogram such as OBoW's bag of words, a curve), through a [`Colormap`] into a
//!   rectangle of an `rgba8unorm` storage texture.
//!
//! ```text
//! // Host setup: request the adapter's limits so the library's kernels fit.
//! let (device, queue) = adapter.request_device(&wgpu::DeviceDescriptor {
//!     required_features: webdistill::embed::recommended_features(&adapter),
//!     required_limits: webdistill::embed::recommended_limits(&adapter),
//!     ..Default::default()
//! }).await?;
//! let ctx = webdistill::embed::adopt(device.clone(), queue.clone())?;
//! let run = Run::new(&ctx, cfg, &webdistill::data::bundled()?, Some(&teacher))?;
//! let mut trainer = HostTrainer::new(run)?;
//! let panel = trainer.writer().panel(&trainer.loss_history().view(), &trainer.loss_history().layout(),
//!                                    &Style::default(), &canvas, Rect::new(0, 0, 256, 128))?;
//! // Every frame:
//! let mut enc = device.create_command_encoder(&Default::default());
//! trainer.encode(&mut enc, Budget::Steps(2));   // or Budget::Time(Duration::from_millis(4))
//! panel.encode(&mut enc);
//! /* ... the host's render passes sample `canvas` ... */
//! queue.submit([enc.finish()]);
//! trainer.poll()?;                               // never blocks
//! if let Some(m) = trainer.latest_metrics() { /* m.loss, m.terms */ }
//! ```
//!
//! # Rules the library keeps
//! - It owns no event loop and never blocks in `poll` (only methods whose names or docs say
//!   they wait do, such as [`Run::evaluate`] on native).
//! - It installs no error handler on an adopted device (that is the host's); its own calls
//!   catch their errors with error scopes.
//! - Work goes where the host puts it: into the host's encoder, or (with `submit`) into its own
//!   submit on the host's queue, ordered with the host's submits.
//! - In encoder mode, submit the encoder before the next call to the trainer (a frame loop
//!   does): the trainer starts reading the previous call's timestamps then.
//!
//! # Version coupling
//! The types cross the API by value (`wgpu::Device`, `wgpu::Queue`, `wgpu::Buffer`,
//! `wgpu::Texture`, `wgpu::CommandEncoder`), so the host must use the same wgpu major version
//! as this crate: **wgpu 30**. Cargo then links one wgpu for both, whichever of `30.x` each
//! side names; with another major version the build fails with "expected `wgpu::Device`,
//! found `wgpu::Device`" (two versions of crate `wgpu`). Hosts that reach wgpu through another
//! crate are fine as long as that crate's wgpu is 30: egui-wgpu 0.36 and 0.37 (see
//! `examples/embed_egui.rs`) and Bevy 0.20 are. `webdistill::wgpu` re-exports the exact crate
//! the library was built with. See docs/EMBEDDING.md.

mod texture;

pub use texture::{BAD_COLOUR, Colormap, Layout, Panel, Range, Rect, Style, TEXTURE_FORMAT, TEXTURE_USAGE, TextureWriter};

use crate::error::{Error, Result};
use crate::gpu::{Context, ReadbackSlot};
use crate::graph::plan::Pending;
use crate::models::FeatureShape;
use crate::train::{Run, TrainMetrics};
use std::time::Duration;

/// Storage buffers per shader stage the library's largest kernel binds (batch norm's
/// backward). WebGPU's default limit is 8: request the adapter's limits.
pub const MIN_STORAGE_BUFFERS_PER_STAGE: u32 = 9;

/// The limits a host should request for a device it shares with the library: the adapter's
/// own (WebGPU's defaults are lower than what most adapters offer, in particular storage
/// buffers per stage, storage binding size and workgroup storage).
pub fn recommended_limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
    adapter.limits()
}

/// Features worth requesting: `TIMESTAMP_QUERY` where the adapter has it (for
/// [`Budget::Time`]). The library needs none.
pub fn recommended_features(adapter: &wgpu::Adapter) -> wgpu::Features {
    adapter.features() & wgpu::Features::TIMESTAMP_QUERY
}

/// Adopt a host's device and queue, checking that its limits let the library's kernels run.
/// (Plain [`Context::adopt`] skips the check.)
pub fn adopt(device: wgpu::Device, queue: wgpu::Queue) -> Result<Context> {
    let l = device.limits();
    if l.max_storage_buffers_per_shader_stage < MIN_STORAGE_BUFFERS_PER_STAGE {
        return Err(Error::usage(format!(
            "the host's device allows {} storage buffers per shader stage; webdistill's kernels need {}. Create the device \
             with `required_limits: webdistill::embed::recommended_limits(&adapter)` (the adapter's own limits)",
            l.max_storage_buffers_per_shader_stage, MIN_STORAGE_BUFFERS_PER_STAGE
        )));
    }
    if l.max_compute_invocations_per_workgroup < 256 {
        return Err(Error::usage(format!(
            "the host's device allows {} invocations per workgroup; webdistill's kernels need 256",
            l.max_compute_invocations_per_workgroup
        )));
    }
    Ok(Context::adopt(device, queue))
}

/// A tensor on the GPU that a host can bind: `shape` f32 values (row-major) at byte `offset`
/// of `buffer`. The buffer has `STORAGE | COPY_SRC | COPY_DST` usage.
#[derive(Clone, Debug)]
pub struct TensorView {
    pub name: String,
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub shape: Vec<usize>,
}

impl TensorView {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }
    /// Read the values (tests, tools; native, blocks until the GPU is done with them).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(crate::gpu::Readback::read(ctx, &self.buffer, self.offset, self.bytes()))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
    /// The binding resource of exactly this tensor (for the host's own bind groups).
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.bytes().div_ceil(4) * 4),
        })
    }
}

/// How much training one call may record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Exactly this many steps.
    Steps(usize),
    /// As many steps as fit in this much GPU time, by the measured time per step (GPU
    /// timestamps; needs `TIMESTAMP_QUERY` on the device, else one step per call), at least
    /// one and at most [`HostTrainer::set_max_steps`].
    Time(Duration),
}

/// The mean training loss of every call's steps, kept in a GPU ring buffer that a compute
/// kernel appends to (no readback). Layout of the buffer (f32 units): `[previous loss sum,
/// previous step count, head (u32 bits), capacity (u32 bits), values...]`; draw it with
/// [`Layout::Ring`] (see [`Self::layout`]).
pub struct LossHistory {
    buffer: wgpu::Buffer,
    capacity: usize,
    bind_group: wgpu::BindGroup,
    pipeline: wgpu::ComputePipeline,
    _uniform: wgpu::Buffer,
}

impl LossHistory {
    /// A ring of `capacity` values fed from `metrics`, a tensor whose first two values are a
    /// loss sum and a step count summed since the last reset (a run's training metrics).
    pub fn new(writer: &TextureWriter, metrics: &TensorView, capacity: usize) -> Result<Self> {
        let ctx = writer.context();
        if capacity == 0 || metrics.numel() < 2 {
            return Err(Error::usage("a loss history needs a capacity and a [sum, count, ...] metrics tensor"));
        }
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("webdistill loss history"),
            size: (4 + capacity as u64) * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let header = [0.0f32, 0.0, f32::from_bits(0), f32::from_bits(capacity as u32)];
        ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&header));
        let uniform = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("webdistill loss history"),
            size: std::mem::size_of::<texture::ViewParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue.write_buffer(&uniform, 0, bytemuck::bytes_of(&texture::ViewParams::recorder(0, capacity)));
        let bind_group = ctx.scoped("binding the loss history", || writer.aux_bind_group("loss history", &uniform, metrics, &buffer))?;
        Ok(LossHistory { buffer, capacity, bind_group, pipeline: writer.record.clone(), _uniform: uniform })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The ring buffer (header and values) as a tensor, for [`TextureWriter::panel`] or the
    /// host's own shaders.
    pub fn view(&self) -> TensorView {
        TensorView { name: "loss history".into(), buffer: self.buffer.clone(), offset: 0, shape: vec![4 + self.capacity] }
    }

    pub fn layout(&self) -> Layout {
        Layout::Ring { capacity: self.capacity }
    }

    /// Append the mean loss of the steps since the previous record (nothing if there were none).
    pub fn encode_record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("webdistill loss record"), timestamp_writes: None });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Tell the ring that the metrics were reset to zero (takes effect with the next submit,
    /// like the reset itself).
    pub fn metrics_reset(&self, queue: &wgpu::Queue) {
        queue.write_buffer(&self.buffer, 0, bytemuck::cast_slice(&[0.0f32, 0.0]));
    }

    /// Read the recorded values, oldest first (tests, tools; native, blocks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(crate::gpu::Readback::read(ctx, &self.buffer, 0, (4 + self.capacity as u64) * 4))?;
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let head = v[2].to_bits() as usize;
        let n = head.min(self.capacity);
        Ok((0..n).map(|i| v[4 + (head - n + i) % self.capacity]).collect())
    }
}

#[derive(Debug)]
enum TimerSlot {
    Free,
    /// Written by an encoded pass of `n` steps, not yet known to be submitted.
    Encoded(usize),
    /// Being mapped.
    Mapping(usize),
}

/// GPU time of the training passes, from timestamp queries.
struct GpuTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    slots: Vec<(TimerSlot, ReadbackSlot)>,
    period_ns: f64,
    /// Smoothed seconds per step.
    per_step: Option<f64>,
}

const TIMER_SLOTS: usize = 4;

impl GpuTimer {
    fn new(ctx: &Context) -> Option<Self> {
        if !ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let n = TIMER_SLOTS as u32;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("webdistill steps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * n,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("webdistill timestamps"),
            size: wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT * n as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let slots = (0..TIMER_SLOTS).map(|_| (TimerSlot::Free, ReadbackSlot::new(ctx, 16, "webdistill timestamps"))).collect();
        Some(GpuTimer { queries, resolve, slots, period_ns: ctx.queue.get_timestamp_period() as f64, per_step: None })
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|(s, _)| matches!(s, TimerSlot::Free))
    }

    /// Start mapping every slot whose pass has been submitted.
    fn start_maps(&mut self) {
        for (state, rb) in &mut self.slots {
            if let TimerSlot::Encoded(n) = *state {
                rb.start();
                *state = TimerSlot::Mapping(n);
            }
        }
    }

    fn collect(&mut self, ctx: &Context) -> Result<()> {
        for (state, rb) in &mut self.slots {
            if let TimerSlot::Mapping(n) = *state {
                if let Some(bytes) = rb.try_take(ctx)? {
                    *state = TimerSlot::Free;
                    let t: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes[..16]);
                    if t[1] > t[0] && n > 0 {
                        let s = (t[1] - t[0]) as f64 * self.period_ns * 1e-9 / n as f64;
                        self.per_step = Some(match self.per_step {
                            Some(old) => 0.7 * old + 0.3 * s,
                            None => s,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// A run (any recipe) driven by a host's frame loop. See the module docs.
pub struct HostTrainer {
    run: Run,
    writer: TextureWriter,
    history: LossHistory,
    pending: Option<Pending>,
    latest: Option<TrainMetrics>,
    completed: usize,
    requested_at: usize,
    timer: Option<GpuTimer>,
    max_steps: usize,
}

impl HostTrainer {
    /// Wrap a run built on the host's context (see [`adopt`]); compiles the texture writers
    /// and allocates the loss history (4096 records).
    pub fn new(run: Run) -> Result<Self> {
        let writer = TextureWriter::new(&run.ctx)?;
        let (buffer, offset, shape) = run.train_metrics_buffer()?;
        let metrics = TensorView { name: "training metrics".into(), buffer, offset, shape };
        let history = LossHistory::new(&writer, &metrics, 4096)?;
        let timer = GpuTimer::new(&run.ctx);
        Ok(HostTrainer { run, writer, history, pending: None, latest: None, completed: 0, requested_at: 0, timer, max_steps: 64 })
    }

    pub fn run(&self) -> &Run {
        &self.run
    }
    /// The run, for evaluation, checkpoints, queries and the rest of its API. Do not read its
    /// training metrics directly while the trainer polls them (they are reset on each read).
    pub fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }
    pub fn into_run(self) -> Run {
        self.run
    }
    pub fn context(&self) -> &Context {
        &self.run.ctx
    }
    /// Texture writers compiled on this device, for the host's panels.
    pub fn writer(&self) -> &TextureWriter {
        &self.writer
    }
    pub fn loss_history(&self) -> &LossHistory {
        &self.history
    }
    /// Cap on the steps one [`Budget::Time`] call may record (default 64).
    pub fn set_max_steps(&mut self, n: usize) {
        self.max_steps = n.max(1);
    }

    /// Steps recorded or submitted so far.
    pub fn steps_submitted(&self) -> usize {
        self.run.step
    }
    /// Steps the GPU has finished, as far as the metrics that arrived tell.
    pub fn steps_completed(&self) -> usize {
        self.completed
    }
    /// GPU time per step, measured with timestamp queries (None before the first measurement
    /// or without `TIMESTAMP_QUERY`).
    pub fn step_time(&self) -> Option<Duration> {
        self.timer.as_ref().and_then(|t| t.per_step).map(Duration::from_secs_f64)
    }
    /// True when [`Budget::Time`] can be honoured (the device has `TIMESTAMP_QUERY`).
    pub fn timed(&self) -> bool {
        self.timer.is_some()
    }

    /// How many steps `budget` allows now.
    pub fn steps_for(&self, budget: Budget) -> usize {
        match budget {
            Budget::Steps(n) => n,
            Budget::Time(d) => match self.timer.as_ref().and_then(|t| t.per_step) {
                Some(s) if s > 0.0 => ((d.as_secs_f64() / s).floor() as usize).clamp(1, self.max_steps),
                _ => 1,
            },
        }
    }

    /// Record the steps `budget` allows into the host's `encoder`, then the loss record.
    /// Nothing is submitted; the host submits `encoder` (before calling the trainer again).
    /// Returns the number of steps recorded.
    pub fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, budget: Budget) -> usize {
        // The previous call's encoder has been submitted by now: read its timestamps.
        if let Some(t) = &mut self.timer {
            t.start_maps();
        }
        let n = self.steps_for(budget);
        if n == 0 {
            return 0;
        }
        match self.timer.as_mut().and_then(|t| t.free_slot().map(|k| (t, k))) {
            Some((t, k)) => {
                let writes = wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: Some(2 * k as u32),
                    end_of_pass_write_index: Some(2 * k as u32 + 1),
                };
                self.run.encode_steps_timed(encoder, n, Some(writes));
                let off = wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT * k as u64;
                encoder.resolve_query_set(&t.queries, 2 * k as u32..2 * k as u32 + 2, &t.resolve, off);
                encoder.copy_buffer_to_buffer(&t.resolve, off, t.slots[k].1.buffer(), 0, 16);
                t.slots[k].0 = TimerSlot::Encoded(n);
            }
            None => self.run.encode_steps(encoder, n),
        }
        self.history.encode_record(encoder);
        n
    }

    /// Like [`Self::encode`], in the trainer's own encoder and submit on the host's queue.
    pub fn submit(&mut self, budget: Budget) -> Result<usize> {
        let ctx = self.run.ctx.clone();
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("webdistill steps") });
        let n = self.encode(&mut enc, budget);
        ctx.scoped("submitting training steps", || ctx.queue.submit([enc.finish()]))?;
        if let Some(t) = &mut self.timer {
            t.start_maps();
        }
        Ok(n)
    }

    /// Collect what the GPU has finished (metrics, timestamps) and ask for the next metrics.
    /// Never blocks. Call it once per frame, after submitting.
    pub fn poll(&mut self) -> Result<()> {
        let ctx = self.run.ctx.clone();
        ctx.poll();
        if let Some(p) = &mut self.pending {
            if let Some(vals) = p.try_take(&ctx)? {
                self.pending = None;
                let m = self.run.parse_train_metrics(&vals);
                self.completed += m.steps;
                if m.steps > 0 {
                    self.latest = Some(m);
                }
            }
        }
        if self.pending.is_none() && self.run.step > self.requested_at {
            // One metrics read in flight at a time; the read resets the sums, and the loss
            // history is told so (both writes land before the next submit).
            self.pending = Some(self.run.request_train_metrics()?);
            self.history.metrics_reset(&ctx.queue);
            self.requested_at = self.run.step;
        }
        if let Some(t) = &mut self.timer {
            t.collect(&ctx)?;
        }
        ctx.check("polling the trainer")
    }

    /// The newest training metrics that have arrived (averages over the steps since the
    /// previous ones), without blocking.
    pub fn latest_metrics(&self) -> Option<&TrainMetrics> {
        self.latest.as_ref()
    }

    /// Wait until every submitted step has finished and its metrics arrived (native; blocks:
    /// for tools, tests and shutdown, not for frame loops).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish(&mut self) -> Result<Option<&TrainMetrics>> {
        let ctx = self.run.ctx.clone();
        loop {
            ctx.wait()?;
            self.poll()?;
            if self.pending.is_none() && self.requested_at == self.run.step {
                break;
            }
        }
        Ok(self.latest.as_ref())
    }

    /// The student's outputs of the last training batch as bindable tensors: `logits`
    /// `[B, classes]`, then `stage1..` features (`[B, C, H, W]` maps or `[B, N, D]` tokens).
    pub fn outputs(&self) -> Result<Vec<TensorView>> {
        let plan = self.run.train_plan();
        self.run
            .train_outputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (buffer, offset, shape) = plan.buffer_of(v)?;
                let name = if i == 0 { "logits".to_string() } else { format!("stage{i}") };
                Ok(TensorView { name, buffer, offset, shape })
            })
            .collect()
    }

    /// The CKA matrix between the teacher's and the student's stage features on the first
    /// `images` test images (eval mode) as a bindable tensor `[teacher stages, student
    /// stages]`, with its layout. Builds the CKA plan on first use (runs with a teacher); the values are there after the first [`Self::encode_cka`].
    pub fn cka_view(&mut self, images: usize) -> Result<(TensorView, Layout)> {
        let (plan, m) = self.run.cka_plan(images)?;
        let (buffer, offset, shape) = plan.buffer_of(m)?;
        let layout = Layout::matrix(shape[0], shape[1]);
        Ok((TensorView { name: "cka".into(), buffer, offset, shape }, layout))
    }

    /// Record one CKA pass (the teacher's and the student's eval forward on the same `images`
    /// test images, then the matrix of [`Self::cka_view`]) into the host's encoder. It costs
    /// two forward passes: hosts run it every few frames. Once per submit: the test-image
    /// counter is reset by a queue write, which lands before the submit.
    pub fn encode_cka(&mut self, encoder: &mut wgpu::CommandEncoder, images: usize) -> Result<()> {
        self.run.reset_eval_counter()?;
        let (plan, _) = self.run.cka_plan(images)?;
        plan.encode(encoder);
        Ok(())
    }

    /// The grid layout of stage `stage` (1-based) for batch sample `sample`: one tile per
    /// channel.
    pub fn feature_layout(&self, stage: usize, sample: usize) -> Result<Layout> {
        let shapes = self.run.student.feature_shapes();
        let fs = *shapes.get(stage.wrapping_sub(1)).ok_or_else(|| Error::usage(format!("the student has stages 1..={}", shapes.len())))?;
        if self.run.train_outputs.is_empty() {
            return Err(Error::usage(format!("the '{}' recipe keeps no student outputs to draw", self.run.recipe.kind())));
        }
        let b = self.run.cfg.batch;
        match fs {
            FeatureShape::Map { c, h, w } => Layout::nchw(&[b, c, h, w], sample),
            FeatureShape::Tokens { n, d, prefix } => Layout::tokens(&[b, n, d], prefix, sample),
        }
    }
}
