//! A small MLP classifier trained with AdamW on a synthetic task: points on interleaved
//! spirals, one arm per class. Everything is made here on the CPU from a seed (no files), so
//! the run is the same natively and in the browser. It goes through the library's ordinary
//! path: nn layers -> Graph -> backward -> Optimizer::apply -> Plan.

use super::{LocalFuture, Metrics, Pcg, Session, now_ms};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{Graph, Plan, Var};
use crate::nn::{Builder, Linear};
use crate::optim::{OptimState, Optimizer};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// Settings of the MLP session (JSON field names as here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Spiral arms, one per class.
    pub classes: usize,
    /// Training points per class.
    pub train_per_class: usize,
    /// Held-out points per class.
    pub test_per_class: usize,
    /// Turns of each arm.
    pub turns: f64,
    /// Standard deviation of the angle noise, in radians.
    pub noise: f64,
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Hidden layers (each Linear + GELU).
    pub layers: usize,
    /// Examples per training step.
    pub batch: usize,
    /// AdamW learning rate and weight decay.
    pub lr: f32,
    pub weight_decay: f32,
    /// Seeds the data, the initial weights and the batch order.
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            classes: 3,
            train_per_class: 512,
            test_per_class: 256,
            turns: 1.0,
            noise: 0.15,
            hidden: 64,
            layers: 2,
            batch: 128,
            lr: 1e-2,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// Points (x, y) in about [-1, 1]^2 and their arm.
pub fn spirals(classes: usize, per_class: usize, turns: f64, noise: f64, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Pcg::new(seed);
    let mut xs = Vec::with_capacity(classes * per_class * 2);
    let mut ys = Vec::with_capacity(classes * per_class);
    for c in 0..classes {
        for _ in 0..per_class {
            let r = 0.05 + 0.95 * rng.uniform();
            let theta = std::f64::consts::TAU * (turns * r + c as f64 / classes as f64) + noise * rng.normal();
            xs.push((r * theta.cos()) as f32);
            xs.push((r * theta.sin()) as f32);
            ys.push(c as u32);
        }
    }
    (xs, ys)
}

pub struct MlpSession {
    ctx: Context,
    config: MlpConfig,
    store: Store,
    train: Plan,
    eval: Plan,
    x: Var,
    y: Var,
    loss: Var,
    eval_loss: Var,
    eval_correct: Var,
    train_x: Vec<f32>,
    train_y: Vec<u32>,
    test_examples: usize,
    order: Vec<usize>,
    cursor: usize,
    rng: Pcg,
    steps: u64,
    batch_x: Vec<f32>,
    batch_y: Vec<u32>,
}

fn forward(g: &mut Graph, layers: &[Linear], x: Var) -> Result<Var> {
    let mut h = x;
    for (i, l) in layers.iter().enumerate() {
        h = l.forward(g, h)?;
        if i + 1 < layers.len() {
            h = g.gelu(h)?;
        }
    }
    Ok(h)
}

