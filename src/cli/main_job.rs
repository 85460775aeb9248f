//! `webdistill` with no arguments: the main job ([`crate::train::main_job`]) and its table.

use super::train::Bar;
use crate::error::Result;
use crate::gpu::Context;
use crate::train::main_job::{self, Budget, SHIPPED_TEACHER_MODEL};
use std::path::Path;

pub fn main_job(ctx: &Context) -> Result<()> {
    let budget = Budget::for_adapter(ctx.adapter.software);
    println!(
        "webdistill main job: OFA-KD of the shipped {SHIPPED_TEACHER_MODEL} teacher into vit_micro_p4 on the bundled Fashion-MNIST subset"
    );
    println!("adapter: {}", ctx.adapter);
    println!("budget: {} (batch {}); the student is also trained without distillation on the same budget", budget.label, budget.batch);
    let out = Path::new("runs/main-job");
    let rows = main_job::run(ctx, &budget, Some(out), &mut Bar::new(false))?;
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
    println!("checkpoints, metrics and charts: {}/{{{}}}/", out.display(), main_job::METHODS.join(","));
    println!("more: `webdistill --help`, docs/RESULTS.md");
    Ok(())
}
