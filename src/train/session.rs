//! A compiled training or distillation run: the student (and teacher, and OFA branches), the
//! data on the GPU, and two plans over one store: `train` (batch -> forward -> losses ->
//! backward -> optimizer, one submit per step or per n steps) and `eval` (the test set in
//! order). The same object serves the CLI, the web page and host applications.

use super::config::TrainConfig;
use super::objective::{Objective, Terms};
use crate::checkpoint::{self, FileTensor, LoadOptions};
use crate::data::{Augment, BatchSpec, Crop, GpuData, Jitter, Mix, Splits, seed32};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::plan::Pending;
use crate::graph::{DType, Graph, Plan, PlanStats, Var};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::Fwd;
use crate::optim::{Method, OptimState, Optimizer, Schedule};
use crate::store::{Init, StateRef, Store};
use std::collections::BTreeMap;

/// Store prefixes: the student's names are the PyTorch names after this prefix.
pub const STUDENT: &str = "student.";
pub const TEACHER: &str = "teacher.";

/// Test-set results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalResult {
    pub loss: f32,
    /// Percent.
    pub top1: f32,
    pub top5: f32,
    pub images: usize,
}

/// Averages of the training metrics since the last read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainMetrics {
    pub steps: usize,
    pub loss: f32,
    /// Named loss terms (gt, kd, ofa, ...), averaged.
    pub terms: Vec<(String, f32)>,
    /// Learning rate of the last step.
    pub lr: f32,
}

/// What the data looks like to the models.
#[derive(Clone, Debug, PartialEq)]
pub struct DataInfo {
    pub name: String,
    pub classes: usize,
    pub channels: usize,
    /// Side of the images the models see (after padding/resizing).
    pub size: usize,
    pub train_images: usize,
    pub test_images: usize,
}

pub struct Session {
    pub ctx: Context,
    pub cfg: TrainConfig,
    pub store: Store,
    pub student: Box<dyn Backbone>,
    pub teacher: Option<Box<dyn Backbone>>,
    pub data: DataInfo,
    pub objective: Objective,
    train: Plan,
    eval: Plan,
    pub opt_state: OptimState,
    train_metrics: StateRef,
    eval_metrics: StateRef,
    eval_counter: StateRef,
    eval_batches: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    /// Steps submitted so far (also after a resume).
    pub step: usize,
    /// Student outputs of the last training batch, for hosts that render them.
    pub train_outputs: Vec<Var>,
    test_gpu: GpuData,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Compiled on first use: CKA over a fixed number of test images, and single-image
    /// predictions.
    cka_plan: Option<(usize, Plan, Var, Var)>,
    predict_plan: Option<PredictPlan>,
}

struct PredictPlan {
    plan: Plan,
    input: Var,
    student: Var,
    teacher: Option<Var>,
}

/// CKA between every teacher stage (rows) and student stage (columns).
#[derive(Clone, Debug, PartialEq)]
pub struct CkaResult {
    pub values: Vec<f32>,
    pub teacher_stages: Vec<String>,
    pub student_stages: Vec<String>,
    pub images: usize,
}

/// Class probabilities for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub student: Vec<f32>,
    pub teacher: Option<Vec<f32>>,
}

/// Per-channel normalisation of a dataset (computed on the training split).
fn norm_stats(splits: &Splits) -> (Vec<f32>, Vec<f32>) {
    splits.train.mean_std()
}

fn augment_of(cfg: &TrainConfig) -> Augment {
    let a = &cfg.augment;
    let crop = match a.rrc_scale {
        Some(scale) => Crop::ResizedCrop { scale, ratio: (0.75, 4.0 / 3.0) },
        None if a.crop_padding > 0 => Crop::Pad { padding: a.crop_padding },
        None => Crop::Full,
    };
    let jitter = (a.color_jitter > 0.0).then(|| Jitter {
        brightness: a.color_jitter,
        contrast: a.color_jitter,
        saturation: a.color_jitter,
        hue: 0.0,
        p: 1.0,
    });
    Augment { crop, hflip: if a.hflip { 0.5 } else { 0.0 }, jitter, grayscale: 0.0, blur: None }
}

fn mix_of(cfg: &TrainConfig) -> Option<Mix> {
    let a = &cfg.augment;
    (a.mixup_alpha > 0.0 || a.cutmix_alpha > 0.0).then(|| Mix {
        mixup_alpha: a.mixup_alpha,
        cutmix_alpha: a.cutmix_alpha,
        ..Mix::timm_default()
    })
}

