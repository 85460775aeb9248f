//! The OBoW session a web page drives: self-supervised OBoW pre-training
//! ([`crate::train::obow::ObowSession`]) on the bundled Fashion-MNIST subset. `step` reports the
//! BoW loss; `evaluate` the monitoring classifier on the teacher's features; queries give a
//! linear probe of the pre-trained backbone against a random-init one (`probe`) and a picture
//! of the visual words (`words`). Everything awaits the GPU; nothing blocks.

use super::{Assets, LocalFuture, Metrics, Session, now_ms};
use crate::checkpoint;
use crate::data::Splits;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::train::obow::ObowSession;
use crate::train::probe::{self, FeatureOptions, Features, ProbeConfig};
use crate::train::{ObowConfig, TrainConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings of an `obow` session (JSON from the page; unknown fields are an error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObowSettings {
    pub model: String,
    pub batch: usize,
    pub lr: f32,
    /// Words per vocabulary (K), a multiple of `batch`.
    pub words: usize,
    /// The learning-rate and teacher-momentum schedules span this many epochs of `train_limit`.
    pub epochs: usize,
    pub train_limit: usize,
    pub test_limit: usize,
    pub seed: u64,
}

impl Default for ObowSettings {
    fn default() -> Self {
        ObowSettings { model: "resnet20".into(), batch: 32, lr: 0.05, words: 1024, epochs: 5, train_limit: 2000, test_limit: 500, seed: 0 }
    }
}

impl ObowSettings {
    pub fn config(&self) -> Result<TrainConfig> {
        let base = TrainConfig::recipe("obow")?;
        Ok(TrainConfig {
            model: self.model.clone(),
            data: "bundled".into(),
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            eval_batch: 100,
            seed: self.seed,
            obow: Some(ObowConfig { words: self.words, ..ObowConfig::default() }),
            ..base
        })
    }
}

pub struct ObowWebSession {
    pub settings: ObowSettings,
    pub run: ObowSession,
    splits: Splits,
}

impl ObowWebSession {
    /// The data set's files come as assets (see [`super::bundled_data`]; natively they may be
    /// left out).
    pub fn new(ctx: &Context, settings: ObowSettings, assets: &Assets) -> Result<Self> {
        let splits = super::bundled_data(assets)?;
        let run = ObowSession::new(ctx, settings.config()?, &splits)?;
        Ok(ObowWebSession { settings, run, splits })
    }

    async fn step_async(&mut self, n: usize) -> Result<Metrics> {
        let t0 = now_ms();
        self.run.train_steps(n)?;
        let vals = self.run.request_train_metrics()?.take(&self.run.ctx).await?;
        let m = self.run.parse_train_metrics(&vals);
        let bow = m.terms.iter().find(|(k, _)| k == "bow").map(|t| t.1).unwrap_or(m.loss);
        let secs = (now_ms() - t0) / 1e3;
        Ok(Metrics {
            step: self.run.step as u64,
            loss: bow,
            images_per_sec: (n * self.settings.batch) as f64 / secs.max(1e-9),
            steps_per_sec: n as f64 / secs.max(1e-9),
            seconds: secs,
            accuracy: None,
            examples: (n * self.settings.batch) as u64,
            terms: m.terms.iter().cloned().collect(),
        })
    }

    async fn evaluate_async(&mut self) -> Result<Metrics> {
        let t0 = now_ms();
        let r = self.run.evaluate_async().await?;
        let secs = (now_ms() - t0) / 1e3;
        Ok(Metrics {
            step: self.run.step as u64,
            loss: r.loss,
            images_per_sec: r.images as f64 / secs.max(1e-9),
            steps_per_sec: 0.0,
            seconds: secs,
            accuracy: Some(r.top1 / 100.0),
            terms: Default::default(),
            examples: r.images as u64,
        })
    }

    /// Linear-probe top-1 (percent) of `model` with `weights` (None: random init).
    async fn probe_one(
        &self,
        weights: Option<&BTreeMap<String, checkpoint::FileTensor>>,
        opts: &FeatureOptions,
        cfg: &ProbeConfig,
    ) -> Result<f32> {
        let w = weights.map(|w| (w, "the OBoW student"));
        let mut f = Features::extract(&self.run.ctx, &self.settings.model, w, &self.splits, opts).await?;
        Ok(f.linear_probe(cfg).await?.top1)
    }

    async fn query_async(&mut self, what: String, args: serde_json::Value) -> Result<serde_json::Value> {
        let num = |k: &str, d: u64| args.get(k).and_then(|v| v.as_u64()).unwrap_or(d) as usize;
        match what.as_str() {
            "probe" => {
                // A small budget: features of a few hundred images, a few epochs of SGD.
                let opts = FeatureOptions {
                    img_size: self.run.cfg.img_size,
                    batch: 100,
                    train_limit: num("train_images", 1000),
                    test_limit: num("test_images", 500),
                    seed: self.settings.seed,
                };
                let cfg = ProbeConfig { epochs: num("epochs", 10), batch: 100, lr: 0.1, weight_decay: 0.0, seed: self.settings.seed };
                let t0 = now_ms();
                let student = checkpoint::parse(&self.run.student_bytes(&BTreeMap::new()).await?, "the OBoW student")?;
                let obow = self.probe_one(Some(&student), &opts, &cfg).await?;
                let random = self.probe_one(None, &opts, &cfg).await?;
                Ok(serde_json::json!({
                    "obow": obow / 100.0, "random": random / 100.0, "step": self.run.step,
                    "train_images": opts.train_limit, "test_images": opts.test_limit, "epochs": cfg.epochs,
                    "seconds": (now_ms() - t0) / 1e3,
                }))
            }
            "words" => {
                let state = checkpoint::parse(&self.run.state_bytes().await?, "the OBoW state")?;
                let test = self.splits.test.head(num("test_images", 300));
                let (mean, std) = self.splits.train.mean_std();
                let level = args.get("level").and_then(|v| v.as_u64()).map(|v| v as usize);
                let seed = args.get("seed").and_then(|v| v.as_u64()).unwrap_or(0);
                let g = probe::word_grid(
                    &self.run.ctx,
                    &self.run.cfg,
                    &state,
                    "the OBoW state",
                    &test,
                    &mean,
                    &std,
                    level,
                    num("words", 8),
                    num("per_word", 6),
                    seed,
                )
                .await?;
                let scale = num("scale", (48 / g.side.max(1)).max(1) as u64);
                let (w, h, px) = probe::tile_grid_rgba(&g.rows, scale)?;
                Ok(
                    serde_json::json!({ "width": w, "height": h, "pixels": px, "level": g.level + 1, "stage": g.stage + 1, "patch": g.side }),
                )
            }
            _ => Err(Error::usage(format!("the 'obow' session has no query named '{what}' (known: probe, words)"))),
        }
    }
}

impl Session for ObowWebSession {
    fn kind(&self) -> &'static str {
        "obow"
    }

    fn describe(&self) -> serde_json::Value {
        let r = &self.run;
        serde_json::json!({
            "settings": self.settings,
            "model": r.student.name(),
            "params": r.store.params().iter().filter(|p| p.name().starts_with(crate::train::session::STUDENT)).map(|p| p.numel()).sum::<usize>(),
            "dispatches_per_step": r.train_stats().dispatches,
            "arena_bytes": r.train_stats().arena_bytes,
            "train_images": r.data.train_images,
            "test_images": r.data.test_images,
            "steps_per_epoch": r.steps_per_epoch,
            "levels": r.obow.levels.iter().map(|l| l.stage + 1).collect::<Vec<_>>(),
            "terms": r.term_names(),
        })
    }

    fn step(&mut self, n: usize) -> LocalFuture<'_, Result<Metrics>> {
        Box::pin(self.step_async(n))
    }

    fn evaluate(&mut self) -> LocalFuture<'_, Result<Metrics>> {
        Box::pin(self.evaluate_async())
    }

    fn query(&mut self, what: &str, args: &serde_json::Value) -> LocalFuture<'_, Result<serde_json::Value>> {
        Box::pin(self.query_async(what.to_string(), args.clone()))
    }
}
