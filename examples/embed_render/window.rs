//! The windowed mode of the example (feature `window`): winit owns the event loop, the
//! library only records work into this host's encoder each frame.

use crate::scene::{self, Blit, Options, Scene};
use std::sync::Arc;
use std::time::Instant;
use webdistill::{Error, Result, embed};
use winit::application::ApplicationHandler;
use winit::event::WindowEvent;
use winit::event_loop::{ActiveEventLoop, EventLoop};
use winit::window::{Window, WindowId};

/// Open a window and distil in its frame loop until it is closed (or `o.frames` frames).
pub fn run(o: Options, vsync: bool) -> Result<()> {
    let event_loop = EventLoop::new().map_err(|e| Error::usage(format!("no window system: {e} (try --headless)")))?;
    let mut app = App { o, vsync, state: None, error: None };
    event_loop.run_app(&mut app).map_err(|e| Error::usage(format!("event loop: {e}")))?;
    match app.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
        self.scene.encode(&mut enc)?;
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