impl Session {
    /// Build everything for `cfg` on `ctx` from loaded data and, for distillation, the
    /// teacher's tensors (PyTorch names).
    pub fn new(
        ctx: &Context,
        mut cfg: TrainConfig,
        splits: &Splits,
        teacher_weights: Option<&BTreeMap<String, FileTensor>>,
    ) -> Result<Session> {
        cfg.validate()?;
        cfg.adapter = ctx.adapter.to_string();
        let train_ds = if cfg.train_limit > 0 { splits.train.head(cfg.train_limit) } else { splits.train.clone() };
        let test_ds = if cfg.test_limit > 0 { splits.test.head(cfg.test_limit) } else { splits.test.clone() };
        let size = if cfg.img_size == 0 { train_ds.h } else { cfg.img_size };
        if size < train_ds.h {
            return Err(Error::usage(format!(
                "--img-size {size} is smaller than the data's {} px; resizing down is not supported",
                train_ds.h
            )));
        }
        let data = DataInfo {
            name: splits.train.name.clone(),
            classes: train_ds.classes,
            channels: train_ds.c,
            size,
            train_images: train_ds.n,
            test_images: test_ds.n,
        };
        let (mean, std) = norm_stats(splits);
        let mut store = Store::new(cfg.seed);
        let mcfg = ModelConfig { drop_path: cfg.drop_path, ..ModelConfig::new(data.channels, size, data.classes) };
        let student = models::build(&cfg.model, &mut store, STUDENT, &mcfg)?;
        let distill = cfg.distill.clone().filter(|d| d.method != "none");
        // A teacher is built when distilling, and also for a plain run that names one with its
        // weights (so the run can be compared with it: CKA, predictions).
        let want_teacher = cfg.distill.as_ref().filter(|d| !d.teacher.is_empty() && (distill.is_some() || teacher_weights.is_some()));
        let teacher = match want_teacher {
            Some(d) => Some(models::build(&d.teacher, &mut store, TEACHER, &ModelConfig::new(data.channels, size, data.classes))?),
            None => None,
        };
        let objective =
            Objective::new(&mut store, student.as_ref(), teacher.as_deref(), distill.as_ref(), data.classes, cfg.label_smoothing)?;
        let opt_state = OptimState::register(&mut store, "opt")?;
        let train_metrics = store.state("metrics.train", &[2 + objective.term_names().len()], DType::F32, Init::Zeros)?;
        let eval_metrics = store.state("metrics.eval", &[4], DType::F32, Init::Zeros)?;
        let eval_counter = GpuData::counter(&mut store, "metrics.eval_counter")?;
        let train_gpu = GpuData::upload(ctx, &mut store, &train_ds, "data.train")?;
        let test_gpu = GpuData::upload(ctx, &mut store, &test_ds, "data.test")?;
        store.upload(ctx)?;
        if let (Some(t), Some(w)) = (&teacher, teacher_weights) {
            let _ = t;
            checkpoint::load_into(&store, TEACHER, w, "teacher weights", &LoadOptions::default())?;
        } else if teacher.is_some() {
            return Err(Error::usage("distillation needs the teacher's weights (--teacher-weights)"));
        }

        let steps_per_epoch = (data.train_images / cfg.batch).max(1);
        let total_steps = steps_per_epoch * cfg.epochs;
        let seed = cfg.seed;

        // ---- train plan
        let mut g = Graph::new();
        let step = g.state(&opt_state.step);
        let spec = BatchSpec {
            augment: augment_of(&cfg),
            size: train_ds.h,
            out_size: size,
            mix: mix_of(&cfg),
            smoothing: cfg.label_smoothing,
            ..BatchSpec::train(cfg.batch).normalize(&mean, &std)
        };
        let batch = g.batch(&train_gpu, &spec, step, seed)?;
        let out = student.forward(&mut g, batch.images, Fwd::train(step, seed32(seed)))?;
        let t_out = match (&teacher, &distill) {
            (Some(t), Some(_)) => Some(t.forward(&mut g, batch.images, Fwd::eval())?),
            _ => None,
        };
        let Terms { total, named } =
            objective.loss(&mut g, &out, t_out.as_ref(), batch.labels, batch.soft_targets, Fwd::train(step, seed32(seed)))?;
        // Metrics: [total, 1 (step count), term...], summed on the GPU until read.
        let mut row = vec![total, g.fill(&[1], 1.0)?];
        row.extend(named.iter().map(|(_, v)| *v));
        let row = g.concat(&row, 0)?;
        let m = g.state(&train_metrics);
        g.accumulate(m, row)?;
        let grads = g.backward(total)?;
        let optimizer = optimizer_of(&cfg, steps_per_epoch, total_steps);
        optimizer.apply(&mut g, &mut store, &opt_state, &grads)?;
        let train_outputs: Vec<Var> = std::iter::once(out.logits).chain(out.features.iter().copied()).collect();
        for &v in &train_outputs {
            g.keep(v);
        }
        let train = Plan::compile(ctx, &g, &mut store, "train")?;

        // ---- eval plan: the test set in order, student only, eval mode
        let eb = cfg.eval_batch.min(data.test_images).max(1);
        let mut g = Graph::new();
        let counter = g.state(&eval_counter);
        let spec = BatchSpec { size: train_ds.h, out_size: size, ..BatchSpec::eval(eb).normalize(&mean, &std) };
        let b = g.batch(&test_gpu, &spec, counter, seed)?;
        let out = student.forward(&mut g, b.images, Fwd::eval())?;
        let ce_rows = g.cross_entropy_rows(out.logits, b.labels)?;
        let ce = g.mul(ce_rows, b.valid)?;
        let ce = g.sum_all(ce)?;
        let t1 = g.topk_rows(out.logits, b.labels, 1)?;
        let t1 = g.mul(t1, b.valid)?;
        let t1 = g.sum_all(t1)?;
        let t5 = g.topk_rows(out.logits, b.labels, 5.min(data.classes))?;
        let t5 = g.mul(t5, b.valid)?;
        let t5 = g.sum_all(t5)?;
        let n = g.sum_all(b.valid)?;
        let row = g.concat(&[ce, t1, t5, n], 0)?;
        let m = g.state(&eval_metrics);
        g.accumulate(m, row)?;
        g.data_tick(counter)?;
        let eval = Plan::compile(ctx, &g, &mut store, "eval")?;
        let eval_batches = test_gpu.eval_batches(eb);

        Ok(Session {
            ctx: ctx.clone(),
            cfg,
            store,
            student,
            teacher,
            data,
            objective,
            train,
            eval,
            opt_state,
            train_metrics,
            eval_metrics,
            eval_counter,
            eval_batches,
            steps_per_epoch,
            total_steps,
            step: 0,
            train_outputs,
            test_gpu,
            mean,
            std,
            cka_plan: None,
            predict_plan: None,
        })
    }

