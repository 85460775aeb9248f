//! Training and distillation runs: configuration, the compiled session, metrics and reports.

pub mod config;
pub mod objective;
pub mod obow;
pub mod probe;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
pub mod session;

pub use config::{AugmentConfig, DistillConfig, ObowConfig, TrainConfig};
