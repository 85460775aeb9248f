//! OBoW self-supervised pre-training as a compiled session (papers-digest B): a student and
//! its EMA teacher (two copies of one backbone in the store), the vocabularies, the student's
//! BoW prediction head and a monitoring classifier, over one store; a `train` plan (the whole
//! step on the GPU: teacher EMA, multi-crop views, teacher targets, vocabulary and `mu`
//! updates, student forward/backward, SGD) and an `eval` plan (the monitoring classifier on
//! the teacher's pooled test features, which gives the per-epoch accuracy).
//!
//! Step order, as the reference's `OBoW.forward`: (1) the teacher's EMA update from the student
//! of the previous step, with this step's alpha; (2) the dictionaries are cloned; (3) the
//! student predicts from the crops with the cloned words; (4) the teacher (BatchNorm in train
//! mode) makes the targets on its own view with the cloned words, then `mu` and the queues move;
//! (5) losses, backward, SGD step. The EMA is placed at the start of the step rather than in the
//! optimizer phase at the end of the previous one, so that alpha is indexed exactly as the
//! reference's (`_iteration` is the current step) and a resumed run replays the same order.

use super::config::TrainConfig;
use super::session::{DataInfo, EvalResult, STUDENT, TEACHER, TrainMetrics, optimizer_of};
use crate::checkpoint::{self, FileTensor};
use crate::data::{GpuData, MultiCropSpec, Splits, seed32};
use crate::distill::obow::{Layout, Obow, PREFIX};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::plan::Pending;
use crate::graph::{DType, Graph, Plan, PlanStats, Var};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::{Builder, Fwd};
use crate::optim::{Ema, OptimState};
use crate::store::{Init, Param, StateRef, Store};
use std::collections::BTreeMap;

pub struct ObowSession {
    pub ctx: Context,
    pub cfg: TrainConfig,
    pub store: Store,
    pub student: Box<dyn Backbone>,
    pub teacher: Box<dyn Backbone>,
    pub obow: Obow,
    pub data: DataInfo,
    train: Plan,
    eval: Option<Plan>,
    pub opt_state: OptimState,
    train_metrics: StateRef,
    eval_metrics: StateRef,
    eval_counter: StateRef,
    eval_batches: usize,
    names: Vec<String>,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    /// Steps submitted so far (also after a resume).
    pub step: usize,
    /// (student, teacher) parameter pairs of the EMA.
    pub pairs: Vec<(Param, Param)>,
}

/// Bytes of one distance block: at most one storage binding, and at most 64 MiB so that
/// several blocks of a large batch need not all be huge.
fn max_block(ctx: &Context) -> u64 {
    ctx.max_binding().min(64 << 20)
}