    pub fn train_stats(&self) -> &PlanStats {
        self.train.stats()
    }
    pub fn eval_stats(&self) -> &PlanStats {
        self.eval.stats()
    }
    pub fn train_plan(&self) -> &Plan {
        &self.train
    }

    /// Submit `n` training steps (one submit). Never waits for the GPU.
    pub fn train_steps(&mut self, n: usize) -> Result<()> {
        self.train.run(n)?;
        self.step += n;
        Ok(())
    }

    /// Record `n` training steps into a host's encoder (nothing is submitted).
    pub fn encode_steps(&mut self, encoder: &mut wgpu::CommandEncoder, n: usize) {
        self.train.encode_n(encoder, n);
        self.step += n;
    }

    /// [`Self::encode_steps`] with GPU timestamps at the start and end of the steps' pass.
    pub fn encode_steps_timed(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        n: usize,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites<'_>>,
    ) {
        self.train.encode_n_timed(encoder, n, timestamp_writes);
        self.step += n;
    }

    /// Where the training metrics live on the GPU: `[loss sum, step count, term sums...]`
    /// summed over the steps since the last [`Self::request_train_metrics`] (which resets
    /// them). Hosts bind it to follow the loss without a readback.
    pub fn train_metrics_buffer(&self) -> Result<(wgpu::Buffer, u64, Vec<usize>)> {
        self.train.buffer_of(self.train_var_of(&self.train_metrics)?)
    }

    /// Start reading the training metrics summed since the last read, and reset them.
    pub fn request_train_metrics(&self) -> Result<Pending> {
        let m = self.train_var_of(&self.train_metrics)?;
        let s = self.train_var_of(&self.opt_state.scalars)?;
        let p = self.train.request(&[m, s])?;
        self.store.write_state(&self.train_metrics, &vec![0.0; self.train_metrics.numel()])?;
        Ok(p)
    }

    fn train_var_of(&self, s: &StateRef) -> Result<Var> {
        self.train.state_var(s).ok_or_else(|| Error::usage(format!("'{}' is not part of the train plan", s.name())))
    }

