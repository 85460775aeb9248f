//! A compiled run: the student (and teacher, and whatever its [`Recipe`] adds), the data on
//! the GPU, and plans over one store: `train` (batch -> forward -> losses -> backward ->
//! optimizer, one submit per step or per n steps) and `eval` (the test set in order), plus
//! CKA and single-image plans compiled on first use. The one run type behind the CLI's loop
//! ([`super::runner`]), the web page's sessions ([`crate::session`]) and host applications
//! ([`crate::embed::HostTrainer`]).

use super::card::ModelCard;
use super::config::TrainConfig;
use super::metrics::{CkaResult, DataInfo, EvalResult, Prediction, TrainMetrics};
use super::recipe::{self, Nets, Recipe, StepInputs};
use crate::checkpoint::{self, FileTensor, LoadOptions};
use crate::data::{BatchSpec, GpuData, Splits};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::plan::Pending;
use crate::graph::{DType, Graph, Plan, PlanStats, Var};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::Fwd;
use crate::optim::{Method, OptimState, Optimizer, Schedule};
use crate::store::{Init, StateRef, Store};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// Store prefixes: the student's names are the PyTorch names after this prefix.
pub const STUDENT: &str = "student.";
pub const TEACHER: &str = "teacher.";

/// A boxed future that need not be `Send` (browser GPU handles are not).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

pub struct Run {
    pub ctx: Context,
    pub cfg: TrainConfig,
    pub store: Store,
    pub student: Box<dyn Backbone>,
    pub teacher: Option<Box<dyn Backbone>>,
    pub recipe: Box<dyn Recipe>,
    pub data: DataInfo,
    train: Plan,
    /// None when the recipe has no evaluation (OBoW without its monitor).
    eval: Option<Plan>,
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
    cka_plan: Option<(usize, Plan, Var)>,
    predict_plan: Option<PredictPlan>,
    /// The teacher's evaluation ([`Self::evaluate_teacher_async`]), built at its first use.
    teacher_eval: Option<Plan>,
}

struct PredictPlan {
    plan: Plan,
    input: Var,
    student: Var,
    student_logits: Var,
    teacher: Option<Var>,
}

