//! Embedding in a host application (src/embed): training through an adopted device gives the
//! same bits as through the library's own, the texture writers map known tensors to known
//! colours, the GPU loss history records what the metrics say, and the headless example
//! renders and trains.

mod common;
use common::ctx;
use webdistill::embed::{self, Budget, Colormap, HostTrainer, Layout, LossHistory, Range, Rect, Style, TensorView, TextureWriter};
use webdistill::train::Run;
use webdistill::train::{DistillConfig, TrainConfig};
use webdistill::{Context, checkpoint, data};

#[path = "../examples/embed_render/scene.rs"]
#[allow(dead_code)]
mod scene;

/// A buffer holding `values` (storage, like a plan's tensors).
fn tensor(ctx: &Context, name: &str, values: &[f32], shape: &[usize]) -> TensorView {
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(name),
        size: (values.len() * 4).max(16) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(values));
    TensorView { name: name.into(), buffer, offset: 0, shape: shape.to_vec() }
}

fn canvas(ctx: &Context, w: u32, h: u32) -> wgpu::Texture {
    ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("canvas"),
        size: wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: embed::TEXTURE_FORMAT,
        usage: embed::TEXTURE_USAGE | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    })
}

/// Draw `src` with `layout` and `style` into a fresh `w x h` texture and read its texels.
fn draw(writer: &TextureWriter, src: &TensorView, layout: &Layout, style: &Style, w: u32, h: u32) -> Vec<[u8; 4]> {
    let ctx = writer.context();
    let tex = canvas(ctx, w, h);
    let panel = writer.panel(src, layout, style, &tex, Rect::new(0, 0, w, h)).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    panel.encode(&mut enc);
    ctx.queue.submit([enc.finish()]);
    scene::read_texture(&ctx.device, &ctx.queue, &tex).unwrap().chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect()
}

fn assert_rgb(what: &str, got: [u8; 4], want: [u8; 3]) {
    let ok = (0..3).all(|c| (got[c] as i32 - want[c] as i32).abs() <= 1) && got[3] == 255;
    assert!(ok, "{what}: got {got:?}, want {want:?}");
}

const BG: [f32; 4] = [0.0, 0.0, 0.0, 1.0];

