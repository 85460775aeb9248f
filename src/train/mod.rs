//! Runs: configuration, the one compiled run type ([`Run`]) with its recipes (supervised and
//! distillation, OBoW), the epoch loop with checkpoints and resume, metrics and reports, the
//! frozen-backbone evaluations (linear probe, few-shot, OBoW's visual words), and the main job.
//!
//! Who drives a [`Run`]: the CLI through [`runner::run`], the web page through
//! [`crate::session`], host applications through [`crate::embed::HostTrainer`].

pub mod card;
pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod inference;
#[cfg(not(target_arch = "wasm32"))]
pub mod main_job;
pub mod metrics;
pub mod probe;
pub mod recipe;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod runner;
pub mod words;

pub use card::ModelCard;
pub use config::{AugmentConfig, DistillConfig, ObowConfig, TrainConfig};
pub use metrics::{CkaResult, DataInfo, EvalResult, Prediction, TrainMetrics};
pub use recipe::Recipe;
pub use run::{LocalFuture, Run, STUDENT, TEACHER};
