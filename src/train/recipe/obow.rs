//! OBoW self-supervised pre-training (papers-digest B) as a recipe: a student and its EMA
//! teacher (two copies of one backbone in the store), the vocabularies, the student's BoW
//! prediction head and a monitoring classifier ([`Obow`]); the whole step runs on the GPU
//! (teacher EMA, multi-crop views, teacher targets, vocabulary and `mu` updates, student
//! forward/backward, SGD). Evaluation scores the monitoring classifier on the teacher's pooled
//! test features, which gives the per-epoch accuracy.
//!
//! Step order, as the reference's `OBoW.forward`: (1) the teacher's EMA update from the student
//! of the previous step, with this step's alpha; (2) the dictionaries are cloned; (3) the
//! student predicts from the crops with the cloned words; (4) the teacher (BatchNorm in train
//! mode) makes the targets on its own view with the cloned words, then `mu` and the queues move;
//! (5) losses, backward, SGD step. The EMA is placed at the start of the step rather than in the
//! optimizer phase at the end of the previous one, so that alpha is indexed exactly as the
//! reference's (`_iteration` is the current step) and a resumed run replays the same order.

use super::{Nets, Recipe, StepInputs, StepLosses};
use crate::checkpoint::{self, FileTensor};
use crate::data::{Augment, BatchSpec, Crop, Dataset, MultiCropSpec, Splits, seed32};
use crate::distill::obow::{Layout, Obow, ObowConfig, PREFIX};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::{Graph, Var};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::{Builder, Fwd};
use crate::optim::Ema;
use crate::store::{Param, StateRef, Store};
use crate::train::config::TrainConfig;
use crate::train::metrics::DataInfo;
use crate::train::probe::{FeatureOptions, Features, ProbeConfig};
use crate::train::run::{LocalFuture, Run, STUDENT, TEACHER};
use crate::train::words;
use std::collections::BTreeMap;

pub struct ObowRecipe {
    pub cfg: ObowConfig,
    pub obow: Obow,
    names: Vec<String>,
    /// (student, teacher) parameter pairs of the EMA (set by `prepare`).
    pub pairs: Vec<(Param, Param)>,
}

/// Bytes of one distance block: at most one storage binding, and at most 64 MiB so that
/// several blocks of a large batch need not all be huge.
fn max_block(ctx: &Context) -> u64 {
    ctx.max_binding().min(64 << 20)
}

impl ObowRecipe {
    /// The teacher (a second copy of the student's architecture) and OBoW's modules over
    /// `store`.
    pub fn new(
        cfg: &TrainConfig,
        store: &mut Store,
        student: &dyn Backbone,
        data: &DataInfo,
        source: &Dataset,
    ) -> Result<(ObowRecipe, Box<dyn Backbone>)> {
        let ocfg = cfg.obow.clone().ok_or_else(|| Error::usage("the OBoW recipe needs cfg.obow"))?;
        if !cfg.init.is_empty() {
            return Err(Error::usage("OBoW pre-training starts from random weights (--init is for train and distill)"));
        }
        if source.h != source.w {
            return Err(Error::usage(format!("OBoW needs square images, the data is {}x{}", source.h, source.w)));
        }
        let teacher = models::build(&cfg.model, store, TEACHER, &ModelConfig::new(data.channels, data.size, data.classes))?;
        let obow = Obow::new(&mut Builder::new(store, PREFIX), student, &ocfg, data.classes, cfg.seed)?;
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
        Ok((ObowRecipe { cfg: ocfg, obow, names, pairs: Vec::new() }, teacher))
    }

    /// Linear-probe top-1 (percent) of `model` with `weights` (None: random init).
    async fn probe_one(
        ctx: &Context,
        model: &str,
        splits: &Splits,
        weights: Option<&BTreeMap<String, FileTensor>>,
        opts: &FeatureOptions,
        cfg: &ProbeConfig,
    ) -> Result<f32> {
        let w = weights.map(|w| (w, "the OBoW student"));
        let mut f = Features::extract(ctx, model, w, splits, opts).await?;
        Ok(f.linear_probe(cfg).await?.top1)
    }

