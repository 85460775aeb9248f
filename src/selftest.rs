//! A fixed small training step that exercises the core ops end to end, for comparing adapters.
//!
//! The same graph runs natively (`webdistill selftest --json`) and in the browser (the wasm
//! `selftest()`); the browser tests compare the two outputs within a float tolerance. It covers
//! matmul (through `linear` and a plain `matmul`), a broadcasting add, gelu, layer_norm, softmax,
//! cross-entropy, the backward pass and one AdamW step with weight decay, on fixed inputs made
//! from integer arithmetic only (so both sides start from bit-identical values).

use crate::error::Result;
use crate::gpu::Context;
use crate::graph::{Graph, Plan, Var};
use crate::optim::{OptimState, Optimizer};
use crate::store::{Init, Param, Store, Which};
use serde::{Deserialize, Serialize};

/// Rows of the batch.
pub const ROWS: usize = 6;
/// Input features.
pub const IN: usize = 12;
/// Hidden width.
pub const HIDDEN: usize = 16;
/// Classes.
pub const CLASSES: usize = 5;
/// AdamW settings of the one update step.
pub const LR: f32 = 1e-2;
pub const WEIGHT_DECAY: f32 = 0.05;

/// Deterministic values in [-scale, scale): a 32-bit LCG whose top bits become an exact f32.
pub fn fixed_values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // 16 bits -> an exact multiple of 2^-15 in [-1, 1); times a power-of-two-free scale
            // is still computed identically on every IEEE machine.
            ((s >> 16) as f32 / 32768.0 - 1.0) * scale
        })
        .collect()
}

/// The fixed labels.
pub fn fixed_labels() -> Vec<u32> {
    (0..ROWS).map(|i| ((i * 3 + 1) % CLASSES) as u32).collect()
}

/// One named output vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Everything the self-test produced, with the adapter it ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub adapter: String,
    pub outputs: Vec<Output>,
}

impl Report {
    pub fn get(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serialising plain data")
    }
}

/// The parameters of the self-test network.
pub struct Net {
    pub w1: Param,
    pub b1: Param,
    pub ln_w: Param,
    pub ln_b: Param,
    pub w2: Param,
    pub b2: Param,
    pub mix: Param,
}

