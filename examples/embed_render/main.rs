//! Distil a network inside a render loop, on the host's own device and queue, and watch it.
//!
//!     cargo run --release --example embed_render -- [options]
//!     cargo run --release --example embed_render -- --headless --frames 30 --out docs/embed_render.png
//!     cargo run --release --example embed_render -- --bench --frames 20
//!
//! Every frame records a bounded number of OFA distillation steps (mixer_nano_p4 student,
//! vit_nano_p4 teacher by default, bundled Fashion-MNIST) into the frame's command encoder,
//! then webdistill's texture writers draw the live loss curve (a GPU ring, no readback), the
//! logits of the batch (bars for the first image, a matrix for all) and the student's stage
//! features (one tile per channel) into a canvas texture, which a render pass draws to the
//! window. The library owns no event loop and never blocks: winit's loop belongs to this host.
//! It prints the frame rate and the training steps per second every second.
//!
//! Options: --student NAME --teacher NAME --method ofa|kd|...|none --teacher-weights FILE
//! --teacher-steps N --batch N --steps-per-frame N --budget-ms MS --no-train --frames N
//! (window: until closed) --width W --height H --seed N --no-vsync; --headless renders N frames offscreen and writes
//! --out (PNG); --bench measures, offscreen, the frame rate with and without training and the
//! steps/s of training alone.

mod scene;

use scene::{Blit, Options, Scene};
use std::sync::Arc;
use std::time::Instant;
use webdistill::{Error, Result, embed};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::window::{Window, WindowId};

fn parse() -> Result<(Options, Mode, bool)> {
    let mut o = Options::default();
    let mut mode = Mode::Window;
    let mut vsync = true;
    let mut frames_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| Error::usage(format!("{a} needs a value")));
        let num = |s: String| s.parse::<f64>().map_err(|_| Error::usage(format!("{a}: '{s}' is not a number")));
        match a.as_str() {
            "--headless" => mode = Mode::Headless,
            "--bench" => mode = Mode::Bench,
            "--no-train" => o.train = false,
            "--no-vsync" => vsync = false,
            "--student" => o.student = val()?,
            "--teacher" => o.teacher = val()?,
            "--method" => o.method = val()?,
            "--teacher-weights" => o.teacher_weights = Some(val()?.into()),
            "--teacher-steps" => o.teacher_steps = num(val()?)? as usize,
            "--batch" => o.batch = num(val()?)? as usize,
            "--steps-per-frame" => o.steps_per_frame = num(val()?)? as usize,
            "--budget-ms" => o.budget_ms = Some(num(val()?)?),
            "--frames" => {
                o.frames = num(val()?)? as usize;
                frames_given = true;
            }
            "--warmup-frames" => o.warmup_frames = num(val()?)? as usize,
            "--width" => o.width = num(val()?)? as u32,
            "--height" => o.height = num(val()?)? as u32,
            "--seed" => o.seed = num(val()?)? as u64,
            "--out" => o.out = Some(val()?.into()),
            "-h" | "--help" => {
                println!("{}", include_str!("main.rs").lines().take_while(|l| l.starts_with("//!")).map(|l| &l[3.min(l.len())..]).collect::<Vec<_>>().join("\n"));
                std::process::exit(0);
            }
            _ => return Err(Error::usage(format!("unknown argument {a} (see --help)"))),
        }
    }
    if mode == Mode::Window && !frames_given {
        o.frames = 0; // until the window is closed
    }
    Ok((o, mode, vsync))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Window,
    Headless,
    Bench,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (mut o, mode, vsync) = parse()?;
    match mode {
        Mode::Headless => {
            if o.out.is_none() {
                o.out = Some("embed_render.png".into());
            }
            let r = scene::run_headless(&o)?;
            println!("adapter: {}", r.adapter);
            println!("{r}");
            println!("loss per frame (GPU ring): {:?}", r.history.iter().map(|l| format!("{l:.3}")).collect::<Vec<_>>());
            println!("wrote {}", o.out.as_ref().unwrap().display());
        }
        Mode::Bench => {
            let with = scene::run_headless(&o)?;
            println!("adapter: {}", with.adapter);
            println!("rendering + training ({:?} per frame): {with}", o.budget());
            let without = scene::run_headless(&Options { train: false, out: None, ..o.clone() })?;
            println!("rendering only:                 {without}");
            let alone = scene::run_training_only(&o)?;
            println!("training only (no rendering):   {alone}");
            println!(
                "sharing: {:.1}% of the render-only frame rate, {:.1}% of training-alone steps/s",
                100.0 * with.fps / without.fps,
                100.0 * with.steps_per_s / alone.steps_per_s
            );
        }
        Mode::Window => {
            let event_loop = EventLoop::new().map_err(|e| Error::usage(format!("no window system: {e} (try --headless)")))?;
            let mut app = App { o, vsync, state: None, error: None };
            event_loop.run_app(&mut app).map_err(|e| Error::usage(format!("event loop: {e}")))?;
            if let Some(e) = app.error {
                return Err(e);
            }
        }
    }
    Ok(())
}

