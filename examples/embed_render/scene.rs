//! The part of the `embed_render` example that needs no window: a host-side scene that
//! distils on the host's device, writes the live loss curve, the logits and the student's
//! stage features into one canvas texture with webdistill's texture writers, and blits the
//! canvas into a render target with an ordinary render pass. `main.rs` drives it from a winit
//! window; [`run_headless`] renders offscreen to a PNG (the tests use it).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use webdistill::embed::{self, Budget, Colormap, HostTrainer, Layout, Panel, Range, Rect, Style};
use webdistill::train::Run;
use webdistill::train::{DistillConfig, TrainConfig};
use webdistill::{Context, Error, Result, checkpoint, data};

/// Settings of the example.
#[derive(Clone, Debug)]
pub struct Options {
    pub student: String,
    pub teacher: String,
    /// ofa, kd, dkd, dist, fitnet, or none (train the student alone).
    pub method: String,
    /// The teacher's safetensors; without it the teacher is trained here first for
    /// `teacher_steps` steps (0: a randomly initialised teacher).
    pub teacher_weights: Option<PathBuf>,
    pub teacher_steps: usize,
    pub batch: usize,
    pub steps_per_frame: usize,
    /// A GPU-time budget per frame instead of a step count (needs TIMESTAMP_QUERY).
    pub budget_ms: Option<f64>,
    /// False: render only (the tensors of one initial step), to measure the frame rate alone.
    pub train: bool,
    /// Record a teacher/student CKA pass every this many frames (0: no CKA panel).
    pub cka_every: usize,
    pub frames: usize,
    /// Frames rendered before the timing starts (pipelines compile at first use).
    pub warmup_frames: usize,
    pub width: u32,
    pub height: u32,
    pub out: Option<PathBuf>,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            student: "mixer_nano_p4".into(),
            teacher: "vit_nano_p4".into(),
            method: "ofa".into(),
            teacher_weights: None,
            teacher_steps: 0,
            batch: 8,
            steps_per_frame: 1,
            budget_ms: None,
            train: true,
            cka_every: 10,
            frames: 60,
            warmup_frames: 2,
            width: 960,
            height: 540,
            out: None,
            seed: 0,
        }
    }
}

impl Options {
    pub fn budget(&self) -> Budget {
        match self.budget_ms {
            Some(ms) => Budget::Time(Duration::from_secs_f64(ms / 1e3)),
            None => Budget::Steps(self.steps_per_frame),
        }
    }
}

/// The run configuration: a small, quick distillation on the bundled Fashion-MNIST subset.
fn config(o: &Options) -> TrainConfig {
    let distill =
        (o.method != "none").then(|| DistillConfig { method: o.method.clone(), teacher: o.teacher.clone(), ..Default::default() });
    TrainConfig {
        model: o.student.clone(),
        batch: o.batch,
        epochs: 50,
        train_limit: 2000,
        test_limit: 200,
        eval_batch: 100,
        seed: o.seed,
        distill,
        ..TrainConfig::preset("quick").expect("the quick preset exists")
    }
}

/// The teacher's weights: from a file, or trained here for a few steps on the same device.
fn teacher_weights(
    ctx: &Context,
    o: &Options,
    splits: &data::Splits,
) -> Result<Option<std::collections::BTreeMap<String, checkpoint::FileTensor>>> {
    if o.method == "none" {
        return Ok(None);
    }
    if let Some(p) = &o.teacher_weights {
        return checkpoint::read(p).map(Some);
    }
    let cfg = TrainConfig { model: o.teacher.clone(), distill: None, ..config(o) };
    let mut t = Run::new(ctx, cfg, splits, None)?;
    if o.teacher_steps > 0 {
        t.train_steps(o.teacher_steps)?;
        let m = t.parse_train_metrics(&t.request_train_metrics()?.wait(ctx)?);
        eprintln!("teacher {}: {} steps, loss {:.3}", o.teacher, m.steps, m.loss);
    }
    let bytes = pollster::block_on(t.student_bytes(&Default::default()))?;
    checkpoint::parse(&bytes, "teacher").map(Some)
}

/// A texture the panels write into and the blit samples, filled with the panels' background
/// colour (the panels do not cover the margins between them).
pub fn canvas_texture(device: &wgpu::Device, queue: &wgpu::Queue, w: u32, h: u32) -> wgpu::Texture {
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("canvas"),
        size: wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: embed::TEXTURE_FORMAT,
        usage: embed::TEXTURE_USAGE | wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let bg = Style::default().background.map(|c| (c * 255.0).round() as u8);
    let texels: Vec<u8> = (0..w * h).flat_map(|_| bg).collect();
    queue.write_texture(
        texture.as_image_copy(),
        &texels,
        wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * w), rows_per_image: Some(h) },
        texture.size(),
    );
    texture
}

