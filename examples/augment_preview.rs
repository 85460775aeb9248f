//! Write a PNG grid of GPU-augmented views, to check augmentations by eye.
//!
//!     cargo run --example augment_preview -- [--data SPEC] [--out preview.png] [--seed N] [--steps N]
//!
//! Rows: the plain images; the training views (RandomResizedCrop, flip, colour jitter,
//! grayscale, blur, mixup/cutmix, each step's batch); the OBoW teacher view, large crops and
//! patches (upscaled to the image size). Values are shown before normalisation.

use webdistill::data::{self, Augment, BatchSpec, Blur, Crop, DataSpec, GpuData, Jitter, LoadOptions, Mix, MultiCropSpec};
use webdistill::{Context, Graph, Plan, Store};

fn main() -> webdistill::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut spec, mut out, mut seed, mut steps) = (DataSpec::Bundled, "preview.png".to_string(), 0u64, 3usize);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--data" => spec = v.parse()?,
            "--out" => out = v,
            "--seed" => seed = v.parse().unwrap_or(0),
            "--steps" => steps = v.parse().unwrap_or(3),
            _ => return Err(webdistill::Error::usage(format!("unknown argument {a}"))),
        }
    }
    let ds = spec.load(&LoadOptions::default())?.train;
    let (b, s, c) = (8usize, ds.h, ds.c);
    let ctx = Context::new()?;
    let mut store = Store::new(seed);
    let gd = GpuData::upload(&ctx, &mut store, &ds, "train")?;
    let counter = GpuData::counter(&mut store, "step")?;
    let mut g = Graph::new();
    let step = g.state(&counter);
    let plain = g.batch(&gd, &BatchSpec::eval(b), step, seed)?;
    let train = BatchSpec {
        augment: Augment {
            crop: Crop::ResizedCrop { scale: (0.2, 1.0), ratio: (0.75, 4.0 / 3.0) },
            hflip: 0.5,
            jitter: Some(Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 }),
            grayscale: 0.2,
            blur: Some(Blur { sigma: (0.1, 1.0), kernel: 3, p: 0.5 }),
        },
        mix: Some(Mix::timm_default()),
        ..BatchSpec::train(b)
    };
    let aug = g.batch(&gd, &train, step, seed)?;
    let mc = g.multicrop(&gd, &MultiCropSpec::obow(b, s), step, seed)?;
    let views = [plain.images, aug.images, mc.teacher, mc.large.unwrap(), mc.patches.unwrap()];
    for &v in &views {
        g.keep(v);
    }
    g.data_tick(step)?;
    let plan = Plan::compile(&ctx, &g, &mut store, "preview")?;
    // One row of `b` tiles per tensor row group.
    let mut rows: Vec<Vec<Vec<f32>>> = Vec::new();
    for _ in 0..steps {
        plan.step()?;
        for (k, &v) in views.iter().enumerate() {
            let x = plan.read(v)?;
            let shape = g.shape(v).to_vec();
            let (n, side) = (shape[0], shape[2]);
            let per = c * side * side;
            for r in 0..n.div_ceil(b) {
                if k == 0 && !rows.is_empty() {
                    break;
                }
                let tiles =
                    (0..b).filter(|i| r * b + i < n).map(|i| upscale(&x[(r * b + i) * per..(r * b + i + 1) * per], c, side, s)).collect();
                rows.push(tiles);
            }
        }
    }
    let pad = 2;
    let (gw, gh) = ((b * (s + pad)) as u32, (rows.len() * (s + pad)) as u32);
    let mut img = image::RgbImage::from_pixel(gw, gh, image::Rgb([40, 40, 60]));
    for (r, tiles) in rows.iter().enumerate() {
        for (t, tile) in tiles.iter().enumerate() {
            for y in 0..s {
                for x in 0..s {
                    let px = |ch: usize| (tile[(ch.min(c - 1) * s + y) * s + x].clamp(0.0, 1.0) * 255.0) as u8;
                    img.put_pixel((t * (s + pad) + x) as u32, (r * (s + pad) + y) as u32, image::Rgb([px(0), px(1), px(2)]));
                }
            }
        }
    }
    img.save(&out).map_err(|e| webdistill::Error::file(&out, e))?;
    println!("wrote {} ({} rows of {b} views from {})", out, rows.len(), data::DataSpec::to_string(&spec));
    Ok(())
}

/// Nearest-neighbour upscale of a C x side x side tile to C x s x s.
fn upscale(t: &[f32], c: usize, side: usize, s: usize) -> Vec<f32> {
    let mut o = vec![0.0; c * s * s];
    for ch in 0..c {
        for y in 0..s {
            for x in 0..s {
                o[(ch * s + y) * s + x] = t[(ch * side + y * side / s) * side + x * side / s];
            }
        }
    }
    o
}