impl MlpSession {
    pub fn new(ctx: &Context, config: MlpConfig) -> Result<Self> {
        let c = &config;
        if c.classes < 2 || c.train_per_class == 0 || c.test_per_class == 0 || c.hidden == 0 || c.layers == 0 || c.batch == 0 {
            return Err(Error::usage(format!(
                "MLP session: classes must be >= 2 and train_per_class, test_per_class, hidden, layers and batch >= 1 (got {c:?})"
            )));
        }
        // The spirals are made on the CPU: refuse sizes that would overflow or not fit first.
        const MAX_POINTS: usize = 10_000_000;
        let points = c.train_per_class.checked_add(c.test_per_class).and_then(|p| p.checked_mul(c.classes));
        if points.is_none_or(|p| p > MAX_POINTS) {
            return Err(Error::usage(format!(
                "MLP session: {} classes x ({} + {}) points is more than the {MAX_POINTS} a toy session makes",
                c.classes, c.train_per_class, c.test_per_class
            )));
        }
        if c.batch > c.classes * c.train_per_class {
            return Err(Error::usage(format!(
                "MLP session: batch {} is larger than the training set ({})",
                c.batch,
                c.classes * c.train_per_class
            )));
        }
        let mut store = Store::new(c.seed);
        let mut layers = Vec::new();
        {
            let mut b = Builder::new(&mut store, "mlp");
            let mut fan_in = 2;
            for i in 0..c.layers {
                layers.push(Linear::new(&mut b, &format!("fc{}", i + 1), fan_in, c.hidden, true)?);
                fan_in = c.hidden;
            }
            layers.push(Linear::new(&mut b, "head", fan_in, c.classes, true)?);
        }
        let state = OptimState::register(&mut store, "opt")?;
        store.upload(ctx)?;

        let mut g = Graph::new();
        let x = g.input("x", &[c.batch, 2])?;
        let y = g.labels("y", &[c.batch], c.classes)?;
        let logits = forward(&mut g, &layers, x)?;
        let loss = g.cross_entropy(logits, y, 0.0)?;
        g.keep(loss);
        let grads = g.backward(loss)?;
        Optimizer::adamw(c.lr, c.weight_decay).apply(&mut g, &mut store, &state, &grads)?;
        let train = Plan::compile(ctx, &g, &mut store, "mlp train")?;

        let n_test = c.classes * c.test_per_class;
        let mut ge = Graph::new();
        let xe = ge.input("x", &[n_test, 2])?;
        let ye = ge.labels("y", &[n_test], c.classes)?;
        let logits = forward(&mut ge, &layers, xe)?;
        let eval_loss = ge.cross_entropy(logits, ye, 0.0)?;
        let eval_correct = ge.topk_correct(logits, ye, 1)?;
        ge.keep(eval_loss);
        ge.keep(eval_correct);
        let eval = Plan::compile(ctx, &ge, &mut store, "mlp eval")?;

        let (train_x, train_y) = spirals(c.classes, c.train_per_class, c.turns, c.noise, c.seed.wrapping_mul(2).wrapping_add(1));
        let (test_x, test_y) = spirals(c.classes, c.test_per_class, c.turns, c.noise, c.seed.wrapping_mul(2).wrapping_add(2));
        eval.write(xe, &test_x)?;
        eval.write_u32(ye, &test_y)?;
        ctx.check("building the MLP session")?;
        let order: Vec<usize> = (0..train_y.len()).collect();
        let rng = Pcg::new(c.seed ^ 0x5EED);
        Ok(MlpSession {
            ctx: ctx.clone(),
            batch_x: vec![0.0; c.batch * 2],
            batch_y: vec![0; c.batch],
            config,
            store,
            train,
            eval,
            x,
            y,
            loss,
            eval_loss,
            eval_correct,
            train_x,
            train_y,
            test_examples: n_test,
            cursor: order.len(),
            order,
            rng,
            steps: 0,
        })
    }

    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Fill the next batch (a new shuffle each epoch) and write it into the training plan.
    fn write_next_batch(&mut self) -> Result<()> {
        let b = self.config.batch;
        if self.cursor + b > self.order.len() {
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        for (j, &i) in self.order[self.cursor..self.cursor + b].iter().enumerate() {
            self.batch_x[2 * j] = self.train_x[2 * i];
            self.batch_x[2 * j + 1] = self.train_x[2 * i + 1];
            self.batch_y[j] = self.train_y[i];
        }
        self.cursor += b;
        self.train.write(self.x, &self.batch_x)?;
        self.train.write_u32(self.y, &self.batch_y)
    }

    async fn step_async(&mut self, n: usize) -> Result<Metrics> {
        if n == 0 {
            return Err(Error::usage("step(n) needs n >= 1"));
        }
        let t0 = now_ms();
        for _ in 0..n {
            // Writes are ordered with submits: each step sees its own batch.
            self.write_next_batch()?;
            self.train.step()?;
            self.steps += 1;
        }
        let loss = self.train.request(&[self.loss])?.take(&self.ctx).await?[0][0];
        self.ctx.check("training the MLP")?;
        let seconds = ((now_ms() - t0) / 1e3).max(1e-9);
        let examples = (n * self.config.batch) as u64;
        Ok(Metrics {
            step: self.steps,
            loss,
            images_per_sec: examples as f64 / seconds,
            steps_per_sec: n as f64 / seconds,
            seconds,
            accuracy: None,
            examples,
            terms: Default::default(),
        })
    }

    async fn evaluate_async(&mut self) -> Result<Metrics> {
        let t0 = now_ms();
        self.eval.step()?;
        let got = self.eval.request(&[self.eval_loss, self.eval_correct])?.take(&self.ctx).await?;
        self.ctx.check("evaluating the MLP")?;
        let seconds = ((now_ms() - t0) / 1e3).max(1e-9);
        let n = self.test_examples as u64;
        Ok(Metrics {
            step: self.steps,
            loss: got[0][0],
            images_per_sec: n as f64 / seconds,
            steps_per_sec: 1.0 / seconds,
            seconds,
            accuracy: Some(got[1][0] / n as f32),
            examples: n,
            terms: Default::default(),
        })
    }
}

impl Session for MlpSession {
    fn kind(&self) -> &'static str {
        "mlp"
    }

    fn describe(&self) -> serde_json::Value {
        let s = self.train.stats();
        serde_json::json!({
            "kind": "mlp",
            "task": format!("{} interleaved spirals, 2-D points", self.config.classes),
            "config": self.config,
            "parameters": self.store.param_count(),
            "train_examples": self.train_y.len(),
            "test_examples": self.test_examples,
            "dispatches_per_step": s.dispatches,
            "train_plan": s.to_string(),
            "eval_plan": self.eval.stats().to_string(),
            "adapter": self.ctx.adapter.to_string(),
        })
    }

    fn step(&mut self, n: usize) -> LocalFuture<'_, Result<Metrics>> {
        Box::pin(self.step_async(n))
    }

    fn evaluate(&mut self) -> LocalFuture<'_, Result<Metrics>> {
        Box::pin(self.evaluate_async())
    }
}