const BLIT: &str = r#"
@group(0) @binding(0) var canvas: texture_2d<f32>;
@group(0) @binding(1) var smp: sampler;

struct Vs { @builtin(position) pos: vec4<f32>, @location(0) uv: vec2<f32> }

@vertex
fn vs(@builtin(vertex_index) i: u32) -> Vs {
    // One triangle covering the target.
    let xy = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var o: Vs;
    o.pos = vec4<f32>(xy * 2.0 - 1.0, 0.0, 1.0);
    o.uv = vec2<f32>(xy.x, 1.0 - xy.y);
    return o;
}

@fragment
fn fs_plain(v: Vs) -> @location(0) vec4<f32> {
    return textureSample(canvas, smp, v.uv);
}

// The canvas holds sRGB-encoded bytes: decode them for an sRGB target, which encodes again.
@fragment
fn fs_srgb(v: Vs) -> @location(0) vec4<f32> {
    let c = textureSample(canvas, smp, v.uv);
    let lo = c.rgb / 12.92;
    let hi = pow((c.rgb + 0.055) / 1.055, vec3<f32>(2.4));
    return vec4<f32>(select(hi, lo, c.rgb <= vec3<f32>(0.04045)), c.a);
}
"#;

/// Draws the canvas over a whole render target of `format`.
pub struct Blit {
    pipeline: wgpu::RenderPipeline,
    bind_group: wgpu::BindGroup,
}