#[test]
fn texture_writers_map_known_tensors_to_known_colours() {
    let ctx = ctx();
    let writer = TextureWriter::new(&ctx).unwrap();

    // Viridis stops, clamping, NaN and a fixed range: a 1 x 13 matrix into 13 x 1 texels.
    let mut vals: Vec<f32> = (0..10).map(|i| i as f32 / 9.0).collect();
    vals.extend([-3.0, 7.0, f32::NAN]);
    let src = tensor(&ctx, "stops", &vals, &[1, 13]);
    let fixed = Style::new(Colormap::Viridis, Range::Fixed { lo: 0.0, hi: 1.0 }).background(BG);
    let px = draw(&writer, &src, &Layout::matrix(1, 13), &fixed, 13, 1);
    let stops = Colormap::Viridis.stops();
    for i in 0..10 {
        assert_rgb(&format!("viridis stop {i}"), px[i], stops[i]);
    }
    assert_rgb("below the range", px[10], stops[0]);
    assert_rgb("above the range", px[11], stops[9]);
    assert_rgb("NaN", px[12], embed::BAD_COLOUR);
    assert_eq!(stops[0], [68, 1, 84]);
    assert_eq!(stops[9], [253, 231, 37]);

    // Between stops: the CPU reference (linear between stops), over a sweep of 64 values.
    let sweep: Vec<f32> = (0..64).map(|i| i as f32 / 63.0).collect();
    let src = tensor(&ctx, "sweep", &sweep, &[8, 8]);
    for cmap in [Colormap::Viridis, Colormap::Diverging, Colormap::Gray] {
        let px = draw(&writer, &src, &Layout::matrix(8, 8), &Style::new(cmap, Range::Fixed { lo: 0.0, hi: 1.0 }), 8, 8);
        for (i, &t) in sweep.iter().enumerate() {
            assert_rgb(&format!("{cmap:?} at {t}"), px[i], cmap.sample(t));
        }
    }

    // Auto range, symmetric, diverging: -2 -> first stop, 0 -> centre (near white), 1 -> 3/4.
    let src = tensor(&ctx, "signed", &[-2.0, 0.0, 1.0, 2.0], &[4]);
    let sym = Style::new(Colormap::Diverging, Range::Auto).symmetric();
    let px = draw(&writer, &src, &Layout::matrix(1, 4), &sym, 4, 1);
    assert_rgb("-2", px[0], [5, 48, 97]);
    assert_rgb("0", px[1], [247, 247, 247]);
    assert_rgb("1", px[2], Colormap::Diverging.sample(0.75));
    assert_rgb("2", px[3], [103, 0, 31]);

    // A grid of two 2x2 tiles (NCHW, one sample of two) with a gap, each tile its own range:
    // tile 0 = [0 1; 2 3], tile 1 = [10 10; 10 20]. 5 x 2 cells fill a 5 x 2 texture exactly.
    let mut v = vec![0.0, 1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 20.0];
    v.extend([99.0; 8]); // sample 1 is not shown
    let src = tensor(&ctx, "maps", &v, &[2, 2, 2, 2]);
    let layout = Layout::nchw(&[2, 2, 2, 2], 0).unwrap();
    let per_tile = Style::new(Colormap::Gray, Range::AutoPerTile).background([1.0, 0.0, 0.0, 1.0]);
    let px = draw(&writer, &src, &layout, &per_tile, 5, 2);
    let at = |x: usize, y: usize| px[y * 5 + x];
    assert_rgb("tile 0 min", at(0, 0), [0, 0, 0]);
    assert_rgb("tile 0 (0,1)", at(1, 0), [85, 85, 85]);
    assert_rgb("tile 0 (1,0)", at(0, 1), [170, 170, 170]);
    assert_rgb("tile 0 max", at(1, 1), [255, 255, 255]);
    assert_rgb("gap", at(2, 0), [255, 0, 0]);
    assert_rgb("gap", at(2, 1), [255, 0, 0]);
    assert_rgb("tile 1 min", at(3, 0), [0, 0, 0]);
    assert_rgb("tile 1 max", at(4, 1), [255, 255, 255]);
    // One range for all tiles: 0..20.
    let px = draw(&writer, &src, &layout, &Style::new(Colormap::Gray, Range::Auto), 5, 2);
    assert_rgb("shared range: 10", px[3], [128, 128, 128]);

    // Token layout: [1, 1 + 4, 2] with a class token; channel 1 of the 2x2 patch grid.
    let tok = [100.0, 100.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0];
    let src = tensor(&ctx, "tokens", &tok, &[1, 5, 2]);
    let layout = Layout::tokens(&[1, 5, 2], 1, 0).unwrap();
    let px = draw(&writer, &src, &layout, &Style::new(Colormap::Gray, Range::Fixed { lo: 0.0, hi: 3.0 }).background(BG), 5, 2);
    assert_rgb("token channel 0 is all zeros", px[0], [0, 0, 0]);
    assert_rgb("token 4 channel 1", px[5 + 4], [255, 255, 255]);
    assert_rgb("token 2 channel 1", px[4], [85, 85, 85]);

    // Bars: [1, 0.5] over 0..1 in a 2 x 4 texture: a full bar and a half bar on black.
    let src = tensor(&ctx, "hist", &[1.0, 0.5], &[2]);
    let bars = Style::new(Colormap::Gray, Range::Fixed { lo: 0.0, hi: 1.0 }).background(BG);
    let px = draw(&writer, &src, &Layout::Bars { base: 0, n: 2, stride: 1 }, &bars, 2, 4);
    for y in 0..4 {
        assert_rgb("full bar", px[y * 2], [255, 255, 255]);
        let want = if y >= 2 { [128, 128, 128] } else { [0, 0, 0] };
        assert_rgb(&format!("half bar row {y}"), px[y * 2 + 1], want);
    }

    // A rising curve over an 8 x 8 texture: the line goes from bottom left (dark) to top right
    // (light; each column takes the colour of the curve's value at its centre).
    let src = tensor(&ctx, "curve", &[0.0, 1.0], &[2]);
    let px =
        draw(&writer, &src, &Layout::Curve { base: 0, n: 2, stride: 1 }, &Style::new(Colormap::Gray, Range::Auto).background(BG), 8, 8);
    let bg = [0, 0, 0, 255];
    assert!(px[7 * 8] != bg && px[7 * 8][0] < 40, "bottom left lit in a dark grey: {:?}", px[7 * 8]);
    assert!(px[7] != bg && px[7][0] > 200, "top right lit in a light grey: {:?}", px[7]);
    assert_rgb("top left empty", px[0], [0, 0, 0]);
    assert_rgb("bottom right empty", px[7 * 8 + 7], [0, 0, 0]);

    // Bad inputs are refused with a message.
    let tex = canvas(&ctx, 4, 4);
    let e = writer.panel(&src, &Layout::matrix(3, 3), &Style::default(), &tex, Rect::new(0, 0, 4, 4)).err().unwrap().to_string();
    assert!(e.contains("reads 9 values"), "{e}");
    let e = writer.panel(&src, &Layout::matrix(1, 2), &Style::default(), &tex, Rect::new(2, 2, 4, 4)).err().unwrap().to_string();
    assert!(e.contains("outside"), "{e}");
}

