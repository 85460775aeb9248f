//! The sessions over a [`Run`] that the web page drives, by kind:
//! - `distill` (the Distil tab): a student distilled from the shipped teacher (given as the
//!   `teacher` asset) on the bundled Fashion-MNIST subset, with [`DistillSettings`];
//! - `obow` (the OBoW tab): OBoW pre-training on the same data, with [`ObowSettings`];
//! - `run`: any [`TrainConfig`] (`{"config": {...}}`), so every recipe can be shown on a page.
//!
//! All three are one [`RunSession`]: `step` and `evaluate` await the GPU without blocking, and
//! `query` answers the run's queries ([`Run::query`]: classes, sample, predict, cka, and the
//! recipe's own, such as OBoW's probe and words).

use super::{Assets, LocalFuture, Metrics, Session, now_ms};
use crate::checkpoint::{self, FileTensor};
use crate::data::Splits;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::train::{AugmentConfig, DistillConfig, ObowConfig, Run, TrainConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Settings of a `distill` session (JSON from the page; unknown fields are an error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillSettings {
    pub student: String,
    pub teacher: String,
    /// none, kd, dkd, dist or ofa.
    pub method: String,
    /// OFA's eps (target enhancement), for every branch and the logits.
    pub eps: f32,
    pub temperature: f32,
    pub batch: usize,
    pub lr: f32,
    /// The learning-rate schedule spans this many epochs of `train_limit` images.
    pub epochs: usize,
    pub train_limit: usize,
    pub test_limit: usize,
    pub eval_batch: usize,
    pub seed: u64,
}

impl Default for DistillSettings {
    fn default() -> Self {
        DistillSettings {
            student: "vit_micro_p4".into(),
            teacher: "resnet20".into(),
            method: "ofa".into(),
            eps: 1.0,
            temperature: 1.0,
            batch: 32,
            lr: 2e-3,
            epochs: 2,
            train_limit: 2000,
            test_limit: 500,
            eval_batch: 100,
            seed: 0,
        }
    }
}

impl DistillSettings {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            model: self.student.clone(),
            data: "bundled".into(),
            img_size: 0,
            epochs: self.epochs,
            batch: self.batch,
            opt: "adamw".into(),
            lr: self.lr,
            weight_decay: 0.05,
            warmup_epochs: 0.1,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            eval_batch: self.eval_batch,
            seed: self.seed,
            augment: AugmentConfig::default(),
            distill: Some(DistillConfig {
                method: self.method.clone(),
                teacher: self.teacher.clone(),
                teacher_weights: "asset:teacher".into(),
                ofa_eps: vec![self.eps],
                temperature: self.temperature,
                ..DistillConfig::default()
            }),
            ..TrainConfig::default()
        }
    }
}

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
        let base = TrainConfig::preset("obow")?;
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

/// Settings of a `run` session: a whole run configuration (its `data` must be `bundled`: the
/// page hands the bundled files over as assets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    pub config: TrainConfig,
}

/// A [`Run`] on the bundled data, driven step by step.
pub struct RunSession {
    kind: &'static str,
    /// The settings as the page gave them (for `describe`).
    settings: serde_json::Value,
    pub run: Run,
    splits: Splits,
}

impl RunSession {
    /// `kind` names the settings: `distill` ([`DistillSettings`]), `obow` ([`ObowSettings`]) or
    /// `run` ([`RunSettings`]). Assets: the data set's files (see [`super::bundled_data`]) and,
    /// to distil, the teacher's safetensors as `teacher` (optional for method `none`, where it
    /// still serves CKA and predictions).
    pub fn new(ctx: &Context, kind: &'static str, settings: &serde_json::Value, assets: &Assets) -> Result<Self> {
        let (cfg, echo) = match kind {
            "distill" => {
                let s: DistillSettings = super::parse_config(kind, settings)?;
                (s.config(), serde_json::to_value(&s))
            }
            "obow" => {
                let s: ObowSettings = super::parse_config(kind, settings)?;
                (s.config()?, serde_json::to_value(&s))
            }
            "run" => {
                let s: RunSettings = super::parse_config(kind, settings)?;
                (s.config.clone(), serde_json::to_value(&s))
            }
            _ => return Err(Error::usage(format!("'{kind}' is not a run session kind"))),
        };
        let echo = echo.map_err(|e| Error::usage(format!("settings of the '{kind}' session: {e}")))?;
        if cfg.data != "bundled" {
            return Err(Error::usage(format!("a '{kind}' session trains on the bundled data, not '{}'", cfg.data)));
        }
        let splits = super::bundled_data(assets)?;
        Self::build(ctx, kind, echo, cfg, splits, assets)
    }