impl Blit {
    pub fn new(device: &wgpu::Device, canvas: &wgpu::Texture, format: wgpu::TextureFormat) -> Blit {
        let module = device
            .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("blit"), source: wgpu::ShaderSource::Wgsl(BLIT.into()) });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("blit"),
            layout: None,
            vertex: wgpu::VertexState { module: &module, entry_point: Some("vs"), compilation_options: Default::default(), buffers: &[] },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some(if format.is_srgb() { "fs_srgb" } else { "fs_plain" }),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("canvas"),
            mag_filter: wgpu::FilterMode::Nearest,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let view = canvas.create_view(&Default::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("blit"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&view) },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::Sampler(&sampler) },
            ],
        });
        Blit { pipeline, bind_group }
    }

    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, target: &wgpu::TextureView) {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("blit"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: target,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// Test images of the CKA panel.
const CKA_IMAGES: usize = 32;

/// Everything the host keeps between frames.
pub struct Scene {
    pub trainer: HostTrainer,
    pub canvas: wgpu::Texture,
    panels: Vec<Panel>,
    budget: Budget,
    train: bool,
    /// CKA every this many frames (0: none).
    cka_every: usize,
    frame: usize,
    /// Steps recorded by [`Scene::encode`] so far.
    pub steps: usize,
}

impl Scene {
    /// Build the run on `ctx` (the host's adopted device), the canvas and its panels.
    pub fn new(ctx: &Context, o: &Options) -> Result<Scene> {
        let splits = data::bundled()?;
        let teacher = teacher_weights(ctx, o, &splits)?;
        let run = Run::new(ctx, config(o), &splits, teacher.as_ref())?;
        let mut trainer = HostTrainer::new(run)?;
        if !o.train {
            // Render-only: give the outputs something to show.
            trainer.submit(Budget::Steps(1))?;
        }
        let cka_every = if trainer.run().teacher.is_some() { o.cka_every } else { 0 };
        let canvas = canvas_texture(&ctx.device, &ctx.queue, o.width, o.height);
        let panels = layout_panels(&mut trainer, &canvas, o.width, o.height, cka_every > 0)?;
        Ok(Scene { trainer, canvas, panels, budget: o.budget(), train: o.train, cka_every, frame: 0, steps: 0 })
    }

    /// Record one frame's training steps (and, every few frames, a CKA pass) and the panels
    /// into the host's encoder. Returns the steps recorded.
    pub fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<usize> {
        let n = if self.train { self.trainer.encode(encoder, self.budget) } else { 0 };
        self.steps += n;
        if self.cka_every > 0 && self.frame % self.cka_every == 0 {
            self.trainer.encode_cka(encoder, CKA_IMAGES)?;
        }
        self.frame += 1;
        for p in &self.panels {
            p.encode(encoder);
        }
        Ok(n)
    }
}

/// Where things go on the canvas: the loss curve, the logits of the first image and the
/// teacher/student CKA matrix (or the logits of the batch) on the left, one grid of channel
/// maps per student stage on the right.
fn layout_panels(t: &mut HostTrainer, canvas: &wgpu::Texture, w: u32, h: u32, cka: bool) -> Result<Vec<Panel>> {
    let cka = if cka { Some(t.cka_view(CKA_IMAGES)?) } else { None };
    let writer = t.writer();
    let m = (w.min(h) / 60).max(2);
    let left = w * 2 / 5;
    let bg = Style::default().background;
    let mut panels = Vec::new();
    let hist = t.loss_history();
    let loss_h = h * 9 / 20;
    panels.push(writer.panel(&hist.view(), &hist.layout(), &Style::default(), canvas, Rect::new(m, m, left - 2 * m, loss_h - m))?);
    let outs = t.outputs()?;
    let logits = &outs[0];
    let (b, classes) = (logits.shape[0], logits.shape[1]);
    let y = loss_h + m;
    let bars_h = (h - y) / 3;
    panels.push(writer.panel(
        logits,
        &Layout::Bars { base: 0, n: classes, stride: 1 },
        &Style::new(Colormap::Viridis, Range::Auto),
        canvas,
        Rect::new(m, y, left - 2 * m, bars_h - m),
    )?);
    let bottom = Rect::new(m, y + bars_h, left - 2 * m, h - y - bars_h - m);
    match &cka {
        // CKA lies in [0, 1]: rows are the teacher's stages, columns the student's.
        Some((view, layout)) => {
            panels.push(writer.panel(view, layout, &Style::new(Colormap::Viridis, Range::Fixed { lo: 0.0, hi: 1.0 }), canvas, bottom)?)
        }
        None => panels.push(writer.panel(
            logits,
            &Layout::matrix(b, classes),
            &Style::new(Colormap::Diverging, Range::Auto).symmetric(),
            canvas,
            bottom,
        )?),
    }
    let stages = outs.len() - 1;
    let cols = if stages > 2 { 2 } else { stages.max(1) } as u32;
    let rows = (stages as u32).div_ceil(cols).max(1);
    let (pw, ph) = ((w - left - m) / cols, (h - m) / rows);
    for s in 0..stages {
        let (cx, cy) = (s as u32 % cols, s as u32 / cols);
        let layout = t.feature_layout(s + 1, 0)?.first_tiles(64);
        panels.push(writer.panel(
            &outs[s + 1],
            &layout,
            &Style::new(Colormap::Viridis, Range::AutoPerTile).background(bg),
            canvas,
            Rect::new(left + cx * pw, m + cy * ph, pw - m, ph - m),
        )?);
    }
    Ok(panels)
}

/// Read an rgba8 texture into tightly packed rows (blocks; tests and PNG output).
pub fn read_texture(device: &wgpu::Device, queue: &wgpu::Queue, tex: &wgpu::Texture) -> Result<Vec<u8>> {
    let size = tex.size();
    let row = size.width * 4;
    let padded = row.div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("texture readback"),
        size: (padded * size.height) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo { texture: tex, mip_level: 0, origin: wgpu::Origin3d::ZERO, aspect: wgpu::TextureAspect::All },
        wgpu::TexelCopyBufferInfo {
            buffer: &buf,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(padded), rows_per_image: Some(size.height) },
        },
        wgpu::Extent3d { width: size.width, height: size.height, depth_or_array_layers: 1 },
    );
    queue.submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("waiting for a texture copy", e))?;
    rx.recv().map_err(|_| Error::gpu("reading a texture", "the mapping was cancelled"))?.map_err(|e| Error::gpu("reading a texture", e))?;
    let data = buf.slice(..).get_mapped_range().map_err(|e| Error::gpu("reading a texture", e))?.to_vec();
    buf.unmap();
    Ok(data.chunks_exact(padded as usize).flat_map(|r| r[..row as usize].to_vec()).collect())
}

/// The host's device, opened the way docs/EMBEDDING.md recommends.
pub fn host_device(instance: &wgpu::Instance, surface: Option<&wgpu::Surface<'_>>) -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue)> {
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        compatible_surface: surface,
        ..Default::default()
    }))
    .map_err(|e| Error::gpu("finding an adapter", e))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host"),
        required_features: embed::recommended_features(&adapter),
        required_limits: embed::recommended_limits(&adapter),
        ..Default::default()
    }))
    .map_err(|e| Error::gpu("opening the host's device", e))?;
    Ok((adapter, device, queue))
}

/// Frame rate and training speed of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub adapter: String,
    pub frames: usize,
    pub seconds: f64,
    pub fps: f64,
    pub steps_submitted: usize,
    pub steps_completed: usize,
    pub steps_per_s: f64,
    /// The GPU loss ring, oldest first (one value per frame that trained).
    pub history: Vec<f32>,
    pub last_loss: Option<f32>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames in {:.2} s: {:.2} fps, {} steps ({:.2} steps/s)",
            self.frames, self.seconds, self.fps, self.steps_completed, self.steps_per_s
        )?;
        if self.steps_submitted != self.steps_completed {
            write!(f, " ({} submitted)", self.steps_submitted)?;
        }
        if let Some(l) = self.last_loss {
            write!(f, ", last loss {l:.4}")?;
        }
        Ok(())
    }
}

