//! `webdistill train`, `distill`, `eval`, `cka` and the main job: the native loop around a
//! [`Session`] with a progress bar, per-epoch evaluation, checkpoints and reports.

use crate::checkpoint;
use crate::data::{DataSpec, LoadOptions, Splits};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::PlanStats;
use crate::train::obow::ObowSession;
use crate::train::report::{self, EpochRecord};
use crate::train::session::{DataInfo, EvalResult, Session, TrainMetrics};
use crate::train::{DistillConfig, TrainConfig};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags shared by `train` and `distill` (each overrides the recipe / config file).
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Named preset: cifar-cnn, cifar-vit or quick (papers-digest A6).
    #[arg(long)]
    pub recipe: Option<String>,
    /// A config.toml (as written into every run directory) instead of flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// bundled (default), fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// sgd or adamw
    #[arg(long)]
    pub opt: Option<String>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub min_lr: Option<f32>,
    #[arg(long = "wd")]
    pub weight_decay: Option<f32>,
    #[arg(long)]
    pub momentum: Option<f32>,
    #[arg(long)]
    pub warmup_epochs: Option<f32>,
    #[arg(long = "clip-grad")]
    pub clip_grad: Option<f32>,
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    #[arg(long)]
    pub drop_path: Option<f32>,
    /// Input side the model is built for (data is zero-padded up to it).
    #[arg(long)]
    pub img_size: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use only the first N training images (0: all).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images (0: all).
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long)]
    pub eval_batch: Option<usize>,
    /// Output directory (checkpoints, config.toml, metrics.jsonl, charts).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start the student from these weights (.safetensors, PyTorch names), e.g. an OBoW
    /// pre-trained backbone; a classifier with another class count stays at its init.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Write loss and accuracy charts (PNG) after every epoch.
    #[arg(long)]
    pub plot: bool,
    /// No progress bar (logs one line per epoch).
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this many epochs of this invocation (the schedule still spans --epochs);
    /// `--resume DIR` continues. Useful to train in slices.
    #[arg(long)]
    pub stop_after: Option<usize>,
}

impl RunArgs {
    /// The config these flags describe: file or recipe first, then each flag on top.
    pub fn config(&self, model: &str) -> Result<TrainConfig> {
        let mut c = match (&self.config, &self.recipe) {
            (Some(p), _) => TrainConfig::from_toml(&std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?, &p.display().to_string())?,
            (None, Some(r)) => TrainConfig::recipe(r)?,
            (None, None) => TrainConfig::default(),
        };
        if !model.is_empty() {
            c.model = model.to_string();
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        set!(
            data,
            epochs,
            batch,
            opt,
            lr,
            min_lr,
            weight_decay,
            momentum,
            warmup_epochs,
            label_smoothing,
            drop_path,
            img_size,
            seed,
            train_limit,
            test_limit,
            eval_batch
        );
        if self.clip_grad.is_some() {
            c.clip_grad = self.clip_grad;
        }
        if let Some(p) = &self.init {
            c.init = p.display().to_string();
        }
        Ok(c)
    }
}

/// Distillation flags.
#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    #[arg(long)]
    pub teacher: String,
    #[arg(long)]
    pub teacher_weights: PathBuf,
    /// none, kd, dkd, dist, fitnet or ofa
    #[arg(long, default_value = "ofa")]
    pub method: String,
    #[arg(long)]
    pub temperature: Option<f32>,
    /// OFA: eps per branch stage then the logits (one value: all).
    #[arg(long, value_delimiter = ',')]
    pub ofa_eps: Option<Vec<f32>>,
    /// OFA: 1-based student stages that get a branch.
    #[arg(long, value_delimiter = ',')]
    pub ofa_stages: Option<Vec<usize>>,
    #[arg(long)]
    pub ofa_weight: Option<f32>,
    #[arg(long)]
    pub kd_weight: Option<f32>,
    #[arg(long)]
    pub gt_weight: Option<f32>,
    #[arg(long)]
    pub fitnet_weight: Option<f32>,
    #[arg(long)]
    pub dkd_alpha: Option<f32>,
    #[arg(long)]
    pub dkd_beta: Option<f32>,
}

