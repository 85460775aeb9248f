//! `webdistill train`, `distill` and `obow`: flags -> a [`TrainConfig`], then
//! [`runner::run`] with a progress bar.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::train::report::EpochRecord;
use crate::train::runner::{self, Progress, RunOptions, SaveEvery};
use crate::train::{Run, TrainConfig, TrainMetrics};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Flags shared by `train` and `distill` (each overrides the recipe / config file).
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Named preset of settings: cifar-cnn, cifar-vit, quick (papers-digest A6) or obow.
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
    /// Image folders without a val/ split: the fraction of each class held out (every 10th
    /// image by name at 0.1).
    #[arg(long)]
    pub val_split: Option<f32>,
    /// Image folders: 3 (RGB, default) or 1 (grey).
    #[arg(long)]
    pub channels: Option<usize>,
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
    /// Also write the resumable state every N steps inside an epoch (0: only at epoch ends;
    /// default: every 3 minutes of training), so a crash or kill loses at most that much;
    /// `--resume DIR` continues to the same result as an uninterrupted run.
    #[arg(long)]
    pub save_every: Option<usize>,
}

impl RunArgs {
    /// The config these flags describe: file or recipe first, then each flag on top.
    pub fn config(&self, model: &str) -> Result<TrainConfig> {
        let mut c = match (&self.config, &self.recipe) {
            (Some(p), _) => TrainConfig::from_toml(&std::fs::read_to_string(p).map_err(|e| Error::file(p, e))?, &p.display().to_string())?,
            (None, Some(r)) => TrainConfig::preset(r)?,
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
            val_split,
            channels,
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

impl RunArgs {
    /// The loop's options these flags ask for.
    pub fn options(&self, resume: bool) -> RunOptions {
        let save_every = match self.save_every {
            None => SaveEvery::default(),
            Some(0) => SaveEvery::Never,
            Some(n) => SaveEvery::Steps(n),
        };
        RunOptions { resume, plot: self.plot, stop_after: self.stop_after, save_every }
    }
}

/// The config of `train`, `distill` and `obow`: `--resume DIR`'s own, or the flags'
/// (`default_preset` when neither --recipe nor --config is given), with `tweak` applying the
/// command's own flags. Returns the config, the output directory and whether it resumes.
pub fn config_of(
    model: &str,
    run: &RunArgs,
    default_preset: Option<&str>,
    tweak: impl FnOnce(&mut TrainConfig),
) -> Result<(TrainConfig, Option<PathBuf>, bool)> {
    if let Some(dir) = &run.resume {
        let p = dir.join("config.toml");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
        return Ok((TrainConfig::from_toml(&text, &p.display().to_string())?, Some(dir.clone()), true));
    }
    let mut r = run.clone();
    if r.recipe.is_none() && r.config.is_none() {
        r.recipe = default_preset.map(String::from);
    }
    let mut cfg = r.config(model)?;
    tweak(&mut cfg);
    Ok((cfg, run.out.clone(), false))
}

/// `train` and `distill`.
pub fn train_cmd(ctx: &Context, model: &str, distill: Option<&DistillArgs>, run: &RunArgs) -> Result<()> {
    let (cfg, dir, resume) = config_of(model, run, None, |c| {
        if let Some(d) = distill {
            d.apply(c);
        }
    })?;
    let s = runner::run(ctx, cfg, dir.as_deref(), &run.options(resume), &mut Bar::new(run.quiet))?;
    println!(
        "final: top-1 {:.2}% (best {:.2}%), top-5 {:.2}%, test loss {:.4}, {:.0} img/s{}",
        s.last.top1,
        s.best_top1,
        s.last.top5,
        s.last.loss,
        s.images_per_s,
        s.dir.map(|d| format!(", saved to {}", d.display())).unwrap_or_default()
    );
    Ok(())
}

/// The loop's progress on the terminal: the run and plan once, a bar per epoch (loss, terms,
/// learning rate, images/s, ETA), a line per finished epoch. `quiet`: the epoch lines only.
pub struct Bar {
    quiet: bool,
    bar: ProgressBar,
    /// The first epoch of this call (a resumed run starts later), for the ETA.
    first_epoch: Option<usize>,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        Bar { quiet, bar: ProgressBar::hidden(), first_epoch: None }
    }
}

/// Seconds as "1h02m", "4m05s" or "12s".
fn duration(s: f32) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress for Bar {
    fn start(&mut self, r: &Run) {
        if self.quiet {
            return;
        }
        let d = &r.data;
        eprintln!(
            "{} on {} ({} train / {} test images, {} classes, {}x{}x{}) | adapter: {}\ntrain plan: {}",
            r.describe(),
            d.name,
            d.train_images,
            d.test_images,
            d.classes,
            d.channels,
            d.size,
            d.size,
            r.ctx.adapter,
            r.train_stats()
        );
    }
    fn note(&mut self, text: &str) {
        // Rare and worth seeing (the teacher's accuracy, an initialisation): --quiet too.
        eprintln!("{text}");
    }
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.first_epoch.get_or_insert(epoch);
        self.bar = if self.quiet { ProgressBar::hidden() } else { ProgressBar::new(steps as u64) };
        self.bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}").unwrap().progress_chars("=> "),
        );
        self.bar.set_prefix(format!("{epoch}/{epochs}"));
    }
    fn steps(&mut self, done: usize, m: &TrainMetrics, images_per_s: f32) {
        self.bar.set_position(done as u64);
        let terms: Vec<String> = m.terms.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        self.bar.set_message(format!("loss {:.4} ({}) lr {:.2e} {:.0} img/s", m.loss, terms.join(", "), m.lr, images_per_s));
    }
    fn epoch_end(&mut self, rec: &EpochRecord, epochs: usize) {
        self.bar.finish_and_clear();
        // The mean epoch of this call (with its evaluation and checkpoint) times those left.
        let done = rec.epoch + 1 - self.first_epoch.unwrap_or(rec.epoch);
        let eta = rec.elapsed_s / done.max(1) as f32 * epochs.saturating_sub(rec.epoch) as f32;
        eprintln!(
            "epoch {}/{}: train loss {:.4}, test loss {:.4}, top-1 {:.2}%, top-5 {:.2}%, {:.1} img/s, {} so far, ETA {}",
            rec.epoch,
            epochs,
            rec.train_loss,
            rec.test_loss,
            rec.test_top1,
            rec.test_top5,
            rec.images_per_s,
            duration(rec.elapsed_s),
            duration(eta)
        );
    }
    fn abandon(&mut self) {
        self.bar.abandon();
    }
}