    /// `probe`: linear probes of the pre-trained student and of a random-init backbone on a
    /// small budget (features of a few hundred images, a few epochs of SGD).
    async fn probe_query(run: &Run, splits: &Splits, args: &serde_json::Value) -> Result<serde_json::Value> {
        let num = |k: &str, d: u64| args.get(k).and_then(|v| v.as_u64()).unwrap_or(d) as usize;
        let seed = run.cfg.seed;
        let opts = FeatureOptions {
            img_size: run.cfg.img_size,
            batch: 100,
            train_limit: num("train_images", 1000),
            test_limit: num("test_images", 500),
            seed,
        };
        let cfg = ProbeConfig { epochs: num("epochs", 10), batch: 100, lr: 0.1, weight_decay: 0.0, seed };
        let t0 = crate::train::metrics::now_ms();
        let student = checkpoint::parse(&run.student_bytes(&BTreeMap::new()).await?, "the OBoW student")?;
        let obow = Self::probe_one(&run.ctx, &run.cfg.model, splits, Some(&student), &opts, &cfg).await?;
        let random = Self::probe_one(&run.ctx, &run.cfg.model, splits, None, &opts, &cfg).await?;
        Ok(serde_json::json!({
            "obow": obow / 100.0, "random": random / 100.0, "step": run.step,
            "train_images": opts.train_limit, "test_images": opts.test_limit, "epochs": cfg.epochs,
            "seconds": (crate::train::metrics::now_ms() - t0) / 1e3,
        }))
    }

    /// `words`: the test patches nearest to a sample of the visual words, as RGBA pixels.
    async fn words_query(run: &Run, splits: &Splits, args: &serde_json::Value) -> Result<serde_json::Value> {
        let num = |k: &str, d: u64| args.get(k).and_then(|v| v.as_u64()).unwrap_or(d) as usize;
        let state = checkpoint::parse(&run.state_bytes().await?, "the OBoW state")?;
        let test = splits.test.head(num("test_images", 300));
        let (mean, std) = splits.train.mean_std();
        let level = args.get("level").and_then(|v| v.as_u64()).map(|v| v as usize);
        let seed = args.get("seed").and_then(|v| v.as_u64()).unwrap_or(0);
        let request = words::WordRequest { level, words: num("words", 8), per_word: num("per_word", 6), seed };
        let g = words::word_grid(&run.ctx, &run.cfg, &state, "the OBoW state", &test, &mean, &std, &request).await?;
        let scale = num("scale", (48 / g.side.max(1)).max(1) as u64);
        let (w, h, px) = words::tile_grid_rgba(&g.rows, scale)?;
        Ok(serde_json::json!({ "width": w, "height": h, "pixels": px, "level": g.level + 1, "stage": g.stage + 1, "patch": g.side }))
    }
}