impl DistillArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        let mut d = c.distill.clone().unwrap_or_default();
        d.teacher = self.teacher.clone();
        d.teacher_weights = self.teacher_weights.display().to_string();
        d.method = self.method.clone();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { d.$f = v; } )* };
        }
        set!(temperature, ofa_eps, ofa_stages, ofa_weight, kd_weight, gt_weight, fitnet_weight, dkd_alpha, dkd_beta);
        c.distill = Some(d);
    }
}

pub fn load_data(spec: &str, cfg: &TrainConfig) -> Result<Splits> {
    let s: DataSpec = spec.parse()?;
    let size = if cfg.img_size == 0 { LoadOptions::default().size } else { cfg.img_size };
    s.load(&LoadOptions { size, ..LoadOptions::default() })
}

fn load_teacher(cfg: &TrainConfig) -> Result<Option<BTreeMap<String, checkpoint::FileTensor>>> {
    match &cfg.distill {
        Some(d) if d.method != "none" => Ok(Some(checkpoint::read(Path::new(&d.teacher_weights))?)),
        _ => Ok(None),
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub last: EvalResult,
    pub best_top1: f32,
    pub images_per_s: f32,
    pub dir: Option<PathBuf>,
}

fn meta(cfg: &TrainConfig, extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        ("model".to_string(), cfg.model.clone()),
        ("adapter".to_string(), cfg.adapter.clone()),
        ("format".to_string(), "pt".to_string()),
    ]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    m
}

/// How [`run`] behaves beyond the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub resume: bool,
    pub plot: bool,
    pub quiet: bool,
    /// Stop after this many epochs of this call (None: until the configured epochs).
    pub stop_after: Option<usize>,
}

/// What the native loop needs of a compiled run: supervised training and distillation
/// ([`Session`]) and OBoW pre-training ([`ObowSession`]) share the loop, its checkpoints,
/// metrics, charts, resume and progress bar.
pub trait Runnable {
    fn config(&self) -> &TrainConfig;
    fn data_info(&self) -> &DataInfo;
    /// Steps taken so far (after a resume too).
    fn steps_done(&self) -> usize;
    fn steps_per_epoch(&self) -> usize;
    fn plan_stats(&self) -> PlanStats;
    /// Submit `n` training steps.
    fn submit_steps(&mut self, n: usize) -> Result<()>;
    /// Averages of the training metrics since the last call (waits for the GPU).
    fn read_metrics(&mut self, ctx: &Context) -> Result<TrainMetrics>;
    fn test(&mut self) -> Result<EvalResult>;
    /// The student as PyTorch-named safetensors bytes.
    fn student_file(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>>;
    /// Everything needed to resume.
    fn state_file(&self) -> Result<Vec<u8>>;
    fn restore(&mut self, tensors: &BTreeMap<String, checkpoint::FileTensor>, source: &str) -> Result<()>;
}

impl Runnable for Session {
    fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    fn data_info(&self) -> &DataInfo {
        &self.data
    }
    fn steps_done(&self) -> usize {
        self.step
    }
    fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }
    fn plan_stats(&self) -> PlanStats {
        self.train_stats().clone()
    }
    fn submit_steps(&mut self, n: usize) -> Result<()> {
        self.train_steps(n)
    }
    fn read_metrics(&mut self, ctx: &Context) -> Result<TrainMetrics> {
        Ok(self.parse_train_metrics(&self.request_train_metrics()?.wait(ctx)?))
    }
    fn test(&mut self) -> Result<EvalResult> {
        self.evaluate()
    }
    fn student_file(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        pollster::block_on(self.student_bytes(meta))
    }
    fn state_file(&self) -> Result<Vec<u8>> {
        pollster::block_on(self.state_bytes())
    }
    fn restore(&mut self, tensors: &BTreeMap<String, checkpoint::FileTensor>, source: &str) -> Result<()> {
        self.load_state(tensors, source)
    }
}

