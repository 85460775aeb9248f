//! One-shot jobs over saved checkpoints: test-set accuracy (`webdistill eval`), the CKA of a
//! teacher and a student (`webdistill cka`) and a batch's logits (`webdistill predict`). Native
//! only: they read files and wait for the GPU.

use super::card::ModelCard;
use super::config::TrainConfig;
use super::metrics::{CkaResult, EvalResult};
use super::report;
use super::run::{Run, STUDENT};
use super::runner::load_data;
use crate::checkpoint::{self, LoadOptions};
use crate::distill::objective::DistillConfig;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{Graph, Plan};
use crate::models::{self, ModelConfig};
use crate::nn::Fwd;
use crate::store::Store;
use std::path::Path;

/// Accuracy and loss of a checkpoint on a dataset's test split.
pub fn eval(ctx: &Context, model: &str, weights: &Path, data: &str, img_size: usize, batch: usize) -> Result<EvalResult> {
    let cfg = TrainConfig { model: model.into(), data: data.into(), img_size, eval_batch: batch, epochs: 1, ..TrainConfig::default() };
    let splits = load_data(data, &cfg)?;
    let mut r = Run::new(ctx, cfg, &splits, None)?;
    let t = checkpoint::read(weights)?;
    checkpoint::load_into(&r.store, STUDENT, &t, &weights.display().to_string(), &Default::default())?;
    r.evaluate()
}

/// The models and weights [`cka`] compares.
pub struct CkaPair<'a> {
    pub teacher: &'a str,
    pub teacher_weights: &'a Path,
    pub student: &'a str,
    pub student_weights: &'a Path,
}

/// Linear CKA between every teacher stage and every student stage on the first `images` test
/// images; writes `cka.json` and `cka.png` into `out`.
pub fn cka(ctx: &Context, pair: &CkaPair<'_>, data: &str, img_size: usize, images: usize, out: &Path) -> Result<CkaResult> {
    let cfg = TrainConfig {
        model: pair.student.into(),
        data: data.into(),
        img_size,
        epochs: 1,
        distill: Some(DistillConfig {
            method: "none".into(),
            teacher: pair.teacher.into(),
            teacher_weights: pair.teacher_weights.display().to_string(),
            ..Default::default()
        }),
        ..TrainConfig::default()
    };
    let splits = load_data(data, &cfg)?;
    let tw = checkpoint::read(pair.teacher_weights)?;
    let mut r = Run::new(ctx, cfg, &splits, Some(&tw))?;
    let sw = checkpoint::read(pair.student_weights)?;
    checkpoint::load_into(&r.store, STUDENT, &sw, &pair.student_weights.display().to_string(), &Default::default())?;
    let c = pollster::block_on(r.cka_async(images))?;
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
    let json = serde_json::json!({
        "teacher": pair.teacher, "student": pair.student, "images": c.images, "adapter": ctx.adapter.to_string(),
        "rows": c.teacher_stages, "cols": c.student_stages,
        "cka": c.values.chunks(c.student_stages.len()).map(|c| c.to_vec()).collect::<Vec<_>>(),
    });
    checkpoint::write_atomic(&out.join("cka.json"), serde_json::to_string_pretty(&json).unwrap().as_bytes())?;
    let title = format!("Linear CKA, {} images", c.images);
    report::heatmap(&out.join("cka.png"), &title, &c.values, &c.teacher_stages, &c.student_stages, "teacher stage", "student stage")?;
    Ok(c)
}

/// Eval-mode logits of `model` (weights from `weights`) for an [N, C, H, W] batch.
pub fn predict(ctx: &Context, model: &str, weights: &Path, shape: &[usize], x: &[f32], batch: usize) -> Result<(Vec<usize>, Vec<f32>)> {
    if shape.len() != 4 {
        return Err(Error::BadInput { tensor: "input".into(), msg: format!("expected an [N, C, H, W] array, got shape {shape:?}") });
    }
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if h != w {
        return Err(Error::BadInput { tensor: "input".into(), msg: format!("images must be square, got {h}x{w}") });
    }
    let tensors = checkpoint::read(weights)?;
    logits_of(ctx, model, &tensors, weights, (n, c, h), x, batch)
}

/// The card of a student file: from `card` (a JSON file) if given, else the file's metadata.
pub fn card_of(weights: &Path, card: Option<&Path>) -> Result<ModelCard> {
    match card {
        Some(_) => card_in(&[], weights, card),
        None => card_in(&std::fs::read(weights).map_err(|e| Error::file(weights, e))?, weights, None),
    }
}

