//! The main job (`webdistill` with no arguments): distil the shipped `resnet20` teacher into a
//! small ViT student with OFA on the bundled Fashion-MNIST subset, next to the same student
//! trained without distillation on the same budget. Its presets live here; the CLI prints the
//! table.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::{AugmentConfig, DistillConfig, TrainConfig};
use super::runner::{Progress, RunOptions, RunSummary, run_with_teacher};
use crate::checkpoint::{self, FileTensor};
use crate::error::Result;
use crate::gpu::Context;

/// Where the shipped teacher lives in the repository (README, docs and web/build point here).
pub const SHIPPED_TEACHER_PATH: &str = "assets/teacher/resnet20_fmnist.safetensors";
/// The shipped teacher's architecture.
pub const SHIPPED_TEACHER_MODEL: &str = "resnet20";

/// A `resnet20` trained by `webdistill train` on full Fashion-MNIST (the command and its
/// accuracy are in assets/teacher/README.md). Embedded so the binary works from any folder.
static SHIPPED_TEACHER: &[u8] = include_bytes!("../../assets/teacher/resnet20_fmnist.safetensors");

/// The shipped teacher's tensors (PyTorch state-dict names).
pub fn shipped_teacher() -> Result<BTreeMap<String, FileTensor>> {
    checkpoint::parse(SHIPPED_TEACHER, SHIPPED_TEACHER_PATH)
}

/// How much training the main job does: small enough for a few minutes on a software adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// "software adapter" or "GPU".
    pub kind: &'static str,
    pub student: &'static str,
    pub epochs: usize,
    pub batch: usize,
    /// Training / test images used (0: all of the bundled 5000 / 1000).
    pub train_limit: usize,
    pub test_limit: usize,
}

impl Budget {
    /// The budget for an adapter: CPU adapters (lavapipe, SwiftShader, WARP) run tens of
    /// images per second, real GPUs thousands.
    pub fn for_adapter(software: bool) -> Budget {
        if software { Budget::software() } else { Budget::gpu() }
    }
    /// By name: "software" or "gpu" (`webdistill main-job --budget`).
    pub fn named(name: &str) -> Result<Budget> {
        match name {
            "software" => Ok(Budget::software()),
            "gpu" => Ok(Budget::gpu()),
            _ => Err(crate::error::Error::usage(format!("unknown budget '{name}': software or gpu"))),
        }
    }
    /// Sized so that both arms together take at most 6 minutes on a quiet 2-core machine with
    /// lavapipe (4m45s measured: docs/RESULTS.md). vit_nano_p4 trains about 7x faster than
    /// vit_micro_p4 there (82 vs 12 images/s side by side), so it sees every image twice
    /// instead of a few hundred once.
    fn software() -> Budget {
        Budget { kind: "software adapter", student: "vit_nano_p4", epochs: 2, batch: 32, train_limit: 0, test_limit: 0 }
    }
    fn gpu() -> Budget {
        Budget { kind: "GPU", student: "vit_micro_p4", epochs: 10, batch: 64, train_limit: 0, test_limit: 0 }
    }
    /// One line for the user: "software adapter: vit_nano_p4, all 5000 images x 2 epochs, ...".
    pub fn describe(&self) -> String {
        let count = |limit: usize, all: usize| if limit == 0 || limit >= all { format!("all {all}") } else { limit.to_string() };
        format!(
            "{}: {}, {} training images x {} epochs, {} test images",
            self.kind,
            self.student,
            count(self.train_limit, BUNDLED_TRAIN),
            self.epochs,
            count(self.test_limit, BUNDLED_TEST)
        )
    }
}

/// Images in the bundled Fashion-MNIST subset (data/fashion-mnist-subset).
const BUNDLED_TRAIN: usize = 5000;
const BUNDLED_TEST: usize = 1000;

/// The config of one arm of the comparison (`method` = "none" or "ofa").
pub fn config(method: &str, budget: &Budget, seed: u64) -> TrainConfig {
    TrainConfig {
        model: budget.student.into(),
        data: "bundled".into(),
        epochs: budget.epochs,
        batch: budget.batch,
        opt: "adamw".into(),
        lr: 2e-3,
        min_lr: 1e-5,
        weight_decay: 0.05,
        warmup_epochs: 0.2,
        clip_grad: Some(5.0),
        augment: AugmentConfig::default(),
        seed,
        train_limit: budget.train_limit,
        test_limit: budget.test_limit,
        distill: Some(DistillConfig {
            method: method.into(),
            teacher: SHIPPED_TEACHER_MODEL.into(),
            teacher_weights: SHIPPED_TEACHER_PATH.into(),
            ..DistillConfig::default()
        }),
        ..TrainConfig::default()
    }
}

/// One row of the printed table.
pub struct Row {
    pub method: String,
    pub summary: RunSummary,
}

/// The methods the main job compares, in the order it runs them.
pub const METHODS: [&str; 2] = ["none", "ofa"];

/// Run both arms; `out` keeps each arm's checkpoints, metrics and charts when given.
pub fn run(ctx: &Context, budget: &Budget, seed: u64, out: Option<&Path>, progress: &mut dyn Progress) -> Result<Vec<Row>> {
    let teacher = shipped_teacher()?;
    let mut rows = Vec::new();
    for (i, method) in METHODS.into_iter().enumerate() {
        progress.note(&format!("[{}/{}] {} with {method}", i + 1, METHODS.len(), budget.student));
        let cfg = config(method, budget, seed);
        let dir = out.map(|o| o.join(method));
        let opts = RunOptions { plot: dir.is_some(), ..RunOptions::default() };
        let summary = run_with_teacher(ctx, cfg, Some(&teacher), dir.as_deref(), &opts, progress)?;
        rows.push(Row { method: method.into(), summary });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_say_what_they_train() {
        assert_eq!(
            Budget::named("software").unwrap().describe(),
            "software adapter: vit_nano_p4, all 5000 training images x 2 epochs, all 1000 test images"
        );
        let b = Budget { train_limit: 320, test_limit: 300, ..Budget::gpu() };
        assert_eq!(b.describe(), "GPU: vit_micro_p4, 320 training images x 10 epochs, 300 test images");
        let cfg = config("ofa", &Budget::software(), 3);
        assert_eq!((cfg.model.as_str(), cfg.seed, cfg.distill.unwrap().method.as_str()), ("vit_nano_p4", 3, "ofa"));
    }
}