impl Runnable for ObowSession {
    fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    fn data_info(&self) -> &DataInfo {
        &self.data
    }
    fn steps_done(&self) -> usize {
        self.step
    }
    fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }
    fn plan_stats(&self) -> PlanStats {
        self.train_stats().clone()
    }
    fn submit_steps(&mut self, n: usize) -> Result<()> {
        self.train_steps(n)
    }
    fn read_metrics(&mut self, ctx: &Context) -> Result<TrainMetrics> {
        Ok(self.parse_train_metrics(&self.request_train_metrics()?.wait(ctx)?))
    }
    fn test(&mut self) -> Result<EvalResult> {
        self.evaluate()
    }
    fn student_file(&self, meta: &BTreeMap<String, String>) -> Result<Vec<u8>> {
        pollster::block_on(self.student_bytes(meta))
    }
    fn state_file(&self) -> Result<Vec<u8>> {
        pollster::block_on(self.state_bytes())
    }
    fn restore(&mut self, tensors: &BTreeMap<String, checkpoint::FileTensor>, source: &str) -> Result<()> {
        self.load_state(tensors, source)
    }
}

/// Train, distil or pre-train with OBoW (as `cfg` says) for the configured epochs, writing
/// everything into `dir` if given.
pub fn run(ctx: &Context, cfg: TrainConfig, dir: Option<&Path>, opts: &RunOptions) -> Result<RunSummary> {
    if cfg.obow.is_some() {
        let splits = load_data(&cfg.data, &cfg)?;
        let mut s = ObowSession::new(ctx, cfg, &splits)?;
        return run_loop(ctx, &mut s, dir, opts);
    }
    let teacher = load_teacher(&cfg)?;
    run_with_teacher(ctx, cfg, teacher.as_ref(), dir, opts)
}

/// [`run`] with the teacher's tensors already in memory (the main job embeds its teacher).
pub fn run_with_teacher(
    ctx: &Context,
    cfg: TrainConfig,
    teacher: Option<&BTreeMap<String, checkpoint::FileTensor>>,
    dir: Option<&Path>,
    opts: &RunOptions,
) -> Result<RunSummary> {
    let splits = load_data(&cfg.data, &cfg)?;
    let init = cfg.init.clone();
    let mut s = Session::new(ctx, cfg, &splits, teacher)?;
    if !init.is_empty() && !opts.resume {
        let path = Path::new(&init);
        let n = s.load_student(&checkpoint::read(path)?, &path.display().to_string())?;
        if !opts.quiet {
            eprintln!("initialised the student from {} ({n} tensors)", path.display());
        }
    }
    run_loop(ctx, &mut s, dir, opts)
}

