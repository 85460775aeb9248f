//! `webdistill obow` (self-supervised pre-training), `probe` (linear probe on frozen
//! features), `fewshot` (prototype few-shot accuracy) and `obow-words` (a picture of the
//! vocabulary).

use super::train::{Bar, RunArgs, config_of};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::train::TrainConfig;
use crate::train::probe::{self, FeatureOptions, Features, FewShotConfig, ProbeConfig};
use crate::train::runner;
use crate::train::words::{self, WordRequest};
use clap::Args;
use std::path::{Path, PathBuf};

/// OBoW flags (each overrides the recipe / config file).
#[derive(Args, Debug, Clone, Default)]
pub struct ObowArgs {
    /// Words per vocabulary (K, a multiple of --batch; reference 8192).
    #[arg(long)]
    pub words: Option<usize>,
    /// 1-based stages whose teacher features make the BoW targets (default: the last two).
    #[arg(long, value_delimiter = ',')]
    pub levels: Option<Vec<usize>>,
    /// Inverse temperature of the soft assignment (reference 10 for ResNet-18, 15 for R50).
    #[arg(long)]
    pub inv_delta: Option<f32>,
    /// Scale of the BoW logits (reference 5 for ResNet-18, 8 for R50).
    #[arg(long)]
    pub kappa: Option<f32>,
    /// Teacher momentum at the start (cosine to 1 over the run).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Keep the teacher momentum constant.
    #[arg(long)]
    pub constant_alpha: bool,
    /// Large crops per image.
    #[arg(long)]
    pub crops: Option<usize>,
    /// Patches per image (of a 3x3 grid).
    #[arg(long)]
    pub patches: Option<usize>,
    /// No monitoring classifier (then no per-epoch accuracy).
    #[arg(long)]
    pub no_monitor: bool,
}

impl ObowArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        let mut o = c.obow.clone().unwrap_or_default();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { o.$f = v; } )* };
        }
        set!(words, levels, inv_delta, kappa, alpha, crops, patches);
        if self.constant_alpha {
            o.alpha_cosine = false;
        }
        if self.no_monitor {
            o.monitor = false;
        }
        c.obow = Some(o);
    }
}

/// `webdistill obow`: the config from the `obow` recipe (or --recipe/--config) and flags, or
/// --resume DIR's own.
pub fn obow_cmd(ctx: &Context, model: &str, args: &ObowArgs, run: &RunArgs) -> Result<()> {
    let (cfg, dir, resume) = config_of(model, run, Some("obow"), |c| args.apply(c))?;
    if cfg.obow.is_none() {
        return Err(Error::usage("this run directory is not an OBoW run (use `webdistill train --resume`)"));
    }
    let s = runner::run(ctx, cfg, dir.as_deref(), &run.options(resume), &mut Bar::new(run.quiet))?;
    println!(
        "final: monitor top-1 {:.2}% (best {:.2}%), {:.0} img/s{}",
        s.last.top1,
        s.best_top1,
        s.images_per_s,
        s.dir.map(|d| format!(", student backbone in {}/last.safetensors", d.display())).unwrap_or_default()
    );
    Ok(())
}

/// Flags shared by `probe` and `fewshot`.
#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Backbone weights (.safetensors, PyTorch names; e.g. an OBoW run's last.safetensors).
    /// Without: the model at its random initialisation (from --seed).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value = "bundled")]
    pub data: String,
    /// Side the backbone sees (zero padding); 0: the data's own (as `obow` trains).
    #[arg(long, default_value_t = 0)]
    pub img_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N training images (0: all).
    #[arg(long, default_value_t = 0)]
    pub train_limit: usize,
    /// Use only the first N test images (0: all).
    #[arg(long, default_value_t = 0)]
    pub test_limit: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl FeatureArgs {
    fn extract(&self, ctx: &Context) -> Result<Features> {
        let opts = FeatureOptions {
            img_size: self.img_size,
            batch: 100,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            seed: self.seed,
        };
        Features::from_files(ctx, &self.model, self.weights.as_deref(), &self.data, &opts)
    }

    fn what(&self) -> String {
        match &self.weights {
            Some(p) => format!("{} from {}", self.model, p.display()),
            None => format!("{} at random initialisation (seed {})", self.model, self.seed),
        }
    }
}

