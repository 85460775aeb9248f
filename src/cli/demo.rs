//! The main job (`webdistill` with no arguments): distil the shipped `resnet20` teacher into a
//! `vit_micro_p4` student with OFA on the bundled Fashion-MNIST subset, next to the same
//! student trained without distillation on the same budget, and print a table.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{self, FileTensor};
use crate::error::Result;
use crate::gpu::Context;
use crate::train::{AugmentConfig, DistillConfig, TrainConfig};

use super::train::{RunOptions, RunSummary, run_with_teacher};

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
    pub epochs: usize,
    pub batch: usize,
    pub train_limit: usize,
    pub test_limit: usize,
    pub label: &'static str,
}

impl Budget {
    /// The budget for an adapter: CPU adapters (lavapipe, SwiftShader, WARP) run tens of
    /// images per second, real GPUs thousands.
    pub fn for_adapter(software: bool) -> Budget {
        if software {
            Budget { epochs: 2, batch: 32, train_limit: 320, test_limit: 300, label: "software adapter: 320 images x 2 epochs" }
        } else {
            Budget { epochs: 10, batch: 64, train_limit: 0, test_limit: 0, label: "GPU: all 5000 images x 10 epochs" }
        }
    }
}

/// The config of one arm of the comparison (`method` = "none" or "ofa").
pub fn config(method: &str, budget: &Budget, seed: u64) -> TrainConfig {
    TrainConfig {
        model: "vit_micro_p4".into(),
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

/// Run both arms; `out` keeps each arm's checkpoints and metrics when given.
pub fn run(ctx: &Context, budget: &Budget, out: Option<&Path>, quiet: bool) -> Result<Vec<Row>> {
    let teacher = shipped_teacher()?;
    let mut rows = Vec::new();
    for method in ["none", "ofa"] {
        let cfg = config(method, budget, 0);
        let dir = out.map(|o| o.join(method));
        let opts = RunOptions { quiet, plot: dir.is_some(), ..RunOptions::default() };
        let summary = run_with_teacher(ctx, cfg, Some(&teacher), dir.as_deref(), &opts)?;
        rows.push(Row { method: method.into(), summary });
    }
    Ok(rows)
}

/// `webdistill` with no arguments.
pub fn main_job(ctx: &Context) -> Result<()> {
    let budget = Budget::for_adapter(ctx.adapter.software);
    println!(
        "webdistill main job: OFA-KD of the shipped {SHIPPED_TEACHER_MODEL} teacher into vit_micro_p4 on the bundled Fashion-MNIST subset"
    );
    println!("adapter: {}", ctx.adapter);
    println!("budget: {} (batch {}); the student is also trained without distillation on the same budget", budget.label, budget.batch);
    let out = Path::new("runs/main-job");
    let rows = run(ctx, &budget, Some(out), false)?;
    println!();
    println!("| method | student | test top-1 | test top-5 | train img/s | adapter |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | vit_micro_p4 | {:.2}% | {:.2}% | {:.1} | {} |",
            r.method, r.summary.last.top1, r.summary.last.top5, r.summary.images_per_s, ctx.adapter.name
        );
    }
    println!();
    println!("checkpoints, metrics and charts: {}/{{none,ofa}}/", out.display());
    println!("more: `webdistill --help`, docs/RESULTS.md");
    Ok(())
}