/// The epoch loop over any [`Runnable`].
pub fn run_loop<S: Runnable>(ctx: &Context, s: &mut S, dir: Option<&Path>, opts: &RunOptions) -> Result<RunSummary> {
    let RunOptions { resume, plot, quiet, stop_after } = opts.clone();
    let mut records: Vec<EpochRecord> = Vec::new();
    let spe = s.steps_per_epoch();
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d, e))?;
        if resume {
            let state = checkpoint::read(&d.join("state.safetensors"))?;
            s.restore(&state, &d.join("state.safetensors").display().to_string())?;
            let mp = d.join("metrics.jsonl");
            records = if mp.exists() { report::read_jsonl(&mp)? } else { Vec::new() };
            // Drop records of epochs after the saved state (a crash between the two writes).
            let done = s.steps_done() / spe;
            records.retain(|r| r.epoch <= done);
        } else {
            let _ = std::fs::remove_file(d.join("metrics.jsonl"));
        }
        checkpoint::write_atomic(&d.join("config.toml"), s.config().to_toml()?.as_bytes())?;
    }
    let start_epoch = s.steps_done() / spe;
    let epochs = s.config().epochs;
    let batch = s.config().batch;
    let mut best = records.iter().map(|r| r.test_top1).fold(0.0f32, f32::max);
    let stats = s.plan_stats();
    if !quiet {
        let d = s.data_info();
        eprintln!(
            "{} on {} ({} train / {} test images, {} classes, {}x{}x{}) | adapter: {}\ntrain plan: {stats}",
            describe(s.config()),
            d.name,
            d.train_images,
            d.test_images,
            d.classes,
            d.channels,
            d.size,
            d.size,
            ctx.adapter
        );
    }
    let t_run = Instant::now();
    let mut ips = 0.0f32;
    let mut last = EvalResult::default();
    let end_epoch = stop_after.map(|n| (start_epoch + n).min(epochs)).unwrap_or(epochs);
    for epoch in start_epoch..end_epoch {
        let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(spe as u64) };
        pb.set_style(ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}").unwrap().progress_chars("=> "));
        pb.set_prefix(format!("{}/{}", epoch + 1, epochs));
        let t0 = Instant::now();
        let mut done = 0;
        let mut loss_sum = 0.0f64;
        let mut loss_n = 0usize;
        let mut term_sums: BTreeMap<String, f64> = BTreeMap::new();
        // Read metrics every few steps: this also keeps the host from running far ahead.
        let chunk = (spe / 20).clamp(1, 50);
        while done < spe {
            let n = chunk.min(spe - done);
            s.submit_steps(n)?;
            let m = s.read_metrics(ctx)?;
            done += n;
            loss_sum += (m.loss * m.steps as f32) as f64;
            loss_n += m.steps;
            for (k, v) in &m.terms {
                *term_sums.entry(k.clone()).or_default() += (*v * m.steps as f32) as f64;
            }
            let rate = (done * batch) as f32 / t0.elapsed().as_secs_f32();
            pb.set_position(done as u64);
            let terms: Vec<String> = m.terms.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            pb.set_message(format!("loss {:.4} ({}) lr {:.2e} {:.0} img/s", m.loss, terms.join(", "), m.lr, rate));
            if !m.loss.is_finite() {
                pb.abandon();
                return Err(Error::usage(format!("the loss diverged (NaN/inf) at step {}: lower --lr or add --clip-grad", s.steps_done())));
            }
        }
        ips = (spe * batch) as f32 / t0.elapsed().as_secs_f32();
        pb.finish_and_clear();
        last = s.test()?;
        let rec = EpochRecord {
            epoch: epoch + 1,
            step: s.steps_done(),
            lr: 0.0,
            train_loss: (loss_sum / loss_n.max(1) as f64) as f32,
            test_loss: last.loss,
            test_top1: last.top1,
            test_top5: last.top5,
            images_per_s: ips,
            elapsed_s: t_run.elapsed().as_secs_f32(),
            // Supervised runs keep their records as before; OBoW's terms go to terms.png.
            terms: if s.config().obow.is_some() {
                term_sums.into_iter().map(|(k, v)| (k, (v / loss_n.max(1) as f64) as f32)).collect()
            } else {
                BTreeMap::new()
            },
        };
        if !quiet {
            eprintln!(
                "epoch {}/{}: train loss {:.4}, test loss {:.4}, top-1 {:.2}%, top-5 {:.2}%, {:.0} img/s",
                rec.epoch, epochs, rec.train_loss, rec.test_loss, rec.test_top1, rec.test_top5, ips
            );
        }
        records.push(rec.clone());
        if let Some(d) = dir {
            let m = meta(s.config(), &[("epoch", rec.epoch.to_string()), ("top1", format!("{:.2}", rec.test_top1))]);
            let student = s.student_file(&m)?;
            checkpoint::write_atomic(&d.join("last.safetensors"), &student)?;
            if rec.test_top1 >= best {
                best = rec.test_top1;
                checkpoint::write_atomic(&d.join("best.safetensors"), &student)?;
            }
            checkpoint::write_atomic(&d.join("state.safetensors"), &s.state_file()?)?;
            report::append_jsonl(&d.join("metrics.jsonl"), &rec)?;
            if plot {
                report::plot_run(d, &records)?;
            }
        }
        best = best.max(rec.test_top1);
    }
    if start_epoch >= end_epoch {
        last = s.test()?;
    }
    Ok(RunSummary { last, best_top1: best, images_per_s: ips, dir: dir.map(|d| d.to_path_buf()) })
}