/// `webdistill probe`.
pub fn probe_cmd(ctx: &Context, f: &FeatureArgs, cfg: &ProbeConfig) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut feats = f.extract(ctx)?;
    let t_extract = t0.elapsed().as_secs_f32();
    let r = pollster::block_on(feats.linear_probe(cfg))?;
    if f.json {
        println!(
            "{}",
            serde_json::json!({
                "model": f.model, "weights": f.weights.as_ref().map(|p| p.display().to_string()), "data": f.data,
                "top1": r.top1, "top5": r.top5, "train_loss": r.train_loss, "steps": r.steps, "epochs": cfg.epochs,
                "lr": cfg.lr, "batch": cfg.batch, "dim": feats.dim, "train_images": feats.n_train, "test_images": feats.n_test,
                "seconds": t0.elapsed().as_secs_f32(),
            })
        );
    } else {
        println!(
            "linear probe of {} on {} ({}-d features of {} train / {} test images, extracted in {:.1}s): top-1 {:.2}%, top-5 {:.2}% \
             (train loss {:.4}, {} steps) | adapter: {}",
            f.what(),
            f.data,
            feats.dim,
            feats.n_train,
            feats.n_test,
            t_extract,
            r.top1,
            r.top5,
            r.train_loss,
            r.steps,
            ctx.adapter
        );
    }
    Ok(())
}

/// `webdistill fewshot`: one result per shot count.
pub fn fewshot_cmd(ctx: &Context, f: &FeatureArgs, shots: &[usize], cfg: &FewShotConfig) -> Result<()> {
    // The train bank is not needed: extract it from one image only.
    let f = FeatureArgs { train_limit: 1, ..f.clone() };
    let feats = f.extract(ctx)?;
    let (x, labels) = pollster::block_on(feats.test_features())?;
    let mut out = Vec::new();
    for &k in shots {
        let r = probe::few_shot(&x, &labels, feats.dim, &FewShotConfig { shots: k, ..cfg.clone() })?;
        out.push((k, r));
    }
    if f.json {
        let rs: Vec<_> = out.iter().map(|(k, r)| serde_json::json!({"shots": k, "accuracy": r.accuracy, "ci95": r.ci95})).collect();
        println!(
            "{}",
            serde_json::json!({"model": f.model, "weights": f.weights.as_ref().map(|p| p.display().to_string()), "data": f.data,
                "ways": cfg.ways, "queries": cfg.queries, "episodes": cfg.episodes, "results": rs})
        );
    } else {
        for (k, r) in out {
            println!(
                "{}-way {k}-shot ({} queries per class, {} episodes) of {} on {} test images: {:.2}% +- {:.2}",
                cfg.ways,
                cfg.queries,
                cfg.episodes,
                f.what(),
                f.data,
                r.accuracy,
                r.ci95
            );
        }
    }
    Ok(())
}

/// `webdistill obow-words`: for a sample of words of one level, the test-set patches nearest to
/// each word, as a PNG grid (one row per word).
pub fn words_cmd(ctx: &Context, weights: &Path, data: Option<&str>, out: &Path, req: &WordRequest, test_limit: usize) -> Result<()> {
    let (grid, cfg) = words::picture_of_run(ctx, weights, data, out, req, test_limit)?;
    println!(
        "wrote {} ({} words of level {} = stage {} of {}, {} nearest test patches each, {}-px patches) | adapter: {}",
        out.display(),
        grid.rows.len(),
        grid.level + 1,
        grid.stage + 1,
        cfg.model,
        req.per_word,
        grid.side,
        ctx.adapter
    );
    Ok(())
}