impl ObowSession {
    /// Build everything for `cfg` (which must have `obow` set) on `ctx` from loaded data.
    pub fn new(ctx: &Context, mut cfg: TrainConfig, splits: &Splits) -> Result<ObowSession> {
        cfg.validate()?;
        let ocfg = cfg.obow.clone().ok_or_else(|| Error::usage("ObowSession needs cfg.obow"))?;
        cfg.adapter = ctx.adapter.to_string();
        if !cfg.init.is_empty() {
            return Err(Error::usage("OBoW pre-training starts from random weights (--init is for train and distill)"));
        }
        let train_ds = if cfg.train_limit > 0 { splits.train.head(cfg.train_limit) } else { splits.train.clone() };
        let test_ds = if cfg.test_limit > 0 { splits.test.head(cfg.test_limit) } else { splits.test.clone() };
        if train_ds.h != train_ds.w {
            return Err(Error::usage(format!("OBoW needs square images, the data is {}x{}", train_ds.h, train_ds.w)));
        }
        let size = if cfg.img_size == 0 { train_ds.h } else { cfg.img_size };
        let data = DataInfo {
            name: splits.train.name.clone(),
            classes: train_ds.classes,
            channels: train_ds.c,
            size,
            train_images: train_ds.n,
            test_images: test_ds.n,
        };
        let (mean, std) = splits.train.mean_std();
        let mut store = Store::new(cfg.seed);
        let mcfg = ModelConfig::new(data.channels, size, data.classes);
        let student = models::build(&cfg.model, &mut store, STUDENT, &mcfg)?;
        let teacher = models::build(&cfg.model, &mut store, TEACHER, &mcfg)?;
        let obow = Obow::new(&mut Builder::new(&mut store, PREFIX), student.as_ref(), &ocfg, data.classes, cfg.seed)?;
        let opt_state = OptimState::register(&mut store, "opt")?;
        let mut names: Vec<String> = vec!["bow".into()];
        if ocfg.crops > 0 {
            names.push("crops".into());
        }
        if ocfg.patches > 0 {
            names.push("patches".into());
        }
        if ocfg.monitor {
            names.push("lincls".into());
        }
        let train_metrics = store.state("metrics.train", &[2 + names.len()], DType::F32, Init::Zeros)?;
        let eval_metrics = store.state("metrics.eval", &[4], DType::F32, Init::Zeros)?;
        let eval_counter = GpuData::counter(&mut store, "metrics.eval_counter")?;
        let train_gpu = GpuData::upload(ctx, &mut store, &train_ds, "data.train")?;
        let test_gpu = GpuData::upload(ctx, &mut store, &test_ds, "data.test")?;
        store.upload(ctx)?;

        // The teacher starts as a copy of the student; the EMA covers the backbone's
        // parameters (not its unused classifier), BatchNorm buffers evolve on their own.
        let head = format!("{}.", student.head_weight().rsplit_once('.').map(|(a, _)| a).unwrap_or(""));
        let mut pairs = Vec::new();
        for p in store.params() {
            if let Some(rel) = p.name().strip_prefix(STUDENT) {
                if rel.starts_with(&head) {
                    continue;
                }
                let t = store
                    .param_by_name(&format!("{TEACHER}{rel}"))
                    .ok_or_else(|| Error::usage(format!("the teacher has no '{rel}'")))?
                    .clone();
                pairs.push((p.clone(), t));
            }
        }
        store.copy_params(&pairs)?;

        let steps_per_epoch = (data.train_images / cfg.batch).max(1);
        let total_steps = steps_per_epoch * cfg.epochs;
        let seed = cfg.seed;
        let mut optimizer = optimizer_of(&cfg, steps_per_epoch, total_steps);
        optimizer.ema =
            Some(Ema { pairs: pairs.clone(), base: ocfg.alpha, cosine_steps: if ocfg.alpha_cosine { Some(total_steps) } else { None } });

        // ---- train plan
        let mut g = Graph::new();
        let step = g.state(&opt_state.step);
        // (1) teacher EMA from the student of the previous step, this step's alpha.
        optimizer.apply_ema(&mut g, &mut store, &opt_state)?;
        // Views: teacher (resize + centre crop + flip), large crops, patches.
        let mut spec = MultiCropSpec::obow(cfg.batch, size);
        spec.large = ocfg.crops;
        spec.patches.keep = ocfg.patches;
        spec.mean = mean.clone();
        spec.std = std.clone();
        let mc = g.multicrop(&train_gpu, &spec, step, seed)?;
        // (2) the step's dictionaries.
        let dicts = obow.dictionaries(&mut g)?;
        // (3) student predictions: one forward per crop type (BatchNorm statistics per type).
        let fwd = Fwd::train(step, seed32(seed));
        let weights = obow.word_weights(&mut g, &dicts, fwd)?;
        let mut crop_feats = Vec::new();
        if let Some(x) = mc.large {
            let o = g.scoped("student.crops", |g| student.forward(g, x, fwd))?;
            crop_feats.push(("crops", o.pooled, Layout::CropMajor(ocfg.crops)));
        }
        if let Some(x) = mc.patches {
            let o = g.scoped("student.patches", |g| student.forward(g, x, fwd))?;
            crop_feats.push(("patches", o.pooled, Layout::SampleMajor(ocfg.patches)));
        }
        // (4) teacher targets on its own view, BatchNorm in train mode, no gradient.
        let t_out = g.scoped("teacher", |g| teacher.forward(g, mc.teacher, fwd))?;
        let tfeat: Vec<Var> = obow.levels.iter().map(|l| g.detach(t_out.features[l.stage])).collect::<Result<_>>()?;
        let targets = obow.targets(&mut g, &tfeat, &dicts, step, seed32(seed), max_block(ctx))?;
        // (5) losses: per crop type averaged over levels, summed over crop types.
        let mut total_ce: Option<Var> = None;
        let mut bow_kl: Option<Var> = None;
        let mut named: Vec<Var> = Vec::new();
        for (_, pooled, layout) in &crop_feats {
            let l = obow.crop_loss(&mut g, *pooled, &weights, &targets, *layout)?;
            total_ce = Some(match total_ce {
                None => l.ce,
                Some(p) => g.add(p, l.ce)?,
            });
            bow_kl = Some(match bow_kl {
                None => l.kl,
                Some(p) => g.add(p, l.kl)?,
            });
            named.push(l.kl);
        }
        let (mut total_ce, bow_kl) = (total_ce.unwrap(), bow_kl.unwrap());
        let mut total_report = bow_kl;
        if obow.monitor.is_some() {
            let pooled = g.detach(t_out.pooled)?;
            let z = obow.monitor_logits(&mut g, pooled, fwd)?.expect("monitor");
            let ce = g.cross_entropy(z, mc.labels, 0.0)?;
            total_ce = g.add(total_ce, ce)?;
            total_report = g.add(total_report, ce)?;
            named.push(ce);
        }
        // Metrics: [total (KL + lincls), 1, bow, crops, patches, lincls], summed until read.
        let one = g.fill(&[1], 1.0)?;
        let mut row = vec![total_report, one, bow_kl];
        row.extend(named);
        let row = g.concat(&row, 0)?;
        let m = g.state(&train_metrics);
        g.accumulate(m, row)?;
        let grads = g.backward(total_ce)?;
        optimizer.ema = None;
        optimizer.apply(&mut g, &mut store, &opt_state, &grads)?;
        let train = Plan::compile(ctx, &g, &mut store, "obow train")?;

        // ---- eval plan: the monitoring classifier on the teacher's pooled test features
        let eb = cfg.eval_batch.min(data.test_images).max(1);
        let eval = if obow.monitor.is_some() {
            let mut g = Graph::new();
            let counter = g.state(&eval_counter);
            // The teacher's view without the flip: resize by 256/224, centre crop.
            let center =
                crate::data::Augment { crop: crate::data::Crop::Center { resize: spec.teacher_resize }, ..crate::data::Augment::none() };
            let espec =
                crate::data::BatchSpec { size, out_size: size, augment: center, ..crate::data::BatchSpec::eval(eb).normalize(&mean, &std) };
            let b = g.batch(&test_gpu, &espec, counter, seed)?;
            let out = teacher.forward(&mut g, b.images, Fwd::eval())?;
            let z = obow.monitor_logits(&mut g, out.pooled, Fwd::eval())?.expect("monitor");
            let ce_rows = g.cross_entropy_rows(z, b.labels)?;
            let ce = g.mul(ce_rows, b.valid)?;
            let ce = g.sum_all(ce)?;
            let t1 = g.topk_rows(z, b.labels, 1)?;
            let t1 = g.mul(t1, b.valid)?;
            let t1 = g.sum_all(t1)?;
            let t5 = g.topk_rows(z, b.labels, 5.min(data.classes))?;
            let t5 = g.mul(t5, b.valid)?;
            let t5 = g.sum_all(t5)?;
            let n = g.sum_all(b.valid)?;
            let row = g.concat(&[ce, t1, t5, n], 0)?;
            let m = g.state(&eval_metrics);
            g.accumulate(m, row)?;
            g.data_tick(counter)?;
            Some(Plan::compile(ctx, &g, &mut store, "obow eval")?)
        } else {
            None
        };
        let eval_batches = test_gpu.eval_batches(eb);

        Ok(ObowSession {
            ctx: ctx.clone(),
            cfg,
            store,
            student,
            teacher,
            obow,
            data,
            train,
            eval,
            opt_state,
            train_metrics,
            eval_metrics,
            eval_counter,
            eval_batches,
            names,
            steps_per_epoch,
            total_steps,
            step: 0,
            pairs,
        })
    }