#[test]
fn loss_history_records_the_mean_loss_of_each_call() {
    let ctx = ctx();
    let writer = TextureWriter::new(&ctx).unwrap();
    let metrics = tensor(&ctx, "metrics", &[0.0, 0.0, 0.0], &[3]);
    let hist = LossHistory::new(&writer, &metrics, 3).unwrap();
    let record = |sum: f32, count: f32| {
        ctx.queue.write_buffer(&metrics.buffer, 0, bytemuck::cast_slice(&[sum, count]));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        hist.encode_record(&mut enc);
        ctx.queue.submit([enc.finish()]);
    };
    record(6.0, 3.0); // 3 steps, mean 2
    record(10.0, 5.0); // 2 more steps with sum 4: mean 2
    record(10.0, 5.0); // no new steps: nothing recorded
    assert_eq!(hist.read(&ctx).unwrap(), vec![2.0, 2.0]);
    // The host read and reset the metrics and told the ring.
    hist.metrics_reset(&ctx.queue);
    record(1.5, 1.0);
    assert_eq!(hist.read(&ctx).unwrap(), vec![2.0, 2.0, 1.5]);
    // Two more steps (sum 3, mean 1.5): the ring of 3 wraps.
    record(4.5, 3.0);
    assert_eq!(hist.read(&ctx).unwrap(), vec![2.0, 1.5, 1.5]);
    // A reset nobody announced (the count went down from 3 to 1) counts from zero.
    record(0.5, 1.0);
    assert_eq!(hist.read(&ctx).unwrap(), vec![1.5, 1.5, 0.5]);
    // Drawn as a curve it lights some texels.
    let px = draw(&writer, &hist.view(), &hist.layout(), &Style::default().background(BG), 16, 8);
    assert!(px.iter().any(|p| *p != [0, 0, 0, 255]));
}

/// A tiny KD run between token models (no convolutions), batch 4.
fn kd_config() -> TrainConfig {
    TrainConfig {
        model: "mixer_nano_p4".into(),
        batch: 4,
        train_limit: 64,
        test_limit: 16,
        eval_batch: 16,
        distill: Some(DistillConfig { method: "kd".into(), teacher: "vit_nano_p4".into(), ..Default::default() }),
        seed: 7,
        ..TrainConfig::preset("quick").unwrap()
    }
}

fn teacher_weights(ctx: &Context, splits: &data::Splits) -> std::collections::BTreeMap<String, checkpoint::FileTensor> {
    let cfg = TrainConfig { model: "vit_nano_p4".into(), distill: None, ..kd_config() };
    let t = Run::new(ctx, cfg, splits, None).unwrap();
    checkpoint::parse(&pollster::block_on(t.student_bytes(&Default::default())).unwrap(), "teacher").unwrap()
}

