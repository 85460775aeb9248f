//! What differs between kinds of run. A [`Run`](super::Run) is the common frame (data on the
//! GPU, the store, the student, the optimizer, metrics, evaluation, checkpoints, predictions,
//! CKA); a [`Recipe`] fills in what is particular to one kind: which nets besides the student
//! it builds, the forward pass and losses of a training step, the logits evaluation scores, the
//! names of its loss terms, and the queries a page may ask of it.
//!
//! - [`Supervised`]: training with labels, and distillation from a teacher (`none`, `kd`,
//!   `dkd`, `dist`, `fitnet`, `ofa`: the objective is [`crate::distill::objective`]).
//! - [`ObowRecipe`]: OBoW self-supervised pre-training with an EMA teacher
//!   ([`crate::distill::obow`]).
//!
//! Adding a kind of run is one file here with an `impl Recipe` and a line in [`for_config`].

mod obow;
mod supervised;

pub use obow::ObowRecipe;
pub use supervised::Supervised;

use super::config::TrainConfig;
use super::metrics::DataInfo;
use super::run::{LocalFuture, Run};
use crate::checkpoint::FileTensor;
use crate::data::{BatchSpec, Dataset, GpuData, Splits};
use crate::error::Result;
use crate::gpu::Context;
use crate::graph::{Graph, Var};
use crate::models::Backbone;
use crate::optim::{OptimState, Optimizer};
use crate::store::{StateRef, Store};
use std::collections::BTreeMap;

/// The networks of a run: the student, and a teacher where the recipe has one.
#[derive(Clone, Copy)]
pub struct Nets<'a> {
    pub student: &'a dyn Backbone,
    pub teacher: Option<&'a dyn Backbone>,
}

/// What a recipe's training step is built from (all set up by [`Run::new`]).
pub struct StepInputs<'a> {
    pub ctx: &'a Context,
    pub cfg: &'a TrainConfig,
    pub data: &'a DataInfo,
    /// The training images on the GPU, at their stored side `train.h`.
    pub train: &'a GpuData,
    pub mean: &'a [f32],
    pub std: &'a [f32],
    /// The optimizer's step counter (a graph input).
    pub step: Var,
    pub nets: Nets<'a>,
    pub opt_state: &'a OptimState,
    /// The optimizer the run applies after the backward pass.
    pub optimizer: &'a Optimizer,
    /// Steps of the whole run (the schedules span them).
    pub total_steps: usize,
}

/// The losses of a training step. The run sums `[report, 1, terms...]` into the training
/// metrics, differentiates `backprop` and applies the optimizer.
pub struct StepLosses {
    /// What gradients flow from.
    pub backprop: Var,
    /// The loss the metrics report (usually `backprop`).
    pub report: Var,
    /// One [1] value per [`Recipe::term_names`], in that order.
    pub terms: Vec<Var>,
    /// Student tensors of the batch that hosts may draw (logits, then stage features); may be
    /// empty.
    pub outputs: Vec<Var>,
}

/// One kind of run. See the module docs.
pub trait Recipe {
    /// Short name: "supervised", "distill" or "obow".
    fn kind(&self) -> &'static str;
    /// One line for logs: what the run does.
    fn describe(&self, cfg: &TrainConfig) -> String;
    /// Names of the loss terms the training metrics carry.
    fn term_names(&self) -> &[String];
    /// Work after the store's first upload and before any plan runs: load a teacher's
    /// weights, copy the student into an EMA teacher.
    fn prepare(&mut self, store: &mut Store, nets: Nets<'_>, teacher_weights: Option<&BTreeMap<String, FileTensor>>) -> Result<()>;
    /// The forward pass and losses of one training step.
    fn train_step(&self, g: &mut Graph, store: &mut Store, x: &StepInputs<'_>) -> Result<StepLosses>;
    /// The test batches' view (default: as given: the test images padded to the model's side).
    fn eval_spec(&self, spec: BatchSpec) -> BatchSpec {
        spec
    }
    /// The logits evaluation scores against the labels; None: the recipe has no evaluation.
    fn eval_logits(&self, g: &mut Graph, nets: Nets<'_>, images: Var) -> Result<Option<Var>>;
    /// Tensors read with the training metrics beyond the metrics and the optimizer's scalars.
    fn extra_reads(&self) -> Vec<StateRef> {
        Vec::new()
    }
    /// Named values from [`Self::extra_reads`]' values and the optimizer's scalars.
    fn extra_terms(&self, extras: &[Vec<f32>], scalars: &[f32]) -> Vec<(String, f32)> {
        let _ = (extras, scalars);
        Vec::new()
    }
    /// Fields [`Run::describe`] adds for this recipe.
    fn describe_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// Names of the queries [`Self::query`] answers.
    fn query_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// A query particular to this recipe, or None when it knows no such name.
    fn query<'a>(
        &'a self,
        run: &'a Run,
        splits: &'a Splits,
        what: &str,
        args: &'a serde_json::Value,
    ) -> Option<LocalFuture<'a, Result<serde_json::Value>>> {
        let _ = (run, splits, what, args);
        None
    }
}

/// The recipe a config asks for, built over `store` (the student is already in it): OBoW when
/// `cfg.obow` is set, otherwise supervised training or distillation. `source` is the training
/// split as the run uses it. Returns the teacher network too, when the recipe has one.
pub fn for_config(
    cfg: &TrainConfig,
    store: &mut Store,
    student: &dyn Backbone,
    data: &DataInfo,
    source: &Dataset,
    teacher_weights: Option<&BTreeMap<String, FileTensor>>,
) -> Result<(Box<dyn Recipe>, Option<Box<dyn Backbone>>)> {
    if cfg.obow.is_some() {
        let (r, t) = ObowRecipe::new(cfg, store, student, data, source)?;
        Ok((Box::new(r), Some(t)))
    } else {
        let (r, t) = Supervised::new(cfg, store, student, data, source, teacher_weights.is_some())?;
        Ok((Box::new(r), t))
    }
}
