//! `webdistill` with no arguments: the main job ([`crate::train::main_job`]) and its table.

use super::train::Bar;
use crate::error::Result;
use crate::gpu::Context;
use crate::train::main_job::{self, Budget, SHIPPED_TEACHER_MODEL};
use std::path::Path;
use std::time::Instant;

pub fn main_job(ctx: &Context, seed: u64, out: &Path, budget: Option<&str>) -> Result<()> {
    let budget = match budget {
        Some(name) => Budget::named(name)?,
        None => Budget::for_adapter(ctx.adapter.software),
    };
    let student = budget.student;
    println!(
        "webdistill main job: OFA-KD of the shipped {SHIPPED_TEACHER_MODEL} teacher into {student} on the bundled Fashion-MNIST subset"
    );
    println!("adapter: {}", ctx.adapter);
    println!(
        "budget: {} (batch {}, seed {seed}); the student is also trained without distillation on the same budget",
        budget.describe(),
        budget.batch
    );
    let t0 = Instant::now();
    let rows = main_job::run(ctx, &budget, seed, Some(out), &mut Bar::new(false))?;
    println!();
    println!("| method | student | test top-1 | test top-5 | test images | train img/s | adapter |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let l = &r.summary.last;
        println!(
            "| {} | {student} | {:.2}% | {:.2}% | {} | {:.1} | {} |",
            r.method, l.top1, l.top5, l.images, r.summary.images_per_s, ctx.adapter.name
        );
    }
    println!();
    println!("both arms took {:.0} s", t0.elapsed().as_secs_f32());
    println!();
    println!("checkpoints, metrics and charts: {}/{{{}}}/", out.display(), main_job::METHODS.join(","));
    println!("more: `webdistill --help`, docs/RESULTS.md");
    Ok(())
}