/// [`card_of`] with the weights file's bytes already read.
fn card_in(bytes: &[u8], weights: &Path, card: Option<&Path>) -> Result<ModelCard> {
    if let Some(p) = card {
        let s = std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?;
        return ModelCard::from_json(&s, &p.display().to_string());
    }
    let source = weights.display().to_string();
    ModelCard::from_metadata(&checkpoint::metadata(bytes, &source)?, &source)?.ok_or_else(|| {
        Error::file(
            weights,
            format!(
                "has no webdistill card ('{}' metadata: class names, input size, normalisation), as files saved by PyTorch or older versions; give --card FILE.json (see docs/YOUR_DATA.md)",
                ModelCard::META_KEY
            ),
        )
    })
}

/// PNG/JPEG files, and the images under folders (recursively, sorted by path), in the order given.
pub fn image_files(inputs: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>> {
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        let mut v: Vec<_> = std::fs::read_dir(d).map_err(|e| Error::file(d, e))?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        v.sort();
        for p in v {
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_image(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if is_image(p) {
            out.push(p.clone());
        } else if !p.exists() {
            return Err(Error::file(p, "not found"));
        } else {
            return Err(Error::file(p, "not a PNG/JPEG image, a folder of them, or a .npy batch"));
        }
    }
    if out.is_empty() {
        return Err(Error::usage("no PNG/JPEG images among the inputs"));
    }
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.file_name().and_then(|f| f.to_str()).is_some_and(crate::data::folder::is_image)
}

/// Eval-mode logits of a student for image files, prepared as its card says (decoded,
/// resized, padded and normalised exactly as its training data was). `model` overrides the
/// card's architecture name. Returns the logits `[files, classes]` and the card.
pub fn predict_images(
    ctx: &Context,
    model: Option<&str>,
    weights: &Path,
    card: Option<&Path>,
    files: &[std::path::PathBuf],
    batch: usize,
) -> Result<(Vec<usize>, Vec<f32>, ModelCard)> {
    let bytes = std::fs::read(weights).map_err(|e| Error::file(weights, e))?;
    let card = card_in(&bytes, weights, card)?;
    let model = model.unwrap_or(&card.model).to_string();
    let mut x = Vec::with_capacity(files.len() * card.channels * card.input_size * card.input_size);
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::file(f, e))?;
        x.extend(card.image_input(&bytes, &f.display().to_string())?);
    }
    let tensors = checkpoint::parse(&bytes, &weights.display().to_string())?;
    let (shape, logits) = logits_of(ctx, &model, &tensors, weights, (files.len(), card.channels, card.input_size), &x, batch)?;
    if shape[1] != card.classes.len() {
        return Err(Error::file(weights, format!("gives {} logits but its card names {} classes", shape[1], card.classes.len())));
    }
    Ok((shape, logits, card))
}

/// Logits of `model` with `tensors` for `n` images of `c x h x h`, `batch` at a time.
fn logits_of(
    ctx: &Context,
    model: &str,
    tensors: &std::collections::BTreeMap<String, checkpoint::FileTensor>,
    weights: &Path,
    (n, c, h): (usize, usize, usize),
    x: &[f32],
    batch: usize,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let entry = models::entry(model)?;
    let head = tensors.get(entry.head_weight).ok_or_else(|| {
        Error::file(
            weights,
            format!("has no '{}' tensor, so it is not a {model} checkpoint (or its head is named differently)", entry.head_weight),
        )
    })?;
    let classes = head.shape[0];
    let mut store = Store::new(0);
    let net = models::build(model, &mut store, "", &ModelConfig::new(c, h, classes))?;
    store.upload(ctx)?;
    checkpoint::load_into(&store, "", tensors, &weights.display().to_string(), &LoadOptions::default())?;
    let b = batch.min(n).max(1);
    let mut g = Graph::new();
    let xv = g.input("x", &[b, c, h, h])?;
    let out = net.forward(&mut g, xv, Fwd::eval())?;
    g.keep(out.logits);
    let plan = Plan::compile(ctx, &g, &mut store, "predict")?;
    let per = c * h * h;
    let mut logits = Vec::with_capacity(n * classes);
    for start in (0..n).step_by(b) {
        let rows = b.min(n - start);
        // The last batch is padded with zeros; eval mode treats samples independently.
        let mut chunk = x[start * per..(start + rows) * per].to_vec();
        chunk.resize(b * per, 0.0);
        plan.write(xv, &chunk)?;
        plan.step()?;
        let y = plan.read(out.logits)?;
        logits.extend_from_slice(&y[..rows * classes]);
    }
    Ok((vec![n, classes], logits))
}