pub fn describe(c: &TrainConfig) -> String {
    if let Some(o) = &c.obow {
        return format!("OBoW pre-training of {} ({} words per level, {} crops + {} patches)", c.model, o.words, o.crops, o.patches);
    }
    match &c.distill {
        Some(d) if d.method != "none" => format!("distilling {} -> {} with {}", d.teacher, c.model, d.method),
        _ => format!("training {}", c.model),
    }
}

/// `webdistill eval`: accuracy and loss of a checkpoint on a dataset's test split.
pub fn eval(ctx: &Context, model: &str, weights: &Path, data: &str, img_size: usize, batch: usize) -> Result<EvalResult> {
    let cfg = TrainConfig { model: model.into(), data: data.into(), img_size, eval_batch: batch, epochs: 1, ..TrainConfig::default() };
    let splits = load_data(data, &cfg)?;
    let mut s = Session::new(ctx, cfg, &splits, None)?;
    let t = checkpoint::read(weights)?;
    checkpoint::load_into(&s.store, crate::train::session::STUDENT, &t, &weights.display().to_string(), &Default::default())?;
    s.evaluate()
}

/// `webdistill cka`: linear CKA between every teacher stage and every student stage on the
/// first `images` test images; prints the matrix and writes `cka.json` and `cka.png` in `out`.
#[allow(clippy::too_many_arguments)]
pub fn cka(
    ctx: &Context,
    teacher: &str,
    teacher_weights: &Path,
    student: &str,
    student_weights: &Path,
    data: &str,
    img_size: usize,
    images: usize,
    out: &Path,
) -> Result<crate::train::session::CkaResult> {
    let cfg = TrainConfig {
        model: student.into(),
        data: data.into(),
        img_size,
        epochs: 1,
        distill: Some(DistillConfig {
            method: "none".into(),
            teacher: teacher.into(),
            teacher_weights: teacher_weights.display().to_string(),
            ..Default::default()
        }),
        ..TrainConfig::default()
    };
    let splits = load_data(data, &cfg)?;
    let tw = checkpoint::read(teacher_weights)?;
    let mut s = Session::new(ctx, cfg, &splits, Some(&tw))?;
    let sw = checkpoint::read(student_weights)?;
    checkpoint::load_into(&s.store, crate::train::session::STUDENT, &sw, &student_weights.display().to_string(), &Default::default())?;
    let r = pollster::block_on(s.cka_async(images))?;
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
    let json = serde_json::json!({
        "teacher": teacher, "student": student, "images": r.images, "adapter": ctx.adapter.to_string(),
        "rows": r.teacher_stages, "cols": r.student_stages,
        "cka": r.values.chunks(r.student_stages.len()).map(|c| c.to_vec()).collect::<Vec<_>>(),
    });
    checkpoint::write_atomic(&out.join("cka.json"), serde_json::to_string_pretty(&json).unwrap().as_bytes())?;
    report::heatmap(
        &out.join("cka.png"),
        &format!("Linear CKA, {} images", r.images),
        &r.values,
        &r.teacher_stages,
        &r.student_stages,
        "teacher stage",
        "student stage",
    )?;
    Ok(r)
}
