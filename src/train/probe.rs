//! Evaluations of a frozen backbone (papers-digest B6, scaled to small data):
//! - [`Features`]: the pooled features of every train and test image, computed once on the GPU
//!   (eval mode) into feature banks in the store;
//! - [`Features::linear_probe`]: a linear classifier trained on the standardised train bank
//!   (SGD, cosine schedule, shuffled mini-batches gathered from the bank on the GPU), test
//!   accuracy;
//! - [`few_shot`]: N-way K-shot prototype accuracy over random episodes (cosine to the class
//!   means of L2-normalised features, as `obow/fewshot.py`), on the test bank.

use super::run::STUDENT;
use crate::checkpoint::{self, FileTensor, LoadOptions};
use crate::data::{BatchSpec, GpuData, Splits};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{DType, Graph, Plan};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::{Builder, Fwd, Linear};
use crate::ops::data::Sampling;
use crate::optim::{Method, OptimState, Optimizer, Schedule};
use crate::store::{Init, StateRef, Store};
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

/// Settings of the linear probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub batch: usize,
    /// SGD (momentum 0.9) learning rate, cosine to 0 over the run.
    pub lr: f32,
    pub weight_decay: f32,
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { epochs: 30, batch: 256, lr: 0.1, weight_decay: 0.0, seed: 0 }
    }
}

/// Test accuracy of a linear probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeResult {
    /// Percent.
    pub top1: f32,
    pub top5: f32,
    /// Mean training cross-entropy over the last epoch.
    pub train_loss: f32,
    pub steps: usize,
}

/// How features are extracted.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureOptions {
    /// Side of the images the backbone sees (zero padding as in training); 0: the data's.
    pub img_size: usize,
    pub batch: usize,
    /// Use only the first N train / test images (0: all).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Seed of the backbone's initialisation when no weights are given.
    pub seed: u64,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions { img_size: 0, batch: 100, train_limit: 0, test_limit: 0, seed: 0 }
    }
}

/// A frozen backbone's pooled features of a dataset, in feature banks on the GPU.
pub struct Features {
    pub ctx: Context,
    pub store: Store,
    pub backbone: Box<dyn Backbone>,
    pub dim: usize,
    pub classes: usize,
    pub n_train: usize,
    pub n_test: usize,
    train_bank: StateRef,
    test_bank: StateRef,
    train_labels: StateRef,
    test_labels: StateRef,
    mean: StateRef,
    std: StateRef,
    fc: Linear,
    opt: OptimState,
    metrics: StateRef,
    counter: StateRef,
}