struct WindowState {
    window: Arc<Window>,
    surface: wgpu::Surface<'static>,
    config: wgpu::SurfaceConfiguration,
    device: wgpu::Device,
    queue: wgpu::Queue,
    scene: Scene,
    blit: Blit,
    // Statistics since the last print.
    since: Instant,
    frames: usize,
    steps_at: usize,
    total_frames: usize,
}

struct App {
    o: Options,
    vsync: bool,
    state: Option<WindowState>,
    error: Option<Error>,
}

impl App {
    fn init(&mut self, el: &ActiveEventLoop) -> Result<WindowState> {
        let attrs = Window::default_attributes()
            .with_title("webdistill: distilling inside a render loop")
            .with_inner_size(winit::dpi::PhysicalSize::new(self.o.width, self.o.height));
        let window = Arc::new(el.create_window(attrs).map_err(|e| Error::usage(format!("creating a window: {e}")))?);
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_with_display_handle_from_env(Box::new(el.owned_display_handle())));
        let surface = instance.create_surface(window.clone()).map_err(|e| Error::gpu("creating a surface", e))?;
        let (adapter, device, queue) = scene::host_device(&instance, Some(&surface))?;
        let size = window.inner_size();
        let mut config = surface
            .get_default_config(&adapter, size.width.max(1), size.height.max(1))
            .ok_or_else(|| Error::usage("the adapter cannot present to this window"))?;
        // Prefer a non-sRGB format (the canvas holds sRGB bytes); the blit decodes otherwise.
        let caps = surface.get_capabilities(&adapter);
        if let Some(f) = caps.formats.iter().find(|f| !f.is_srgb()) {
            config.format = *f;
        }
        config.present_mode = if self.vsync { wgpu::PresentMode::AutoVsync } else { wgpu::PresentMode::AutoNoVsync };
        surface.configure(&device, &config);
        let ctx = embed::adopt(device.clone(), queue.clone())?;
        eprintln!("adapter: {} | surface {:?} {:?}", ctx.adapter, config.format, config.present_mode);
        let scene = Scene::new(&ctx, &self.o)?;
        let blit = Blit::new(&device, &scene.canvas, config.format);
        Ok(WindowState {
            window,
            surface,
            config,
            device,
            queue,
            scene,
            blit,
            since: Instant::now(),
            frames: 0,
            steps_at: 0,
            total_frames: 0,
        })
    }
}

impl WindowState {
    fn frame(&mut self) -> Result<()> {
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f) | wgpu::CurrentSurfaceTexture::Suboptimal(f) => f,
            wgpu::CurrentSurfaceTexture::Outdated | wgpu::CurrentSurfaceTexture::Lost => {
                self.surface.configure(&self.device, &self.config);
                return Ok(());
            }
            _ => return Ok(()),
        };
        let view = frame.texture.create_view(&Default::default());
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frame") });
        // Training steps first, then the panels that show their outputs, then the window.
        self.scene.encode(&mut enc);
        self.blit.encode(&mut enc, &view);
        self.queue.submit([enc.finish()]);
        self.window.pre_present_notify();
        self.queue.present(frame);
        self.scene.trainer.poll()?;
        self.frames += 1;
        self.total_frames += 1;
        let dt = self.since.elapsed().as_secs_f64();
        if dt >= 1.0 {
            let t = &self.scene.trainer;
            let steps = t.steps_completed();
            let loss = t.latest_metrics().map(|m| format!("{:.4}", m.loss)).unwrap_or_else(|| "-".into());
            let gpu = t.step_time().map(|d| format!(", {:.1} ms GPU/step", d.as_secs_f64() * 1e3)).unwrap_or_default();
            println!(
                "{:.1} fps, {:.2} steps/s, step {}, loss {loss}{gpu}",
                self.frames as f64 / dt,
                (steps - self.steps_at) as f64 / dt,
                t.steps_submitted()
            );
            self.since = Instant::now();
            self.frames = 0;
            self.steps_at = steps;
        }
        Ok(())
    }
}

impl ApplicationHandler for App {
    fn resumed(&mut self, el: &ActiveEventLoop) {
        if self.state.is_some() {
            return;
        }
        match self.init(el) {
            Ok(s) => {
                s.window.request_redraw();
                self.state = Some(s);
            }
            Err(e) => {
                self.error = Some(e);
                el.exit();
            }
        }
    }

    fn window_event(&mut self, el: &ActiveEventLoop, _id: WindowId, event: WindowEvent) {
        let Some(s) = self.state.as_mut() else { return };
        match event {
            WindowEvent::CloseRequested => el.exit(),
            WindowEvent::Resized(size) if size.width > 0 && size.height > 0 => {
                s.config.width = size.width;
                s.config.height = size.height;
                s.surface.configure(&s.device, &s.config);
            }
            WindowEvent::RedrawRequested => {
                if let Err(e) = s.frame() {
                    self.error = Some(e);
                    el.exit();
                    return;
                }
                if self.o.frames > 0 && s.total_frames >= self.o.frames {
                    el.exit();
                    return;
                }
                s.window.request_redraw();
            }
            _ => {}
        }
    }
}
