//! Distil inside an egui app: egui-wgpu's device and queue (here a headless stand-in for
//! `egui_wgpu::RenderState`) are adopted by webdistill, the canvas texture the panels write is
//! registered with egui's renderer as a native texture, and every frame records training steps,
//! the panels and egui's own render pass into one encoder.
//!
//!     cargo run --release --features egui --example embed_egui -- [--frames N] [--out FILE.png]
//!
//! egui-wgpu 0.36 and 0.37 are built on wgpu 30, like webdistill (docs/EMBEDDING.md); in an
//! eframe app take `frame.wgpu_render_state()` and use its `device`, `queue` and `renderer`.

use std::time::Instant;
use webdistill::embed::{self, Budget, Colormap, HostTrainer, Range, Rect, Style};
use webdistill::train::Run;
use webdistill::train::{DistillConfig, TrainConfig};
use webdistill::{Error, Result, checkpoint, data};

const W: u32 = 640;
const H: u32 = 400;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut frames = 10usize;
    let mut out = std::path::PathBuf::from("embed_egui.png");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| Error::usage(format!("{a} needs a value")))?;
        match a.as_str() {
            "--frames" => frames = v.parse().map_err(|_| Error::usage("--frames needs a number"))?,
            "--out" => out = v.into(),
            _ => return Err(Error::usage(format!("unknown argument {a}"))),
        }
    }

    // The app's device, as egui-wgpu would open it (with the adapter's limits).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).map_err(|e| Error::gpu("finding an adapter", e))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("egui app"),
        required_features: embed::recommended_features(&adapter),
        required_limits: embed::recommended_limits(&adapter),
        ..Default::default()
    }))
    .map_err(|e| Error::gpu("opening a device", e))?;
    let format = wgpu::TextureFormat::Rgba8Unorm;
    let mut renderer = egui_wgpu::Renderer::new(&device, format, egui_wgpu::RendererOptions::default());

    // webdistill on the same device: a small OFA distillation (random teacher) on the bundled data.
    let ctx = embed::adopt(device.clone(), queue.clone())?;
    let cfg = TrainConfig {
        model: "mixer_nano_p4".into(),
        batch: 8,
        train_limit: 512,
        distill: Some(DistillConfig { method: "ofa".into(), teacher: "vit_nano_p4".into(), ..Default::default() }),
        ..TrainConfig::preset("quick")?
    };
    let splits = data::bundled()?;
    // A randomly initialised teacher (a real app loads trained weights with checkpoint::read).
    let teacher = Run::new(&ctx, TrainConfig { model: "vit_nano_p4".into(), distill: None, ..cfg.clone() }, &splits, None)?;
    let teacher = checkpoint::parse(&pollster::block_on(teacher.student_bytes(&Default::default()))?, "teacher")?;
    let mut trainer = HostTrainer::new(Run::new(&ctx, cfg, &splits, Some(&teacher))?)?;

    // The canvas: the loss curve on top, stage-1 feature maps below.
    let (cw, ch) = (320u32, 320u32);
    let canvas = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("canvas"),
        size: wgpu::Extent3d { width: cw, height: ch, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: embed::TEXTURE_FORMAT,
        usage: embed::TEXTURE_USAGE | wgpu::TextureUsages::TEXTURE_BINDING,
        // The writers store sRGB-encoded bytes; egui samples user textures as sRGB.
        view_formats: &[wgpu::TextureFormat::Rgba8UnormSrgb],
    });
    let writer = trainer.writer();
    let hist = trainer.loss_history();
    let outs = trainer.outputs()?;
    let panels = [
        writer.panel(&hist.view(), &hist.layout(), &Style::default(), &canvas, Rect::new(0, 0, cw, 96))?,
        writer.panel(
            &outs[1],
            &trainer.feature_layout(1, 0)?.first_tiles(32),
            &Style::new(Colormap::Viridis, Range::AutoPerTile),
            &canvas,
            Rect::new(0, 100, cw, ch - 100),
        )?,
    ];
    let canvas_view = canvas.create_view(&wgpu::TextureViewDescriptor {
        format: Some(wgpu::TextureFormat::Rgba8UnormSrgb),
        usage: Some(wgpu::TextureUsages::TEXTURE_BINDING),
        ..Default::default()
    });
    let canvas_id = renderer.register_native_texture(&device, &canvas_view, wgpu::FilterMode::Nearest);

    // The app's own render target (a window's surface texture in a real app).
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("egui target"),
        size: wgpu::Extent3d { width: W, height: H, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let target_view = target.create_view(&Default::default());
    let egui_ctx = egui::Context::default();
    let screen = egui_wgpu::ScreenDescriptor { size_in_pixels: [W, H], pixels_per_point: 1.0 };

    let t0 = Instant::now();
    for frame in 0..frames {
        let metrics =
            trainer.latest_metrics().map(|m| format!("loss {:.4} (lr {:.2e})", m.loss, m.lr)).unwrap_or_else(|| "loss: waiting".into());
        let raw = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(W as f32, H as f32))),
            ..Default::default()
        };
        let steps = trainer.steps_submitted();
        let output = egui_ctx.run_ui(raw, |ui| {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.heading("webdistill inside egui");
                ui.label(format!("frame {frame}, step {steps}, {metrics}"));
                ui.image(egui::load::SizedTexture::new(canvas_id, egui::vec2(cw as f32, ch as f32)));
            });
        });
        let jobs = egui_ctx.tessellate(output.shapes, output.pixels_per_point);
        for (id, deltas) in &output.textures_delta.set {
            for delta in deltas {
                renderer.update_texture(&device, &queue, *id, delta);
            }
        }

        // One encoder: training steps, the panels, then egui's pass that samples the canvas.
        let mut enc = device.create_command_encoder(&Default::default());
        trainer.encode(&mut enc, Budget::Steps(1));
        for p in &panels {
            p.encode(&mut enc);
        }
        let extra = renderer.update_buffers(&device, &queue, &mut enc, &jobs, &screen);
        {
            let mut pass = enc
                .begin_render_pass(&wgpu::RenderPassDescriptor {
                    label: Some("egui"),
                    color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                        view: &target_view,
                        depth_slice: None,
                        resolve_target: None,
                        ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
                    })],
                    depth_stencil_attachment: None,
                    timestamp_writes: None,
                    occlusion_query_set: None,
                    multiview_mask: None,
                })
                .forget_lifetime();
            renderer.render(&mut pass, &jobs, &screen);
        }
        queue.submit(extra.into_iter().chain([enc.finish()]));
        trainer.poll()?; // never blocks
        for id in &output.textures_delta.free {
            renderer.free_texture(id);
        }
        // Keep at most about one frame in flight (a swapchain would pace this).
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("waiting for a frame", e))?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let m = trainer.finish()?.map(|m| m.loss);
    println!("adapter: {}", ctx.adapter);
    println!("{frames} frames in {secs:.2} s ({:.2} fps), {} steps, last loss {m:?}", frames as f64 / secs, trainer.steps_completed());

    // Save the last frame.
    let row = W * 4;
    let padded = row.div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (padded * H) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buf,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(padded), rows_per_image: Some(H) },
        },
        target.size(),
    );
    queue.submit([enc.finish()]);
    buf.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::gpu("reading the frame", e))?;
    let px: Vec<u8> = {
        let data = buf.slice(..).get_mapped_range().map_err(|e| Error::gpu("reading the frame", e))?;
        data.chunks_exact(padded as usize).flat_map(|r| r[..row as usize].to_vec()).collect()
    };
    let img = image::RgbaImage::from_raw(W, H, px).ok_or_else(|| Error::usage("frame size"))?;
    img.save(&out).map_err(|e| Error::file(&out, e))?;
    println!("wrote {}", out.display());
    Ok(())
}