    /// Turn raw metric values (from [`Self::request_train_metrics`]) into averages.
    pub fn parse_train_metrics(&self, vals: &[Vec<f32>]) -> TrainMetrics {
        let m = &vals[0];
        let steps = m[1].round().max(0.0) as usize;
        let d = steps.max(1) as f32;
        TrainMetrics {
            steps,
            loss: m[0] / d,
            terms: self.objective.term_names().iter().enumerate().map(|(i, n)| (n.clone(), m[2 + i] / d)).collect(),
            lr: vals[1][0],
        }
    }

    /// Evaluate on the test set (asynchronous: works on the web).
    pub async fn evaluate_async(&mut self) -> Result<EvalResult> {
        self.store.write_state(&self.eval_metrics, &[0.0; 4])?;
        self.store.write_state(&self.eval_counter, &[0.0])?;
        self.eval.run(self.eval_batches)?;
        let v = self.eval.state_var(&self.eval_metrics).ok_or_else(|| Error::usage("eval metrics missing"))?;
        let vals = self.eval.request(&[v])?.take(&self.ctx).await?.remove(0);
        let n = vals[3].max(1.0);
        Ok(EvalResult { loss: vals[0] / n, top1: 100.0 * vals[1] / n, top5: 100.0 * vals[2] / n, images: vals[3] as usize })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        pollster::block_on(self.evaluate_async())
    }

    /// The CKA plan of [`Self::cka_async`] (built once per image count) and its matrix
    /// `[teacher stages, student stages]`. Hosts record it into their own encoder (after
    /// [`Self::reset_eval_counter`]) and draw the matrix from [`Plan::buffer_of`], no readback.
    pub fn cka_plan(&mut self, images: usize) -> Result<(&Plan, Var)> {
        let teacher = self.teacher.as_ref().ok_or_else(|| Error::usage("CKA needs a teacher (give --teacher and its weights)"))?;
        let n = images.clamp(2, self.data.test_images);
        if self.cka_plan.as_ref().map(|c| c.0) != Some(n) {
            let mut g = Graph::new();
            let counter = g.state(&self.eval_counter);
            let spec = BatchSpec { size: self.test_gpu.h, out_size: self.data.size, ..BatchSpec::eval(n).normalize(&self.mean, &self.std) };
            let b = g.batch(&self.test_gpu, &spec, counter, self.cfg.seed)?;
            let t = teacher.forward(&mut g, b.images, Fwd::eval())?;
            let s = self.student.forward(&mut g, b.images, Fwd::eval())?;
            let m = crate::distill::cka::cka_matrix(&mut g, &t.features, &s.features)?;
            g.keep(m);
            let plan = Plan::compile(&self.ctx, &g, &mut self.store, "cka")?;
            self.cka_plan = Some((n, plan, m, counter));
        }
        let (_, plan, m, _) = self.cka_plan.as_ref().unwrap();
        Ok((plan, *m))
    }

    /// Start the next evaluation or CKA pass at the first test image (a queue write).
    pub fn reset_eval_counter(&self) -> Result<()> {
        self.store.write_state(&self.eval_counter, &[0.0])
    }

    /// CKA between the teacher's and the student's stage features on the first `images` test
    /// images (eval mode), computed on the GPU.
    pub async fn cka_async(&mut self, images: usize) -> Result<CkaResult> {
        let ctx = self.ctx.clone();
        self.reset_eval_counter()?;
        let (plan, m) = self.cka_plan(images)?;
        plan.step()?;
        let values = plan.request(&[m])?.take(&ctx).await?.remove(0);
        let teacher = self.teacher.as_ref().unwrap();
        let names = |k: usize| (1..=k).map(|i| format!("stage {i}")).collect::<Vec<_>>();
        Ok(CkaResult {
            values,
            teacher_stages: names(teacher.feature_shapes().len()),
            student_stages: names(self.student.feature_shapes().len()),
            images: images.clamp(2, self.data.test_images),
        })
    }

