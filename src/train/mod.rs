//! Training and distillation runs: configuration, the compiled session, metrics and reports.

pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;

pub use config::{AugmentConfig, DistillConfig, TrainConfig};
