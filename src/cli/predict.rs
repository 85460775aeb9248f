//! `webdistill models` (the registry as a table) and `webdistill predict`.

use crate::data::npy;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::Graph;
use crate::models;
use crate::nn::Fwd;
use crate::store::Store;
use crate::train::inference;
use std::path::{Path, PathBuf};

/// Parameter count, FLOPs per image and stage shapes of every registered model.
pub fn list_models() -> Result<()> {
    println!("{:<26} {:>10} {:>11} {:>6}  stage features (per image)", "model", "params", "GFLOPs/img", "input");
    for e in models::registry() {
        let cfg = e.default_config();
        let mut store = Store::new(0);
        let net = (e.build)(&mut crate::nn::Builder::new(&mut store, ""), &cfg)?;
        let mut g = Graph::new();
        let x = g.input("x", &[1, cfg.in_chans, cfg.img_size, cfg.img_size])?;
        net.forward(&mut g, x, Fwd::eval())?;
        let feats: Vec<String> = net.feature_shapes().iter().map(|f| f.to_string()).collect();
        println!(
            "{:<26} {:>9.2}M {:>11.3} {:>6}  {}",
            e.name,
            store.param_count() as f64 / 1e6,
            g.flops() as f64 / 1e9,
            format!("{}px", cfg.img_size),
            feats.join(", ")
        );
    }
    Ok(())
}

/// `webdistill predict`: logits of a `.npy` batch into `out`, or for images (files, folders)
/// the `top` classes of each (and their logits into `out` if given).
#[allow(clippy::too_many_arguments)]
pub fn predict_cmd(
    ctx: &Context,
    model: Option<&str>,
    weights: &Path,
    input: &[PathBuf],
    out: Option<&Path>,
    card: Option<&Path>,
    top: usize,
    batch: usize,
) -> Result<()> {
    let is_npy = |p: &PathBuf| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if input.iter().any(is_npy) {
        let ([npy_in], Some(out)) = (input, out) else {
            return Err(Error::usage("a .npy input is one [N, C, H, W] batch and needs --out FILE.npy for its logits"));
        };
        let model = match model {
            Some(m) => m.to_string(),
            None => inference::card_of(weights, card)
                .map(|c| c.model)
                .map_err(|_| Error::usage("give --model (the weights carry no card naming it)"))?,
        };
        let (shape, x) = npy::read_npy(npy_in)?;
        let (oshape, logits) = inference::predict(ctx, &model, weights, &shape, &x, batch)?;
        npy::write_npy(out, &oshape, &logits)?;
        println!("wrote {model} logits {oshape:?} to {}", out.display());
        return Ok(());
    }
    let files = inference::image_files(input)?;
    let (shape, logits, card) = inference::predict_images(ctx, model, weights, card, &files, batch)?;
    let classes = shape[1];
    for (f, z) in files.iter().zip(logits.chunks_exact(classes)) {
        // Softmax in f64 for the printed probabilities.
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| e[b].total_cmp(&e[a]));
        let best: Vec<String> = order.iter().take(top.max(1)).map(|&k| format!("{} {:.1}%", card.classes[k], 100.0 * e[k] / sum)).collect();
        println!("{}\t{}", f.display(), best.join(", "));
    }
    if let Some(out) = out {
        npy::write_npy(out, &shape, &logits)?;
        println!("wrote {} logits {shape:?} to {}", card.model, out.display());
    }
    Ok(())
}