impl Features {
    /// Build `model` (random initialisation from `opts.seed`, or `weights`: PyTorch names as
    /// saved by `train`/`obow`), and compute the pooled features of every image of `splits`
    /// (data normalised with the train split's statistics, as training does).
    /// [`Self::extract`] from files: the data a spec names, and `weights` (.safetensors) or the
    /// random initialisation (native; waits for the GPU).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_files(
        ctx: &Context,
        model: &str,
        weights: Option<&std::path::Path>,
        data: &str,
        opts: &FeatureOptions,
    ) -> Result<Features> {
        let cfg = crate::train::TrainConfig { img_size: opts.img_size, ..Default::default() };
        let splits = super::runner::load_data(data, &cfg)?;
        let weights = match weights {
            Some(p) => Some((checkpoint::read(p)?, p.display().to_string())),
            None => None,
        };
        pollster::block_on(Features::extract(ctx, model, weights.as_ref().map(|(w, s)| (w, s.as_str())), &splits, opts))
    }

    pub async fn extract(
        ctx: &Context,
        model: &str,
        weights: Option<(&BTreeMap<String, FileTensor>, &str)>,
        splits: &Splits,
        opts: &FeatureOptions,
    ) -> Result<Features> {
        let train_ds = if opts.train_limit > 0 { splits.train.head(opts.train_limit) } else { splits.train.clone() };
        let test_ds = if opts.test_limit > 0 { splits.test.head(opts.test_limit) } else { splits.test.clone() };
        let size = if opts.img_size == 0 { train_ds.h } else { opts.img_size };
        if size < train_ds.h || (size - train_ds.h) % 2 != 0 {
            return Err(Error::usage(format!("--img-size {size} must be the data's {} px plus an even padding", train_ds.h)));
        }
        let (mean, std) = splits.train.mean_std();
        let classes = train_ds.classes;
        let mut store = Store::new(opts.seed);
        let backbone = models::build(model, &mut store, STUDENT, &ModelConfig::new(train_ds.c, size, classes))?;
        let dim = backbone.pooled_dim();
        for (ds, what) in [(&train_ds, "train"), (&test_ds, "test")] {
            let bytes = (ds.n * dim * 4) as u64;
            if bytes > ctx.max_binding() {
                return Err(Error::TooLarge {
                    tensor: format!("{what} feature bank ({} x {dim})", ds.n),
                    bytes,
                    limit_name: "max storage binding size",
                    limit: ctx.max_binding(),
                });
            }
        }
        let train_bank = store.state("probe.bank.train", &[train_ds.n, dim], DType::F32, Init::Zeros)?;
        let test_bank = store.state("probe.bank.test", &[test_ds.n, dim], DType::F32, Init::Zeros)?;
        let mean_s = store.state("probe.mean", &[dim], DType::F32, Init::Zeros)?;
        let std_s = store.state("probe.std", &[dim], DType::F32, Init::Zeros)?;
        let fc =
            Linear::with_init(&mut Builder::new(&mut store, "probe"), "fc", dim, classes, true, Init::Normal { std: 0.01 }, Init::Zeros)?;
        let opt = OptimState::register(&mut store, "probe.opt")?;
        let metrics = store.state("probe.metrics", &[4], DType::F32, Init::Zeros)?;
        let counter = GpuData::counter(&mut store, "probe.counter")?;
        let train_gpu = GpuData::upload(ctx, &mut store, &train_ds, "train")?;
        let test_gpu = GpuData::upload(ctx, &mut store, &test_ds, "test")?;
        store.upload(ctx)?;
        if let Some((w, source)) = weights {
            checkpoint::load_into(&store, STUDENT, w, source, &LoadOptions::default())?;
        }
        let eb = opts.batch.max(1);
        for (gpu, bank) in [(&train_gpu, &train_bank), (&test_gpu, &test_bank)] {
            let mut g = Graph::new();
            let c = g.state(&counter);
            let spec = BatchSpec { size: gpu.h, out_size: size, ..BatchSpec::eval(eb).normalize(&mean, &std) };
            let b = g.batch(gpu, &spec, c, 0)?;
            let out = backbone.forward(&mut g, b.images, Fwd::eval())?;
            let bank = g.state(bank);
            g.rows_scatter(bank, out.pooled, b.index, b.valid)?;
            g.data_tick(c)?;
            let plan = Plan::compile(ctx, &g, &mut store, "extract features")?;
            store.write_state(&counter, &[0.0])?;
            plan.run(gpu.eval_batches(eb))?;
        }
        // Standardisation statistics of the train bank (a BatchNorm without affine, frozen).
        let mut g = Graph::new();
        let bank = g.state(&train_bank);
        let m = g.mean(bank, &[0], true)?;
        let d = g.sub(bank, m)?;
        let sq = g.square(d)?;
        let var = g.mean(sq, &[0], false)?;
        let var = g.add_scalar(var, 1e-5)?;
        let sd = g.sqrt(var)?;
        let (ms, ss) = (g.state(&mean_s), g.state(&std_s));
        let m = g.reshape(m, &[dim])?;
        g.accumulate(ms, m)?;
        g.accumulate(ss, sd)?;
        Plan::compile(ctx, &g, &mut store, "feature statistics")?.run(1)?;
        ctx.check("extracting features")?;
        Ok(Features {
            ctx: ctx.clone(),
            store,
            backbone,
            dim,
            classes,
            n_train: train_ds.n,
            n_test: test_ds.n,
            train_bank,
            test_bank,
            train_labels: train_gpu.labels,
            test_labels: test_gpu.labels,
            mean: mean_s,
            std: std_s,
            fc,
            opt,
            metrics,
            counter,
        })
    }

    /// Train a linear classifier on the standardised train features and test it.
    pub async fn linear_probe(&mut self, cfg: &ProbeConfig) -> Result<ProbeResult> {
        let ctx = self.ctx.clone();
        let b = cfg.batch.min(self.n_train).max(1);
        let spe = (self.n_train / b).max(1);
        let total = spe * cfg.epochs.max(1);
        // Fresh classifier and optimizer state (a second probe on the same bank starts over).
        let w: Vec<f32> = {
            let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x5EED);
            let d = rand_distr::Normal::new(0.0f64, 0.01).unwrap();
            (0..self.fc.weight.numel()).map(|_| rand_distr::Distribution::sample(&d, &mut rng) as f32).collect()
        };
        self.store.write_param(&self.fc.weight, crate::store::Which::Value, &w)?;
        if let Some(bias) = &self.fc.bias {
            self.store.write_param(bias, crate::store::Which::Value, &vec![0.0; bias.numel()])?;
        }
        self.store.write_state(&self.opt.step, &[0.0])?;
        let opt = Optimizer {
            method: Method::Sgd { momentum: 0.9, nesterov: false },
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            schedule: Schedule::Cosine { warmup: 0, total, warmup_from: 0.0, min_lr: 0.0 },
            clip: None,
            ema: None,
        };
        if self.store.has_slot("sgd.momentum") {
            for p in [Some(&self.fc.weight), self.fc.bias.as_ref()].into_iter().flatten() {
                self.store.write_param(p, crate::store::Which::Slot("sgd.momentum"), &vec![0.0; p.numel()])?;
            }
        }
        let seed = crate::data::seed32(cfg.seed);
        // ---- train
        let mut g = Graph::new();
        let step = g.state(&self.opt.step);
        let labels = g.state(&self.train_labels);
        let (idx, lab, _) = g.data_sample(labels, step, self.n_train, b, Sampling::Train, seed)?;
        let bank = g.state(&self.train_bank);
        let x = g.rows_gather(bank, idx)?;
        let z = self.standardise(&mut g, x)?;
        let logits = self.fc.forward(&mut g, z)?;
        let loss = g.cross_entropy(logits, lab, 0.0)?;
        let one = g.fill(&[1], 1.0)?;
        let zero = g.fill(&[2], 0.0)?;
        let row = g.concat(&[loss, one, zero], 0)?;
        let m = g.state(&self.metrics);
        g.accumulate(m, row)?;
        let grads = g.backward(loss)?;
        opt.apply(&mut g, &mut self.store, &self.opt, &grads)?;
        let train = Plan::compile(&ctx, &g, &mut self.store, "linear probe")?;
        let mut train_loss = 0.0;
        for e in 0..cfg.epochs.max(1) {
            self.store.write_state(&self.metrics, &[0.0; 4])?;
            let mut done = 0;
            while done < spe {
                let n = (spe - done).min(200);
                train.run(n)?;
                done += n;
                // Wait now and then so the queue does not run far ahead.
                let v = train.state_var(&self.metrics).expect("metrics");
                let vals = train.request(&[v])?.take(&ctx).await?.remove(0);
                if e + 1 == cfg.epochs.max(1) && done == spe {
                    train_loss = vals[0] / vals[1].max(1.0);
                }
                if !vals[0].is_finite() {
                    return Err(Error::usage("the linear probe diverged: lower --lr"));
                }
            }
        }
        // ---- test
        let eb = 500.min(self.n_test).max(1);
        let mut g = Graph::new();
        let c = g.state(&self.counter);
        let labels = g.state(&self.test_labels);
        let (idx, lab, valid) = g.data_sample(labels, c, self.n_test, eb, Sampling::Eval, 0)?;
        let bank = g.state(&self.test_bank);
        let x = g.rows_gather(bank, idx)?;
        let z = self.standardise(&mut g, x)?;
        let logits = self.fc.forward(&mut g, z)?;
        let mut row = Vec::new();
        for k in [1, 5.min(self.classes)] {
            let t = g.topk_rows(logits, lab, k)?;
            let t = g.mul(t, valid)?;
            row.push(g.sum_all(t)?);
        }
        row.push(g.sum_all(valid)?);
        row.push(g.fill(&[1], 0.0)?);
        let row = g.concat(&row, 0)?;
        let m = g.state(&self.metrics);
        g.accumulate(m, row)?;
        g.data_tick(c)?;
        let test = Plan::compile(&ctx, &g, &mut self.store, "linear probe test")?;
        self.store.write_state(&self.metrics, &[0.0; 4])?;
        self.store.write_state(&self.counter, &[0.0])?;
        test.run(self.n_test.div_ceil(eb))?;
        let v = test.state_var(&self.metrics).expect("metrics");
        let vals = test.request(&[v])?.take(&ctx).await?.remove(0);
        let n = vals[2].max(1.0);
        Ok(ProbeResult { top1: 100.0 * vals[0] / n, top5: 100.0 * vals[1] / n, train_loss, steps: total })
    }

    fn standardise(&self, g: &mut Graph, x: crate::graph::Var) -> Result<crate::graph::Var> {
        let (m, s) = (g.state(&self.mean), g.state(&self.std));
        let d = g.sub(x, m)?;
        g.div(d, s)
    }

    /// The test bank and labels on the CPU (row-major [n_test, dim]).
    pub async fn test_features(&self) -> Result<(Vec<f32>, Vec<u32>)> {
        let f = self.store.read_state_async(&self.test_bank).await?;
        let l = self.store.read_state_async(&self.test_labels).await?;
        Ok((f, l.into_iter().map(|v| v as u32).collect()))
    }
}