#[test]
fn adopted_device_trains_bit_for_bit_like_the_library_s_own() {
    let splits = data::bundled().unwrap();
    let own = ctx();
    let teacher = teacher_weights(&own, &splits);

    // The host: its own instance, adapter and device, opened the way EMBEDDING.md says.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("host"),
        required_features: embed::recommended_features(&adapter),
        required_limits: embed::recommended_limits(&adapter),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(adapter.get_info().name, own.device.adapter_info().name, "the test needs the same adapter twice");
    let host = embed::adopt(device.clone(), queue.clone()).unwrap();
    assert!(host.adopted);

    // Library-owned: three steps in one submit, as the CLI does.
    let mut a = Run::new(&own, kd_config(), &splits, Some(&teacher)).unwrap();
    a.train_steps(3).unwrap();
    let ma = a.parse_train_metrics(&a.request_train_metrics().unwrap().wait(&own).unwrap());

    // Host-driven: one step per frame in the host's encoder, then the trainer's own submit.
    let mut t = HostTrainer::new(Run::new(&host, kd_config(), &splits, Some(&teacher)).unwrap()).unwrap();
    for _ in 0..2 {
        let mut enc = device.create_command_encoder(&Default::default());
        assert_eq!(t.encode(&mut enc, Budget::Steps(1)), 1);
        queue.submit([enc.finish()]);
        t.poll().unwrap();
    }
    assert_eq!(t.submit(Budget::Steps(1)).unwrap(), 1);
    t.finish().unwrap();
    assert_eq!(t.steps_completed(), 3);
    assert_eq!(t.steps_submitted(), 3);

    let wa = pollster::block_on(a.student_bytes(&Default::default())).unwrap();
    let wb = pollster::block_on(t.run().student_bytes(&Default::default())).unwrap();
    assert!(wa == wb, "student weights differ between the library's device and the adopted one");
    // Same losses too: the GPU loss history holds each call's mean; their mean is the run's.
    let hist = t.loss_history().read(&host).unwrap();
    assert_eq!(hist.len(), 3);
    let mean = hist.iter().sum::<f32>() / 3.0;
    assert!((mean - ma.loss).abs() < 1e-5 * ma.loss.abs().max(1.0), "history {hist:?} vs metrics {}", ma.loss);
    assert!(t.latest_metrics().is_some());

    // The CKA matrix recorded into the host's encoder is the one `cka_async` reads back.
    let (view, layout) = t.cka_view(16).unwrap();
    assert_eq!(layout, Layout::matrix(view.shape[0], view.shape[1]));
    let mut enc = device.create_command_encoder(&Default::default());
    t.encode_cka(&mut enc, 16).unwrap();
    queue.submit([enc.finish()]);
    let on_gpu = view.read(&host).unwrap();
    let read_back = pollster::block_on(t.run_mut().cka_async(16)).unwrap();
    assert_eq!(on_gpu, read_back.values);
    assert!(on_gpu.iter().all(|v| v.is_finite() && (-1e-3..=1.0 + 1e-3).contains(v)), "{on_gpu:?}");
}

#[test]
fn adopting_a_device_with_webgpu_default_limits_is_refused_with_advice() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let e = embed::adopt(device, queue).err().unwrap().to_string();
    assert!(e.contains("recommended_limits"), "{e}");
}

#[test]
fn headless_example_renders_frames_while_training_advances() {
    let out = std::env::temp_dir().join(format!("webdistill-embed-{}.png", std::process::id()));
    let opts = scene::Options {
        frames: 3,
        width: 320,
        height: 180,
        batch: 4,
        steps_per_frame: 1,
        warmup_frames: 0,
        out: Some(out.clone()),
        ..scene::Options::default()
    };
    let report = scene::run_headless(&opts).unwrap();
    // Training advanced in every frame: the GPU's step counter and the loss ring say so.
    assert_eq!(report.steps_submitted, 3);
    assert_eq!(report.steps_completed, 3);
    assert_eq!(report.history.len(), 3, "one loss record per frame: {:?}", report.history);
    assert!(report.history.iter().all(|l| l.is_finite() && *l > 0.0));
    assert_eq!(report.frames, 3);
    let img = image::open(&out).unwrap().to_rgba8();
    assert_eq!((img.width(), img.height()), (320, 180));
    let first = img.get_pixel(0, 0);
    let distinct = img.pixels().filter(|p| *p != first).count();
    assert!(distinct > 1000, "the PNG is (nearly) one colour: {distinct} pixels differ from the corner");
    std::fs::remove_file(&out).ok();
}
