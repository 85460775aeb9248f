//! `webdistill predict` and `webdistill models`.

use crate::checkpoint::{self, LoadOptions};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{Graph, Plan};
use crate::models::{self, ModelConfig};
use crate::nn::Fwd;
use crate::store::Store;
use std::path::Path;

/// Read a float32 C-order `.npy` as (shape, values).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| Error::file(path, format!("not a .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(Error::file(path, "array is in Fortran order; save it in C order (np.ascontiguousarray)"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let dtype = npy.dtype();
    let data: Vec<f32> = match npy.into_vec::<f32>() {
        Ok(v) => v,
        Err(_) => return Err(Error::file(path, format!("array dtype is {dtype:?}, expected float32"))),
    };
    Ok((shape, data))
}

/// Write a float32 C-order `.npy`.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let mut buf = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
            .writer(&mut buf)
            .begin_nd()
            .map_err(|e| Error::file(path, e))?;
        w.extend(data.iter().copied()).map_err(|e| Error::file(path, e))?;
        w.finish().map_err(|e| Error::file(path, e))?;
    }
    checkpoint::write_atomic(path, &buf)
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
    let entry = models::entry(model)?;
    let tensors = checkpoint::read(weights)?;
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
    checkpoint::load_into(&store, "", &tensors, &weights.display().to_string(), &LoadOptions::default())?;
    let b = batch.min(n).max(1);
    let mut g = Graph::new();
    let xv = g.input("x", &[b, c, h, w])?;
    let out = net.forward(&mut g, xv, Fwd::eval())?;
    g.keep(out.logits);
    let plan = Plan::compile(ctx, &g, &mut store, "predict")?;
    let per = c * h * w;
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