    pub fn train_stats(&self) -> &PlanStats {
        self.train.stats()
    }
    pub fn train_plan(&self) -> &Plan {
        &self.train
    }
    /// Names of the loss terms, in the order of [`TrainMetrics::terms`].
    pub fn term_names(&self) -> &[String] {
        &self.names
    }

    /// Submit `n` training steps (one submit). Never waits for the GPU.
    pub fn train_steps(&mut self, n: usize) -> Result<()> {
        self.train.run(n)?;
        self.step += n;
        Ok(())
    }

    /// Start reading the training metrics summed since the last read (and the scalars, and
    /// each level's `mu`), and reset them.
    pub fn request_train_metrics(&self) -> Result<Pending> {
        let var =
            |s: &StateRef| self.train.state_var(s).ok_or_else(|| Error::usage(format!("'{}' is not part of the train plan", s.name())));
        let mut vars = vec![var(&self.train_metrics)?, var(&self.opt_state.scalars)?];
        for l in &self.obow.levels {
            vars.push(var(&l.mu)?);
        }
        let p = self.train.request(&vars)?;
        self.store.write_state(&self.train_metrics, &vec![0.0; self.train_metrics.numel()])?;
        Ok(p)
    }

    /// Averages from [`Self::request_train_metrics`]; the terms are the BoW loss (KL, summed
    /// over crop types), each crop type's, the monitor's cross-entropy, then `mu` per level and
    /// the teacher's momentum alpha.
    pub fn parse_train_metrics(&self, vals: &[Vec<f32>]) -> TrainMetrics {
        let m = &vals[0];
        let steps = m[1].round().max(0.0) as usize;
        let d = steps.max(1) as f32;
        let mut terms: Vec<(String, f32)> = vec![(self.names[0].clone(), m[2] / d)];
        terms.extend(self.names[1..].iter().enumerate().map(|(i, n)| (n.clone(), m[3 + i] / d)));
        for (i, v) in vals[2..].iter().enumerate() {
            terms.push((format!("mu{i}"), v[0]));
        }
        terms.push(("alpha".into(), vals[1][3]));
        TrainMetrics { steps, loss: m[0] / d, terms, lr: vals[1][0] }
    }

