//! The distillation session the web page's Distil tab drives: a [`crate::train::session::Session`]
//! on the bundled Fashion-MNIST subset, with the shipped teacher handed over as an asset. Its
//! queries give the CKA matrix, predictions for an image, and test images to show.

use super::{Assets, LocalFuture, Metrics, Session, now_ms};
use crate::checkpoint;
use crate::data::Splits;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::train::session::Session as Run;
use crate::train::{AugmentConfig, DistillConfig, TrainConfig};
use serde::{Deserialize, Serialize};

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

pub struct DistillSession {
    pub settings: DistillSettings,
    pub run: Run,
    splits: Splits,
}

impl DistillSession {
    /// `assets["teacher"]`: the teacher's safetensors (needed to distil; optional for `none`,
    /// where it still serves CKA and predictions); the data set's files: see [`super::bundled_data`].
    pub fn new(ctx: &Context, settings: DistillSettings, assets: &Assets) -> Result<Self> {
        let splits = super::bundled_data(assets)?;
        let teacher = match assets.get("teacher") {
            Some(bytes) => Some(checkpoint::parse(bytes, "teacher asset")?),
            None if settings.method != "none" => {
                return Err(Error::usage(format!("method '{}' needs the teacher's weights as the 'teacher' asset", settings.method)));
            }
            None => None,
        };
        let mut cfg = settings.config();
        if teacher.is_none() {
            cfg.distill = None;
        }
        let run = Run::new(ctx, cfg, &splits, teacher.as_ref())?;
        Ok(DistillSession { settings, run, splits })
    }

    async fn step_async(&mut self, n: usize) -> Result<Metrics> {
        let t0 = now_ms();
        self.run.train_steps(n)?;
        let vals = self.run.request_train_metrics()?.take(&self.run.ctx).await?;
        let m = self.run.parse_train_metrics(&vals);
        let secs = (now_ms() - t0) / 1e3;
        Ok(Metrics {
            step: self.run.step as u64,
            loss: m.loss,
            images_per_sec: (n * self.settings.batch) as f64 / secs.max(1e-9),
            steps_per_sec: n as f64 / secs.max(1e-9),
            seconds: secs,
            accuracy: None,
            examples: (n * self.settings.batch) as u64,
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
        let classes = &self.splits.test.class_names;
        match what.as_str() {
            "classes" => Ok(serde_json::json!(classes)),
            "cka" => {
                let images = args.get("images").and_then(|v| v.as_u64()).unwrap_or(128) as usize;
                let r = self.run.cka_async(images).await?;
                Ok(serde_json::json!({ "rows": r.teacher_stages, "cols": r.student_stages, "values": r.values, "images": r.images }))
            }
            "sample" => {
                let i = args.get("index").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
                let (px, label) = self.run.test_image(&self.splits, i)?;
                Ok(serde_json::json!({ "pixels": px, "label": label, "class": classes[label as usize], "size": self.splits.test.h }))
            }
            "predict" => {
                let pixels: Vec<f32> = match (args.get("pixels"), args.get("index")) {
                    (Some(p), _) => serde_json::from_value(p.clone()).map_err(|e| Error::usage(format!("predict: pixels: {e}")))?,
                    (None, Some(i)) => self.run.test_image(&self.splits, i.as_u64().unwrap_or(0) as usize)?.0,
                    (None, None) => return Err(Error::usage("predict needs 'pixels' or 'index'")),
                };
                let p = self.run.predict_async(&pixels).await?;
                Ok(serde_json::json!({ "student": p.student, "teacher": p.teacher, "classes": classes }))
            }
            _ => Err(Error::usage(format!("the 'distill' session has no query named '{what}' (known: classes, cka, sample, predict)"))),
        }
    }
}

impl Session for DistillSession {
    fn kind(&self) -> &'static str {
        "distill"
    }

    fn describe(&self) -> serde_json::Value {
        let r = &self.run;
        serde_json::json!({
            "settings": self.settings,
            "student": r.student.name(),
            "teacher": r.teacher.as_ref().map(|t| t.name().to_string()),
            "params": r.store.params().iter().filter(|p| p.name().starts_with(crate::train::session::STUDENT)).map(|p| p.numel()).sum::<usize>(),
            "dispatches_per_step": r.train_stats().dispatches,
            "arena_bytes": r.train_stats().arena_bytes,
            "train_images": r.data.train_images,
            "test_images": r.data.test_images,
            "steps_per_epoch": r.steps_per_epoch,
            "terms": r.objective.term_names(),
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