    /// A `distill` session ([`DistillSettings`]) on the user's own images (an image folder
    /// the page decoded, see [`crate::data::folder`]) instead of the bundled data; the teacher
    /// comes as the `teacher` asset, any architecture of the registry.
    pub fn with_images(ctx: &Context, settings: &serde_json::Value, assets: &Assets, splits: Splits, name: &str) -> Result<Self> {
        let s: DistillSettings = super::parse_config("distill", settings)?;
        let echo = serde_json::to_value(&s).map_err(|e| Error::usage(format!("settings of the 'distill' session: {e}")))?;
        // The images already have the models' input size; their training split is all there is.
        let cfg = TrainConfig { data: format!("folder:{name}"), img_size: 0, ..s.config() };
        Self::build(ctx, "distill", echo, cfg, splits, assets)
    }

    fn build(
        ctx: &Context,
        kind: &'static str,
        settings: serde_json::Value,
        cfg: TrainConfig,
        splits: Splits,
        assets: &Assets,
    ) -> Result<Self> {
        let (cfg, teacher) = teacher_of(cfg, assets)?;
        let run = Run::new(ctx, cfg, &splits, teacher.as_ref())?;
        Ok(RunSession { kind, settings, run, splits })
    }

    async fn model_file_async(&self) -> Result<Vec<u8>> {
        let meta = BTreeMap::from([("adapter".to_string(), self.run.cfg.adapter.clone()), ("step".to_string(), self.run.step.to_string())]);
        self.run.student_bytes(&meta).await
    }

    async fn step_async(&mut self, n: usize) -> Result<Metrics> {
        let t0 = now_ms();
        self.run.train_steps(n)?;
        let vals = self.run.request_train_metrics()?.take(&self.run.ctx).await?;
        let m = self.run.parse_train_metrics(&vals);
        // OBoW reports its BoW loss (the total adds the monitor's cross-entropy).
        let loss =
            if self.run.recipe.kind() == "obow" { m.terms.iter().find(|(k, _)| k == "bow").map(|t| t.1).unwrap_or(m.loss) } else { m.loss };
        let secs = (now_ms() - t0) / 1e3;
        let examples = n * self.run.cfg.batch;
        Ok(Metrics {
            step: self.run.step as u64,
            loss,
            images_per_sec: examples as f64 / secs.max(1e-9),
            steps_per_sec: n as f64 / secs.max(1e-9),
            seconds: secs,
            accuracy: None,
            examples: examples as u64,
            terms: m.terms.into_iter().collect(),
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
            examples: r.images as u64,
            terms: Default::default(),
        })
    }

    async fn query_async(&mut self, what: String, args: serde_json::Value) -> Result<serde_json::Value> {
        self.run.query(&what, &args, &self.splits).await
    }
}

/// The teacher's tensors from the `teacher` asset, where the config distils (or names a
/// teacher for comparison). Without the asset a method other than `none` is refused, and a
/// plain run drops its teacher.
fn teacher_of(mut cfg: TrainConfig, assets: &Assets) -> Result<(TrainConfig, Option<BTreeMap<String, FileTensor>>)> {
    let method = cfg.distill.as_ref().map(|d| d.method.clone());
    match (assets.get("teacher"), method) {
        (_, None) => Ok((cfg, None)),
        (Some(bytes), Some(_)) => Ok((cfg, Some(checkpoint::parse(bytes, "teacher asset")?))),
        (None, Some(m)) if m != "none" => Err(Error::usage(format!("method '{m}' needs the teacher's weights as the 'teacher' asset"))),
        (None, Some(_)) => {
            cfg.distill = None;
            Ok((cfg, None))
        }
    }
}

impl Session for RunSession {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn describe(&self) -> serde_json::Value {
        let mut d = self.run.describe_json();
        if let Some(o) = d.as_object_mut() {
            o.insert("settings".into(), self.settings.clone());
        }
        d
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

    fn model_file(&mut self) -> LocalFuture<'_, Result<Vec<u8>>> {
        Box::pin(self.model_file_async())
    }
}