    /// The monitoring classifier's accuracy on the test set (teacher features, eval mode).
    /// Without a monitor: an empty result.
    pub async fn evaluate_async(&mut self) -> Result<EvalResult> {
        let Some(eval) = &self.eval else { return Ok(EvalResult::default()) };
        self.store.write_state(&self.eval_metrics, &[0.0; 4])?;
        self.store.write_state(&self.eval_counter, &[0.0])?;
        eval.run(self.eval_batches)?;
        let v = eval.state_var(&self.eval_metrics).ok_or_else(|| Error::usage("eval metrics missing"))?;
        let vals = eval.request(&[v])?.take(&self.ctx).await?.remove(0);
        let n = vals[3].max(1.0);
        Ok(EvalResult { loss: vals[0] / n, top1: 100.0 * vals[1] / n, top5: 100.0 * vals[2] / n, images: vals[3] as usize })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        pollster::block_on(self.evaluate_async())
    }

    /// The student backbone as a PyTorch-compatible safetensors file: it loads in `predict`,
    /// `train --init` and `distill`.
    pub async fn student_bytes(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        checkpoint::to_bytes(&self.store, STUDENT, meta).await
    }

    /// Everything needed to resume (student, teacher, vocabularies, head, optimizer), data
    /// excluded.
    pub async fn state_bytes(&self) -> Result<Vec<u8>> {
        let meta = BTreeMap::from([("step".to_string(), self.step.to_string()), ("model".to_string(), self.cfg.model.clone())]);
        checkpoint::state_to_bytes(&self.store, &meta, &|n| !n.starts_with("data.")).await
    }

    /// Restore from [`Self::state_bytes`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, FileTensor>, source: &str) -> Result<()> {
        checkpoint::load_state(&self.store, tensors, source, &|n| !n.starts_with("data."))?;
        let step = tensors
            .get("opt.step")
            .map(|t| t.data[0] as usize)
            .ok_or_else(|| Error::file(source, "no 'opt.step' tensor: not a webdistill training state"))?;
        self.step = step;
        Ok(())
    }
}