    /// Class probabilities of the student (and teacher) for one image given as raw pixels in
    /// [0, 1], `channels x h x w` at the data's size: padded and normalised as training did.
    pub async fn predict_async(&mut self, pixels: &[f32]) -> Result<Prediction> {
        let (c, h) = (self.data.channels, self.test_gpu.h);
        if pixels.len() != c * h * h {
            return Err(Error::BadInput {
                tensor: "image".into(),
                msg: format!("expected {c}x{h}x{h} = {} values, got {}", c * h * h, pixels.len()),
            });
        }
        let s = self.data.size;
        let pad = (s - h) / 2;
        let mut x = vec![0.0f32; c * s * s];
        for ch in 0..c {
            let (m, sd) = (self.mean[ch.min(self.mean.len() - 1)], self.std[ch.min(self.std.len() - 1)]);
            for yy in 0..s {
                for xx in 0..s {
                    let inside = yy >= pad && yy < pad + h && xx >= pad && xx < pad + h;
                    let v = if inside { pixels[(ch * h + yy - pad) * h + xx - pad] } else { 0.0 };
                    x[(ch * s + yy) * s + xx] = (v - m) / sd;
                }
            }
        }
        if self.predict_plan.is_none() {
            let mut g = Graph::new();
            let input = g.input("image", &[1, c, s, s])?;
            let so = self.student.forward(&mut g, input, Fwd::eval())?;
            let student = g.softmax(so.logits)?;
            g.keep(student);
            let teacher = match &self.teacher {
                Some(t) => {
                    let to = t.forward(&mut g, input, Fwd::eval())?;
                    let p = g.softmax(to.logits)?;
                    Some(g.keep(p))
                }
                None => None,
            };
            let plan = Plan::compile(&self.ctx, &g, &mut self.store, "predict")?;
            self.predict_plan = Some(PredictPlan { plan, input, student, teacher });
        }
        let p = self.predict_plan.as_ref().unwrap();
        p.plan.write(p.input, &x)?;
        p.plan.step()?;
        let mut vars = vec![p.student];
        vars.extend(p.teacher);
        let mut vals = p.plan.request(&vars)?.take(&self.ctx).await?;
        let teacher = if vals.len() > 1 { Some(vals.remove(1)) } else { None };
        Ok(Prediction { student: vals.remove(0), teacher })
    }

    /// Raw pixels in [0, 1] and the label of test image `i` (for display and `predict_async`).
    pub fn test_image(&self, splits: &Splits, i: usize) -> Result<(Vec<f32>, u32)> {
        let ds = &splits.test;
        if i >= ds.n {
            return Err(Error::BadInput { tensor: "index".into(), msg: format!("test image {i} of {}", ds.n) });
        }
        Ok((ds.image(i).iter().map(|&v| v as f32 / 255.0).collect(), ds.labels[i]))
    }

    /// The student as a PyTorch-compatible safetensors file (branches excluded).
    pub async fn student_bytes(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        checkpoint::to_bytes(&self.store, STUDENT, meta).await
    }

    /// Everything needed to resume: every store tensor (student, branches, optimizer slots,
    /// counters), data excluded.
    pub async fn state_bytes(&self) -> Result<Vec<u8>> {
        let meta = BTreeMap::from([("step".to_string(), self.step.to_string())]);
        checkpoint::state_to_bytes(&self.store, &meta, &|n| !n.starts_with("data.")).await
    }

    /// Initialise the student from PyTorch-named tensors (fine-tuning, e.g. from an OBoW
    /// backbone). A classifier whose shape differs from this run's (another class count) is
    /// skipped and keeps its initialisation; every other tensor must match. Returns the count
    /// of tensors loaded.
    pub fn load_student(&self, tensors: &BTreeMap<String, FileTensor>, source: &str) -> Result<usize> {
        let head = self.student.head_weight().rsplit_once('.').map(|(a, _)| format!("{a}.")).unwrap_or_default();
        let (params, _) = checkpoint::entries(&self.store, STUDENT);
        let mismatch = params.iter().any(|(n, p)| n.starts_with(&head) && tensors.get(n).is_some_and(|t| t.shape != p.shape()));
        let mut t = tensors.clone();
        if mismatch {
            t.retain(|n, _| !n.starts_with(&head));
        }
        let opts = LoadOptions { allow_missing: if mismatch { vec![head] } else { vec![] }, ignore_unexpected: false };
        checkpoint::load_into(&self.store, STUDENT, &t, source, &opts)
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

/// The optimizer a config asks for, with its per-step schedule.
pub fn optimizer_of(cfg: &TrainConfig, steps_per_epoch: usize, total_steps: usize) -> Optimizer {
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f32).round() as usize;
    let schedule = Schedule::Cosine { warmup, total: total_steps, warmup_from: cfg.warmup_lr, min_lr: cfg.min_lr };
    let method = match cfg.opt.as_str() {
        "sgd" => Method::Sgd { momentum: cfg.momentum, nesterov: cfg.nesterov },
        _ => Method::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    };
    Optimizer { method, lr: cfg.lr, weight_decay: cfg.weight_decay, schedule, clip: cfg.clip_grad, ema: None }
}
