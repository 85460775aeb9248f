//! Training sessions: a model, its data and its compiled plans behind one small interface that
//! hosts drive step by step (the web page through `src/web`, the CLI's `selftest --bench`).
//!
//! A session is built once; `step(n)` runs `n` training steps and awaits their metrics,
//! `evaluate()` measures it on held-out data. Both are futures that never block, so on the web
//! the page awaits them and the browser keeps running between steps. Session kinds are made by
//! name with [`create`]: `mlp` (a toy fed from the CPU, [`mlp`]), and `distill`, `obow` and `run`,
//! which are all a [`crate::train::Run`] behind [`run::RunSession`].

pub mod mlp;
pub mod run;

use crate::data;
use crate::error::{Error, Result};
use crate::gpu::Context;
use serde::Serialize;

pub use crate::train::LocalFuture;
pub use crate::train::metrics::now_ms;

/// What a call to [`Session::step`] or [`Session::evaluate`] reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Training steps taken so far.
    pub step: u64,
    /// Training loss of the last step (`step`), or the evaluation loss (`evaluate`).
    pub loss: f32,
    /// Examples per second over this call (GPU work and readback included).
    pub images_per_sec: f64,
    /// Steps per second over this call.
    pub steps_per_sec: f64,
    /// Wall-clock seconds of this call.
    pub seconds: f64,
    /// Top-1 accuracy in [0, 1] on the evaluation set (`evaluate` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f32>,
    /// Examples the numbers above were computed on.
    pub examples: u64,
    /// Named parts of the training loss (for distillation: `gt`, the cross-entropy with the
    /// labels, and the distillation terms), averaged over this call's steps; empty for
    /// sessions whose loss has one part.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub terms: std::collections::BTreeMap<String, f32>,
}

/// A training run a host drives step by step.
pub trait Session {
    /// The name [`create`] knows it by.
    fn kind(&self) -> &'static str;
    /// Its configuration and sizes (parameters, dispatches per step, data), for display.
    fn describe(&self) -> serde_json::Value;
    /// Run `n` training steps, then await the loss of the last one.
    fn step(&mut self, n: usize) -> LocalFuture<'_, Result<Metrics>>;
    /// Loss and accuracy on the held-out set.
    fn evaluate(&mut self) -> LocalFuture<'_, Result<Metrics>>;
    /// Anything else a page shows, by name, with JSON arguments and a JSON answer (for
    /// example a CKA matrix, or the prediction for a drawn image). Sessions answer the names
    /// they know; the default knows none.
    fn query(&mut self, what: &str, args: &serde_json::Value) -> LocalFuture<'_, Result<serde_json::Value>> {
        let _ = args;
        let msg = format!("the '{}' session has no query named '{what}'", self.kind());
        Box::pin(async move { Err(Error::usage(msg)) })
    }
    /// The trained model as a `.safetensors` file to take away (PyTorch names, with its card
    /// in the metadata), where the session has one.
    fn model_file(&mut self) -> LocalFuture<'_, Result<Vec<u8>>> {
        let msg = format!("the '{}' session has no model file to save", self.kind());
        Box::pin(async move { Err(Error::usage(msg)) })
    }
}

/// Named binary inputs a host hands to a session (a dataset file, a teacher's safetensors):
/// the page fetches them, the CLI reads them from disk. Sessions that need none ignore them.
pub type Assets = std::collections::BTreeMap<String, Vec<u8>>;

/// The bundled Fashion-MNIST subset for a session: from the assets named as its files
/// ([`data::BUNDLED_FILES`], what the page fetches), or natively, when they are not given, the
/// copy compiled into the binary ([`data::bundled`]).
pub fn bundled_data(assets: &Assets) -> Result<data::Splits> {
    let files = data::BUNDLED_FILES.map(|f| assets.get(f));
    if let [Some(a), Some(b), Some(c), Some(d)] = files {
        return data::bundled_from([a, b, c, d]);
    }
    #[cfg(not(target_arch = "wasm32"))]
    if files.iter().all(|f| f.is_none()) {
        return data::bundled();
    }
    let missing: Vec<&str> = data::BUNDLED_FILES.iter().zip(&files).filter(|(_, f)| f.is_none()).map(|(n, _)| *n).collect();
    Err(Error::usage(format!(
        "the bundled Fashion-MNIST subset is missing: pass data/fashion-mnist-subset/{{{}}} as the assets named so",
        missing.join(",")
    )))
}

/// Session kinds [`create`] knows.
pub const KINDS: &[&str] = &["mlp", "distill", "obow", "run"];

/// Build a session of the named kind. `config` is a JSON object of the kind's settings (missing
/// fields take their defaults; unknown fields are an error, so typos do not pass silently).
pub fn create(ctx: &Context, kind: &str, config: &serde_json::Value, assets: &Assets) -> Result<Box<dyn Session>> {
    match kind {
        "mlp" => Ok(Box::new(mlp::MlpSession::new(ctx, parse_config(kind, config)?)?)),
        "distill" => Ok(Box::new(run::RunSession::new(ctx, "distill", config, assets)?)),
        "obow" => Ok(Box::new(run::RunSession::new(ctx, "obow", config, assets)?)),
        "run" => Ok(Box::new(run::RunSession::new(ctx, "run", config, assets)?)),
        _ => Err(Error::usage(format!("unknown session kind '{kind}' (known: {})", KINDS.join(", ")))),
    }
}

pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(kind: &str, config: &serde_json::Value) -> Result<T> {
    let config = if config.is_null() { serde_json::json!({}) } else { config.clone() };
    serde_json::from_value(config).map_err(|e| Error::usage(format!("settings of the '{kind}' session: {e}")))
}

/// A small deterministic generator (PCG-XSH-RR 64/32) for data that must be identical on
/// every platform and cheap to make in the browser.
#[derive(Clone, Debug)]
pub struct Pcg(u64);

impl Pcg {
    pub fn new(seed: u64) -> Self {
        let mut p = Pcg(seed.wrapping_add(0x853C_49E6_748F_EA9B));
        p.next_u32();
        p
    }
    pub fn next_u32(&mut self) -> u32 {
        let old = self.0;
        self.0 = old.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.next_u32() as f64 / 4_294_967_296.0
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u32() as u64 * n as u64) >> 32) as usize
    }
    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}