impl Recipe for ObowRecipe {
    fn kind(&self) -> &'static str {
        "obow"
    }

    fn describe(&self, cfg: &TrainConfig) -> String {
        let o = &self.cfg;
        format!("OBoW pre-training of {} ({} words per level, {} crops + {} patches)", cfg.model, o.words, o.crops, o.patches)
    }

    fn term_names(&self) -> &[String] {
        &self.names
    }

    /// The teacher starts as a copy of the student; the EMA covers the backbone's parameters
    /// (not its unused classifier), BatchNorm buffers evolve on their own.
    fn prepare(&mut self, store: &mut Store, nets: Nets<'_>, _teacher_weights: Option<&BTreeMap<String, FileTensor>>) -> Result<()> {
        let head = format!("{}.", nets.student.head_weight().rsplit_once('.').map(|(a, _)| a).unwrap_or(""));
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
        self.pairs = pairs;
        Ok(())
    }

    fn train_step(&self, g: &mut Graph, store: &mut Store, x: &StepInputs<'_>) -> Result<StepLosses> {
        let (cfg, ocfg, obow) = (x.cfg, &self.cfg, &self.obow);
        let teacher = x.nets.teacher.ok_or_else(|| Error::usage("OBoW needs its EMA teacher"))?;
        let (step, seed) = (x.step, cfg.seed);
        // (1) teacher EMA from the student of the previous step, this step's alpha.
        let mut with_ema = x.optimizer.clone();
        with_ema.ema = Some(Ema {
            pairs: self.pairs.clone(),
            base: ocfg.alpha,
            cosine_steps: if ocfg.alpha_cosine { Some(x.total_steps) } else { None },
        });
        with_ema.apply_ema(g, store, x.opt_state)?;
        // Views: teacher (resize + centre crop + flip), large crops, patches.
        let mut spec = MultiCropSpec::obow(cfg.batch, x.data.size);
        spec.large = ocfg.crops;
        spec.patches.keep = ocfg.patches;
        spec.mean = x.mean.to_vec();
        spec.std = x.std.to_vec();
        let mc = g.multicrop(x.train, &spec, step, seed)?;
        // (2) the step's dictionaries.
        let dicts = obow.dictionaries(g)?;
        // (3) student predictions: one forward per crop type (BatchNorm statistics per type).
        let fwd = Fwd::train(step, seed32(seed));
        let weights = obow.word_weights(g, &dicts, fwd)?;
        let mut crop_feats = Vec::new();
        if let Some(xc) = mc.large {
            let o = g.scoped("student.crops", |g| x.nets.student.forward(g, xc, fwd))?;
            crop_feats.push((o.pooled, Layout::CropMajor(ocfg.crops)));
        }
        if let Some(xp) = mc.patches {
            let o = g.scoped("student.patches", |g| x.nets.student.forward(g, xp, fwd))?;
            crop_feats.push((o.pooled, Layout::SampleMajor(ocfg.patches)));
        }
        // (4) teacher targets on its own view, BatchNorm in train mode, no gradient.
        let t_out = g.scoped("teacher", |g| teacher.forward(g, mc.teacher, fwd))?;
        let tfeat: Vec<Var> = obow.levels.iter().map(|l| g.detach(t_out.features[l.stage])).collect::<Result<_>>()?;
        let targets = obow.targets(g, &tfeat, &dicts, step, seed32(seed), max_block(x.ctx))?;
        // (5) losses: per crop type averaged over levels, summed over crop types.
        let mut total_ce: Option<Var> = None;
        let mut bow_kl: Option<Var> = None;
        let mut named: Vec<Var> = Vec::new();
        for (pooled, layout) in &crop_feats {
            let l = obow.crop_loss(g, *pooled, &weights, &targets, *layout)?;
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
        let mut report = bow_kl;
        if obow.monitor.is_some() {
            let pooled = g.detach(t_out.pooled)?;
            let z = obow.monitor_logits(g, pooled, fwd)?.expect("monitor");
            let ce = g.cross_entropy(z, mc.labels, 0.0)?;
            total_ce = g.add(total_ce, ce)?;
            report = g.add(report, ce)?;
            named.push(ce);
        }
        // Terms: bow (KL summed over crop types), each crop type's KL, the monitor's CE.
        let terms = std::iter::once(bow_kl).chain(named).collect();
        // No outputs kept for hosts: keeping the crops' maps alive would grow the arena of
        // the largest step this library compiles.
        Ok(StepLosses { backprop: total_ce, report, terms, outputs: Vec::new() })
    }

    /// The teacher's view without the flip: resize by 256/224, centre crop.
    fn eval_spec(&self, spec: BatchSpec) -> BatchSpec {
        let resize = MultiCropSpec::obow(spec.batch, spec.out_size).teacher_resize;
        BatchSpec { size: spec.out_size, augment: Augment { crop: Crop::Center { resize }, ..Augment::none() }, ..spec }
    }

    /// The monitoring classifier on the teacher's pooled features (None without a monitor).
    fn eval_logits(&self, g: &mut Graph, nets: Nets<'_>, images: Var) -> Result<Option<Var>> {
        if self.obow.monitor.is_none() {
            return Ok(None);
        }
        let teacher = nets.teacher.ok_or_else(|| Error::usage("OBoW needs its EMA teacher"))?;
        let out = teacher.forward(g, images, Fwd::eval())?;
        self.obow.monitor_logits(g, out.pooled, Fwd::eval())
    }

    /// Each level's `mu`.
    fn extra_reads(&self) -> Vec<StateRef> {
        self.obow.levels.iter().map(|l| l.mu.clone()).collect()
    }

    /// `mu` per level and the teacher's momentum alpha (the scalars' slot 3).
    fn extra_terms(&self, extras: &[Vec<f32>], scalars: &[f32]) -> Vec<(String, f32)> {
        let mut t: Vec<(String, f32)> = extras.iter().enumerate().map(|(i, v)| (format!("mu{i}"), v[0])).collect();
        t.push(("alpha".into(), scalars[3]));
        t
    }

    fn describe_json(&self) -> serde_json::Value {
        serde_json::json!({ "levels": self.obow.levels.iter().map(|l| l.stage + 1).collect::<Vec<_>>(), "words": self.cfg.words })
    }

    fn query_names(&self) -> &'static [&'static str] {
        &["probe", "words"]
    }

    fn query<'a>(
        &'a self,
        run: &'a Run,
        splits: &'a Splits,
        what: &str,
        args: &'a serde_json::Value,
    ) -> Option<LocalFuture<'a, Result<serde_json::Value>>> {
        match what {
            "probe" => Some(Box::pin(Self::probe_query(run, splits, args))),
            "words" => Some(Box::pin(Self::words_query(run, splits, args))),
            _ => None,
        }
    }
}