impl Run {
    /// Build everything for `cfg` on `ctx` from loaded data and, for distillation, the
    /// teacher's tensors (PyTorch names). The recipe follows from the config (see
    /// [`recipe::for_config`]).
    pub fn new(
        ctx: &Context,
        mut cfg: TrainConfig,
        splits: &Splits,
        teacher_weights: Option<&BTreeMap<String, FileTensor>>,
    ) -> Result<Run> {
        cfg.validate()?;
        cfg.adapter = ctx.adapter.to_string();
        let train_ds = if cfg.train_limit > 0 { splits.train.head(cfg.train_limit) } else { splits.train.clone() };
        let test_ds = if cfg.test_limit > 0 { splits.test.head(cfg.test_limit) } else { splits.test.clone() };
        let size = if cfg.img_size == 0 { train_ds.h } else { cfg.img_size };
        let data = DataInfo {
            name: splits.train.name.clone(),
            classes: train_ds.classes,
            channels: train_ds.c,
            size,
            train_images: train_ds.n,
            test_images: test_ds.n,
            class_names: splits.train.class_names.clone(),
        };
        // Per-channel normalisation, computed on the whole training split.
        let (mean, std) = splits.train.mean_std();
        // The order of registration in the store is part of a seeded run: student, the
        // recipe's nets, optimizer, metrics, data.
        let mut store = Store::new(cfg.seed);
        let mcfg = ModelConfig { drop_path: cfg.drop_path, ..ModelConfig::new(data.channels, size, data.classes) };
        let student = models::build(&cfg.model, &mut store, STUDENT, &mcfg)?;
        let (mut recipe, teacher) = recipe::for_config(&cfg, &mut store, student.as_ref(), &data, &train_ds, teacher_weights)?;
        let opt_state = OptimState::register(&mut store, "opt")?;
        let train_metrics = store.state("metrics.train", &[2 + recipe.term_names().len()], DType::F32, Init::Zeros)?;
        let eval_metrics = store.state("metrics.eval", &[4], DType::F32, Init::Zeros)?;
        let eval_counter = GpuData::counter(&mut store, "metrics.eval_counter")?;
        let train_gpu = GpuData::upload(ctx, &mut store, &train_ds, "data.train")?;
        let test_gpu = GpuData::upload(ctx, &mut store, &test_ds, "data.test")?;
        store.upload(ctx)?;
        let nets = Nets { student: student.as_ref(), teacher: teacher.as_deref() };
        recipe.prepare(&mut store, nets, teacher_weights)?;

        let steps_per_epoch = (data.train_images / cfg.batch).max(1);
        let total_steps = steps_per_epoch * cfg.epochs;
        let optimizer = optimizer_of(&cfg, steps_per_epoch, total_steps);

        // ---- train plan: the recipe's losses, then the metrics, backward and optimizer.
        let mut g = Graph::new();
        let step = g.state(&opt_state.step);
        let inputs = StepInputs {
            ctx,
            cfg: &cfg,
            data: &data,
            train: &train_gpu,
            mean: &mean,
            std: &std,
            step,
            nets,
            opt_state: &opt_state,
            optimizer: &optimizer,
            total_steps,
        };
        let losses = recipe.train_step(&mut g, &mut store, &inputs)?;
        // Metrics: [report, 1 (step count), term...], summed on the GPU until read.
        let mut row = vec![losses.report, g.fill(&[1], 1.0)?];
        row.extend(losses.terms);
        let row = g.concat(&row, 0)?;
        let m = g.state(&train_metrics);
        g.accumulate(m, row)?;
        let grads = g.backward(losses.backprop)?;
        optimizer.apply(&mut g, &mut store, &opt_state, &grads)?;
        for &v in &losses.outputs {
            g.keep(v);
        }
        let train = Plan::compile(ctx, &g, &mut store, &format!("{} train", recipe.kind()))?;

        // ---- eval plan: the test set in order, eval mode
        let eb = cfg.eval_batch.min(data.test_images).max(1);
        let spec = recipe.eval_spec(BatchSpec { size: test_gpu.h, out_size: size, ..BatchSpec::eval(eb).normalize(&mean, &std) });
        let logits = |g: &mut Graph, x: Var| recipe.eval_logits(g, nets, x);
        let name = format!("{} eval", recipe.kind());
        let eval = eval_plan(ctx, &mut store, &name, &logits, &test_gpu, &spec, &eval_counter, &eval_metrics, cfg.seed, data.classes)?;
        let eval_batches = test_gpu.eval_batches(eb);

        Ok(Run {
            ctx: ctx.clone(),
            cfg,
            store,
            student,
            teacher,
            recipe,
            data,
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
            train_outputs: losses.outputs,
            test_gpu,
            mean,
            std,
            cka_plan: None,
            predict_plan: None,
            teacher_eval: None,
        })
    }

    pub fn train_stats(&self) -> &PlanStats {
        self.train.stats()
    }
    pub fn eval_stats(&self) -> Option<&PlanStats> {
        self.eval.as_ref().map(|e| e.stats())
    }
    pub fn train_plan(&self) -> &Plan {
        &self.train
    }
    /// Names of the loss terms, in the order of [`TrainMetrics::terms`] (which then carries
    /// the recipe's extra values, such as OBoW's `mu` per level).
    pub fn term_names(&self) -> &[String] {
        self.recipe.term_names()
    }
    /// One line: what this run does.
    pub fn describe(&self) -> String {
        self.recipe.describe(&self.cfg)
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

    fn train_var_of(&self, s: &StateRef) -> Result<Var> {
        self.train.state_var(s).ok_or_else(|| Error::usage(format!("'{}' is not part of the train plan", s.name())))
    }

    /// Start reading the training metrics summed since the last read (with the optimizer's
    /// scalars and the recipe's extra values), and reset them.
    pub fn request_train_metrics(&self) -> Result<Pending> {
        let mut vars = vec![self.train_var_of(&self.train_metrics)?, self.train_var_of(&self.opt_state.scalars)?];
        for s in self.recipe.extra_reads() {
            vars.push(self.train_var_of(&s)?);
        }
        let p = self.train.request(&vars)?;
        self.store.write_state(&self.train_metrics, &vec![0.0; self.train_metrics.numel()])?;
        Ok(p)
    }

    /// Turn raw metric values (from [`Self::request_train_metrics`]) into averages.
    pub fn parse_train_metrics(&self, vals: &[Vec<f32>]) -> TrainMetrics {
        let m = &vals[0];
        let steps = m[1].round().max(0.0) as usize;
        let d = steps.max(1) as f32;
        let mut terms: Vec<(String, f32)> = self.term_names().iter().enumerate().map(|(i, n)| (n.clone(), m[2 + i] / d)).collect();
        terms.extend(self.recipe.extra_terms(&vals[2..], &vals[1]));
        TrainMetrics { steps, loss: m[0] / d, terms, lr: vals[1][0] }
    }

    /// Wait for the training metrics since the last read (native; blocks).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_train_metrics(&self) -> Result<TrainMetrics> {
        Ok(self.parse_train_metrics(&self.request_train_metrics()?.wait(&self.ctx)?))
    }