/// The graph and the handles a caller needs to feed it and read it.
pub struct Built {
    pub graph: Graph,
    pub store: Store,
    pub net: Net,
    pub state: OptimState,
    pub x: Var,
    pub y: Var,
    /// Named forward intermediates, kept for readback.
    pub kept: Vec<(&'static str, Var)>,
    pub loss: Var,
}

fn values(n: usize, seed: u32, scale: f32) -> Init {
    Init::Values(fixed_values(n, seed, scale).into())
}

/// Register the parameters in a fresh store (not yet on the GPU).
pub fn net(store: &mut Store) -> Result<Net> {
    Ok(Net {
        w1: store.param("fc1.weight", &[HIDDEN, IN], values(HIDDEN * IN, 1, 0.5))?,
        b1: store.param("fc1.bias", &[HIDDEN], values(HIDDEN, 2, 0.25))?,
        ln_w: store.param(
            "norm.weight",
            &[HIDDEN],
            Init::Values(fixed_values(HIDDEN, 3, 0.25).iter().map(|v| 1.0 + v).collect::<Vec<f32>>().into()),
        )?,
        ln_b: store.param("norm.bias", &[HIDDEN], values(HIDDEN, 4, 0.125))?,
        w2: store.param("fc2.weight", &[CLASSES, HIDDEN], values(CLASSES * HIDDEN, 5, 0.5))?,
        b2: store.param("fc2.bias", &[CLASSES], values(CLASSES, 6, 0.25))?,
        mix: store.param("mix", &[CLASSES, CLASSES], values(CLASSES * CLASSES, 7, 0.5))?,
    })
}

/// Build the forward graph, its backward pass and one AdamW update; uploads the store.
pub fn build(ctx: &Context) -> Result<Built> {
    let mut store = Store::new(0);
    let net = net(&mut store)?;
    let state = OptimState::register(&mut store, "opt")?;
    store.upload(ctx)?;
    let mut g = Graph::new();
    let x = g.input("x", &[ROWS, IN])?;
    let y = g.labels("y", &[ROWS], CLASSES)?;
    let (w1, b1, lw, lb, w2, b2, mix) =
        (g.param(&net.w1), g.param(&net.b1), g.param(&net.ln_w), g.param(&net.ln_b), g.param(&net.w2), g.param(&net.b2), g.param(&net.mix));
    // linear (matmul with transposed weight and fused bias), then a broadcasting add of a row.
    let h = g.linear(x, w1, None)?;
    let h = g.add(h, b1)?;
    let a = g.gelu(h)?;
    let n = g.layer_norm(a, Some(lw), Some(lb), 1e-5)?;
    let z = g.linear(n, w2, Some(b2))?;
    // A plain (untransposed) matmul.
    let logits = g.matmul(z, mix)?;
    let p = g.softmax(logits)?;
    let ce = g.cross_entropy(logits, y, 0.1)?;
    // Route the softmax into the loss too, so its backward runs: loss = ce + mean(p * k).
    let k = g.constant(&[ROWS, CLASSES], &fixed_values(ROWS * CLASSES, 8, 1.0))?;
    let pk = g.mul(p, k)?;
    let reg = g.mean_all(pk)?;
    let loss = g.add(ce, reg)?;
    let kept =
        vec![("hidden", h), ("gelu", a), ("layer_norm", n), ("logits", logits), ("softmax", p), ("cross_entropy", ce), ("loss", loss)];
    for &(_, v) in &kept {
        g.keep(v);
    }
    let grads = g.backward(loss)?;
    Optimizer::adamw(LR, WEIGHT_DECAY).apply(&mut g, &mut store, &state, &grads)?;
    Ok(Built { graph: g, store, net, state, x, y, kept, loss })
}

impl Net {
    pub fn params(&self) -> [&Param; 7] {
        [&self.w1, &self.b1, &self.ln_w, &self.ln_b, &self.w2, &self.b2, &self.mix]
    }
}

/// Run the self-test once and read every output: the forward intermediates, the loss, each
/// parameter's gradient (`grad.NAME`) and its value after the AdamW step (`param.NAME`).
pub async fn run(ctx: &Context) -> Result<Report> {
    let mut b = build(ctx)?;
    let plan = Plan::compile(ctx, &b.graph, &mut b.store, "selftest")?;
    plan.write(b.x, &fixed_values(ROWS * IN, 9, 2.0))?;
    plan.write_u32(b.y, &fixed_labels())?;
    plan.step()?;
    let vars: Vec<Var> = b.kept.iter().map(|&(_, v)| v).collect();
    let got = plan.request(&vars)?.take(ctx).await?;
    let mut outputs = Vec::new();
    for (&(name, v), values) in b.kept.iter().zip(got) {
        outputs.push(Output { name: name.to_string(), shape: b.graph.shape(v).to_vec(), values });
    }
    for p in b.net.params() {
        let values = b.store.read_param_async(p, Which::Grad).await?;
        outputs.push(Output { name: format!("grad.{}", p.name()), shape: p.shape().to_vec(), values });
    }
    for p in b.net.params() {
        let values = b.store.read_param_async(p, Which::Value).await?;
        outputs.push(Output { name: format!("param.{}", p.name()), shape: p.shape().to_vec(), values });
    }
    ctx.check("running the self-test")?;
    Ok(Report { adapter: ctx.adapter.to_string(), outputs })
}

/// The largest `|a - b| / (atol + rtol |b|)` over all outputs of two reports, with where it
/// is; `Err` names an output missing from `b` or of another shape. A ratio <= 1 means equal
/// within the tolerance.
pub fn compare(a: &Report, b: &Report, atol: f64, rtol: f64) -> std::result::Result<(f64, String), String> {
    let mut worst = (0.0f64, String::from("nothing compared"));
    for o in &a.outputs {
        let other = b.get(&o.name).ok_or_else(|| format!("output '{}' is missing", o.name))?;
        if other.shape != o.shape || other.values.len() != o.values.len() {
            return Err(format!("output '{}': shape {:?} vs {:?}", o.name, o.shape, other.shape));
        }
        for (i, (&x, &y)) in o.values.iter().zip(&other.values).enumerate() {
            let r = (x as f64 - y as f64).abs() / (atol + rtol * (y as f64).abs());
            if !r.is_finite() || !(r <= worst.0) {
                worst = (if r.is_nan() { f64::INFINITY } else { r }, format!("{}[{i}]: {x} vs {y}", o.name));
            }
        }
    }
    Ok(worst)
}