/// Few-shot settings (papers-digest B6: 200 episodes, 50-way, 1/5-shot, 1 query per class on
/// ImageNet's novel classes; the defaults here fit 10-class data).
#[derive(Clone, Debug, PartialEq)]
pub struct FewShotConfig {
    pub ways: usize,
    pub shots: usize,
    pub queries: usize,
    pub episodes: usize,
    pub seed: u64,
}

impl Default for FewShotConfig {
    fn default() -> Self {
        FewShotConfig { ways: 5, shots: 1, queries: 15, episodes: 1000, seed: 0 }
    }
}

/// Mean episode accuracy (percent) and its 95% confidence half-width.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FewShotResult {
    pub accuracy: f64,
    pub ci95: f64,
}

/// N-way K-shot accuracy with prototypes: support and query features are L2-normalised, each
/// class's prototype is the mean of its normalised support features (normalised again), and a
/// query goes to the prototype of highest cosine. `feats` is row-major [n, dim].
pub fn few_shot(feats: &[f32], labels: &[u32], dim: usize, cfg: &FewShotConfig) -> Result<FewShotResult> {
    let n = labels.len();
    if feats.len() != n * dim || dim == 0 {
        return Err(Error::shape("few_shot", format!("{} values for {n} rows of {dim}", feats.len())));
    }
    let unit: Vec<Vec<f64>> = feats
        .chunks(dim)
        .map(|r| {
            let nrm = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|&v| v as f64 / nrm).collect()
        })
        .collect();
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let need = cfg.shots + cfg.queries;
    let classes: Vec<u32> = by_class.iter().filter(|(_, v)| v.len() >= need).map(|(&c, _)| c).collect();
    if classes.len() < cfg.ways || cfg.ways < 2 || cfg.shots == 0 || cfg.queries == 0 {
        return Err(Error::usage(format!(
            "{}-way {}-shot with {} queries needs {} classes with {need} images each; the data has {}",
            cfg.ways,
            cfg.shots,
            cfg.queries,
            cfg.ways,
            classes.len()
        )));
    }
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut accs = Vec::with_capacity(cfg.episodes);
    for _ in 0..cfg.episodes {
        let picked = sample_distinct(&mut rng, classes.len(), cfg.ways);
        let mut protos = Vec::new();
        let mut queries = Vec::new();
        for (w, &ci) in picked.iter().enumerate() {
            let pool = &by_class[&classes[ci]];
            let ex = sample_distinct(&mut rng, pool.len(), need);
            let mut p = vec![0.0; dim];
            for &e in &ex[..cfg.shots] {
                for (a, b) in p.iter_mut().zip(&unit[pool[e]]) {
                    *a += b / cfg.shots as f64;
                }
            }
            let nrm = p.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            protos.push(p.into_iter().map(|v| v / nrm).collect::<Vec<f64>>());
            queries.extend(ex[cfg.shots..].iter().map(|&e| (pool[e], w)));
        }
        let correct = queries
            .iter()
            .filter(|&&(q, w)| {
                let scores: Vec<f64> = protos.iter().map(|p| p.iter().zip(&unit[q]).map(|(a, b)| a * b).sum()).collect();
                let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
                best == w
            })
            .count();
        accs.push(100.0 * correct as f64 / queries.len() as f64);
    }
    let e = accs.len() as f64;
    let mean = accs.iter().sum::<f64>() / e;
    let var = accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (e - 1.0).max(1.0);
    Ok(FewShotResult { accuracy: mean, ci95: 1.96 * (var / e).sqrt() })
}

/// `k` distinct indices in 0..n (partial Fisher-Yates).
pub(crate) fn sample_distinct(rng: &mut rand::rngs::Xoshiro256PlusPlus, n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = rng.random_range(i..n);
        v.swap(i, j);
    }
    v.truncate(k);
    v
}