/// Render `o.frames` frames offscreen (two frames in flight, as a swapchain would allow),
/// then write the last one to `o.out` as a PNG.
pub fn run_headless(o: &Options) -> Result<Report> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let (_adapter, device, queue) = host_device(&instance, None)?;
    let ctx = embed::adopt(device.clone(), queue.clone())?;
    let mut scene = Scene::new(&ctx, o)?;
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("offscreen target"),
        size: wgpu::Extent3d { width: o.width, height: o.height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let target_view = target.create_view(&Default::default());
    let blit = Blit::new(&device, &scene.canvas, wgpu::TextureFormat::Rgba8Unorm);
    let mut in_flight = VecDeque::new();
    let mut steps0 = 0;
    let mut t0 = Instant::now();
    for frame in 0..o.warmup_frames + o.frames {
        if frame == o.warmup_frames {
            // Pipelines compile at their first use on software adapters: time what follows.
            device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("warming up", e))?;
            in_flight.clear();
            steps0 = scene.trainer.steps_submitted();
            t0 = Instant::now();
        }
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frame") });
        scene.encode(&mut enc)?;
        blit.encode(&mut enc, &target_view);
        in_flight.push_back(queue.submit([enc.finish()]));
        scene.trainer.poll()?;
        if in_flight.len() > 2 {
            let idx = in_flight.pop_front().unwrap();
            device
                .poll(wgpu::PollType::Wait { submission_index: Some(idx), timeout: None })
                .map_err(|e| Error::gpu("waiting for a frame", e))?;
        }
    }
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("waiting for the last frame", e))?;
    let seconds = t0.elapsed().as_secs_f64();
    let last_loss = scene.trainer.finish()?.map(|m| m.loss);
    let steps = scene.trainer.steps_submitted() - steps0;
    if let Some(path) = &o.out {
        let px = read_texture(&device, &queue, &target)?;
        let img = image::RgbaImage::from_raw(o.width, o.height, px).ok_or_else(|| Error::usage("texture size mismatch"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        }
        img.save(path).map_err(|e| Error::file(path, e))?;
    }
    Ok(Report {
        adapter: ctx.adapter.to_string(),
        frames: o.frames,
        seconds,
        fps: o.frames as f64 / seconds,
        steps_submitted: scene.trainer.steps_submitted(),
        steps_completed: scene.trainer.steps_completed(),
        steps_per_s: steps as f64 / seconds,
        history: scene.trainer.loss_history().read(&ctx)?,
        last_loss,
    })
}

/// Training alone on the same kind of device, the same number of steps per submit and the
/// same two submits in flight, nothing rendered: the baseline for the cost of sharing.
pub fn run_training_only(o: &Options) -> Result<Report> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let (_adapter, device, queue) = host_device(&instance, None)?;
    let ctx = embed::adopt(device.clone(), queue.clone())?;
    let splits = data::bundled()?;
    let teacher = teacher_weights(&ctx, o, &splits)?;
    let mut t = HostTrainer::new(Run::new(&ctx, config(o), &splits, teacher.as_ref())?)?;
    for _ in 0..o.warmup_frames.max(1) {
        t.submit(o.budget())?;
    }
    t.finish()?;
    let steps0 = t.steps_submitted();
    let t0 = Instant::now();
    let mut in_flight = VecDeque::new();
    for _ in 0..o.frames {
        let mut enc = device.create_command_encoder(&Default::default());
        t.encode(&mut enc, o.budget());
        in_flight.push_back(queue.submit([enc.finish()]));
        t.poll()?;
        if in_flight.len() > 2 {
            let idx = in_flight.pop_front().unwrap();
            device.poll(wgpu::PollType::Wait { submission_index: Some(idx), timeout: None }).map_err(|e| Error::gpu("waiting", e))?;
        }
    }
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("waiting", e))?;
    let seconds = t0.elapsed().as_secs_f64();
    let last_loss = t.finish()?.map(|m| m.loss);
    let steps = t.steps_submitted() - steps0;
    Ok(Report {
        adapter: ctx.adapter.to_string(),
        frames: o.frames,
        seconds,
        fps: o.frames as f64 / seconds,
        steps_submitted: t.steps_submitted(),
        steps_completed: t.steps_completed(),
        steps_per_s: steps as f64 / seconds,
        history: Vec::new(),
        last_loss,
    })
}