    /// Evaluate on the test set (asynchronous: works on the web). A recipe without an
    /// evaluation gives an empty result.
    pub async fn evaluate_async(&mut self) -> Result<EvalResult> {
        let Some(eval) = &self.eval else { return Ok(EvalResult::default()) };
        self.run_eval(eval).await
    }

    /// One pass of an evaluation plan over the test set, from the first image, and its sums.
    async fn run_eval(&self, eval: &Plan) -> Result<EvalResult> {
        self.store.write_state(&self.eval_metrics, &[0.0; 4])?;
        self.store.write_state(&self.eval_counter, &[0.0])?;
        eval.run(self.eval_batches)?;
        let v = eval.state_var(&self.eval_metrics).ok_or_else(|| Error::usage("eval metrics missing"))?;
        let vals = eval.request(&[v])?.take(&self.ctx).await?.remove(0);
        Ok(EvalResult::from_sums(&vals))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(&mut self) -> Result<EvalResult> {
        pollster::block_on(self.evaluate_async())
    }

    /// The teacher's accuracy and loss on the same test set (so a user sees whether the teacher
    /// fits the data before distilling from it). Errors without a teacher.
    pub async fn evaluate_teacher_async(&mut self) -> Result<EvalResult> {
        let teacher = self.teacher.as_ref().ok_or_else(|| Error::usage("this run has no teacher to evaluate"))?;
        if self.teacher_eval.is_none() {
            let eb = self.cfg.eval_batch.min(self.data.test_images).max(1);
            let spec =
                BatchSpec { size: self.test_gpu.h, out_size: self.data.size, ..BatchSpec::eval(eb).normalize(&self.mean, &self.std) };
            let logits = |g: &mut Graph, x: Var| Ok(Some(teacher.forward(g, x, Fwd::eval())?.logits));
            let (ctx, seed, classes) = (self.ctx.clone(), self.cfg.seed, self.data.classes);
            self.teacher_eval = eval_plan(
                &ctx,
                &mut self.store,
                "teacher eval",
                &logits,
                &self.test_gpu,
                &spec,
                &self.eval_counter,
                &self.eval_metrics,
                seed,
                classes,
            )?;
        }
        self.run_eval(self.teacher_eval.as_ref().expect("built above")).await
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate_teacher(&mut self) -> Result<EvalResult> {
        pollster::block_on(self.evaluate_teacher_async())
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
            self.cka_plan = Some((n, plan, m));
        }
        let (_, plan, m) = self.cka_plan.as_ref().unwrap();
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
        let x = self.normalise_image(pixels)?;
        if self.predict_plan.is_none() {
            self.predict_plan = Some(self.compile_predict()?);
        }
        let p = self.predict_plan.as_ref().unwrap();
        p.plan.write(p.input, &x)?;
        p.plan.step()?;
        let mut vars = vec![p.student, p.student_logits];
        vars.extend(p.teacher);
        let mut vals = p.plan.request(&vars)?.take(&self.ctx).await?;
        let teacher = if vals.len() > 2 { Some(vals.remove(2)) } else { None };
        let student_logits = vals.remove(1);
        Ok(Prediction { student: vals.remove(0), student_logits, teacher })
    }

    /// Pixels in [0, 1] at the data's side -> the model's input: zero-padded to its side and
    /// normalised per channel, as the student's card says.
    fn normalise_image(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        self.card().input(pixels)
    }

    /// What the saved student needs to be used on new images (see [`ModelCard`]).
    pub fn card(&self) -> ModelCard {
        let d = self.cfg.distill.as_ref().filter(|_| self.cfg.obow.is_none());
        ModelCard {
            model: self.cfg.model.clone(),
            classes: self.data.class_names.clone(),
            channels: self.data.channels,
            image_size: self.test_gpu.h,
            input_size: self.data.size,
            mean: self.mean.clone(),
            std: self.std.clone(),
            data: self.cfg.data.clone(),
            method: Some(
                d.map(|d| d.method.clone()).unwrap_or_else(|| if self.cfg.obow.is_some() { "obow".into() } else { "none".into() }),
            ),
            teacher: d.filter(|d| d.method != "none").map(|d| d.teacher.clone()),
        }
    }

    fn compile_predict(&mut self) -> Result<PredictPlan> {
        let (c, s) = (self.data.channels, self.data.size);
        let mut g = Graph::new();
        let input = g.input("image", &[1, c, s, s])?;
        let so = self.student.forward(&mut g, input, Fwd::eval())?;
        let student = g.softmax(so.logits)?;
        g.keep(student);
        let student_logits = g.keep(so.logits);
        let teacher = match &self.teacher {
            Some(t) => {
                let to = t.forward(&mut g, input, Fwd::eval())?;
                let p = g.softmax(to.logits)?;
                Some(g.keep(p))
            }
            None => None,
        };
        let plan = Plan::compile(&self.ctx, &g, &mut self.store, "predict")?;
        Ok(PredictPlan { plan, input, student, student_logits, teacher })
    }

    /// Raw pixels in [0, 1] and the label of test image `i` (for display and `predict_async`).
    pub fn test_image(&self, splits: &Splits, i: usize) -> Result<(Vec<f32>, u32)> {
        let ds = &splits.test;
        if i >= ds.n {
            return Err(Error::BadInput { tensor: "index".into(), msg: format!("test image {i} of {}", ds.n) });
        }
        Ok((ds.image(i).iter().map(|&v| v as f32 / 255.0).collect(), ds.labels[i]))
    }

    /// The student as a PyTorch-compatible safetensors file (branches, heads and the EMA
    /// teacher excluded): it loads in `predict`, `eval`, `train --init` and `distill`.
    /// Its metadata: the model, `format: pt`, the student's card ([`ModelCard::META_KEY`]) and
    /// `meta` (what the caller adds: adapter, epoch, accuracy, step). The same weights on two
    /// adapters give the same bytes unless the caller names the adapter.
    pub async fn student_bytes(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let mut meta = meta.clone();
        meta.insert("model".into(), self.cfg.model.clone());
        meta.insert("format".into(), "pt".into());
        meta.insert(ModelCard::META_KEY.into(), self.card().to_json());
        checkpoint::to_bytes(&self.store, STUDENT, &meta).await
    }

    /// Everything needed to resume: every store tensor (student, teacher, branches,
    /// vocabularies, optimizer slots, counters), data excluded.
    pub async fn state_bytes(&self) -> Result<Vec<u8>> {
        self.state_bytes_with(&BTreeMap::new()).await
    }

    /// [`Self::state_bytes`] with more metadata (the runner keeps a part-done epoch's sums there).
    pub async fn state_bytes_with(&self, extra: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        let mut meta = BTreeMap::from([("step".to_string(), self.step.to_string()), ("model".to_string(), self.cfg.model.clone())]);
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
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

    /// Its configuration and sizes, for display (the page's `describe()`).
    pub fn describe_json(&self) -> serde_json::Value {
        let st = self.train_stats();
        let mut v = serde_json::json!({
            "recipe": self.recipe.kind(),
            "student": self.student.name(),
            "model": self.student.name(),
            "teacher": self.teacher.as_ref().map(|t| t.name().to_string()),
            "params": self.store.params().iter().filter(|p| p.name().starts_with(STUDENT)).map(|p| p.numel()).sum::<usize>(),
            "dispatches_per_step": st.dispatches,
            "arena_bytes": st.arena_bytes,
            "train_images": self.data.train_images,
            "test_images": self.data.test_images,
            "steps_per_epoch": self.steps_per_epoch,
            "terms": self.term_names(),
            "adapter": self.ctx.adapter.to_string(),
        });
        if let (Some(o), serde_json::Value::Object(extra)) = (v.as_object_mut(), self.recipe.describe_json()) {
            o.extend(extra);
        }
        v
    }

    /// Anything else a page shows, by name, with JSON arguments and a JSON answer: `classes`,
    /// `sample` (a test image), `predict` (for `pixels` or a test `index`), `cka` (needs a
    /// teacher), and the recipe's own (OBoW: `probe`, `words`). `splits` is the data the run was
    /// built from.
    pub async fn query(&mut self, what: &str, args: &serde_json::Value, splits: &Splits) -> Result<serde_json::Value> {
        let classes = &splits.test.class_names;
        let index = |k: &str| args.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        match what {
            "classes" => Ok(serde_json::json!(classes)),
            "teacher_eval" => {
                let r = self.evaluate_teacher_async().await?;
                Ok(serde_json::json!({ "accuracy": r.top1 / 100.0, "top5": r.top5 / 100.0, "loss": r.loss, "examples": r.images }))
            }
            "card" => Ok(serde_json::to_value(self.card()).expect("plain data")),
            "cka" => {
                let images = args.get("images").and_then(|v| v.as_u64()).unwrap_or(128) as usize;
                let r = self.cka_async(images).await?;
                Ok(serde_json::json!({ "rows": r.teacher_stages, "cols": r.student_stages, "values": r.values, "images": r.images }))
            }
            "sample" => {
                let (px, label) = self.test_image(splits, index("index"))?;
                Ok(serde_json::json!({ "pixels": px, "label": label, "class": classes[label as usize], "size": splits.test.h }))
            }
            "predict" => {
                let pixels: Vec<f32> = match (args.get("pixels"), args.get("index")) {
                    (Some(p), _) => serde_json::from_value(p.clone()).map_err(|e| Error::usage(format!("predict: pixels: {e}")))?,
                    (None, Some(_)) => self.test_image(splits, index("index"))?.0,
                    (None, None) => return Err(Error::usage("predict needs 'pixels' or 'index'")),
                };
                let p = self.predict_async(&pixels).await?;
                Ok(
                    serde_json::json!({ "student": p.student, "student_logits": p.student_logits, "teacher": p.teacher, "classes": classes }),
                )
            }
            _ => match self.recipe.query(self, splits, what, args) {
                Some(f) => f.await,
                None => {
                    let known: Vec<&str> = ["classes", "teacher_eval", "card", "cka", "sample", "predict"]
                        .into_iter()
                        .chain(self.recipe.query_names().iter().copied())
                        .collect();
                    Err(Error::usage(format!("the '{}' run has no query named '{what}' (known: {})", self.recipe.kind(), known.join(", "))))
                }
            },
        }
    }
}

/// The evaluation plan: the recipe's logits on the test batches in order, with the sums
/// `[cross-entropy, top-1 hits, top-5 hits, images]` accumulated into `metrics`. None when the
/// recipe has no evaluation.
#[allow(clippy::too_many_arguments)]
fn eval_plan(
    ctx: &Context,
    store: &mut Store,
    name: &str,
    logits: &dyn Fn(&mut Graph, Var) -> Result<Option<Var>>,
    test: &GpuData,
    spec: &BatchSpec,
    counter: &StateRef,
    metrics: &StateRef,
    seed: u64,
    classes: usize,
) -> Result<Option<Plan>> {
    let mut g = Graph::new();
    let counter = g.state(counter);
    let b = g.batch(test, spec, counter, seed)?;
    let Some(z) = logits(&mut g, b.images)? else { return Ok(None) };
    let ce_rows = g.cross_entropy_rows(z, b.labels)?;
    let ce = g.mul(ce_rows, b.valid)?;
    let ce = g.sum_all(ce)?;
    let t1 = g.topk_rows(z, b.labels, 1)?;
    let t1 = g.mul(t1, b.valid)?;
    let t1 = g.sum_all(t1)?;
    let t5 = g.topk_rows(z, b.labels, 5.min(classes))?;
    let t5 = g.mul(t5, b.valid)?;
    let t5 = g.sum_all(t5)?;
    let n = g.sum_all(b.valid)?;
    let row = g.concat(&[ce, t1, t5, n], 0)?;
    let m = g.state(metrics);
    g.accumulate(m, row)?;
    g.data_tick(counter)?;
    Ok(Some(Plan::compile(ctx, &g, store, name)?))
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
