//! `webdistill bench`: kernel throughput and dispatch cost, printed with the adapter name.
//! Speed lives here (and in `cargo bench`), never in tests.

use crate::error::Result;
use crate::gpu::{Context, KernelProfile, MatmulVariant};
use crate::graph::{Graph, Plan};
use crate::ops::AttnImpl;
use crate::store::Store;
use std::time::Instant;

/// Seconds per run of `plan`, median of `reps` timed batches of `iters` steps each (one
/// submit per batch), after one warm-up batch (lavapipe compiles shaders lazily).
pub fn time_plan(ctx: &Context, plan: &Plan, iters: usize, reps: usize) -> Result<f64> {
    plan.run(1)?;
    ctx.wait()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        plan.run(iters)?;
        ctx.wait()?;
        times.push(t.elapsed().as_secs_f64() / iters as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[times.len() / 2])
}

/// GFLOP/s of an n x n x n f32 matmul with the given kernel variant.
pub fn matmul_gflops(ctx: &Context, variant: MatmulVariant, n: usize) -> Result<f64> {
    let c = ctx.with_profile(KernelProfile { matmul: variant, ..ctx.profile.clone() });
    let mut g = Graph::new();
    let a = g.input("a", &[n, n])?;
    let b = g.input("b", &[n, n])?;
    let y = g.matmul(a, b)?;
    g.keep(y);
    let mut store = Store::new(0);
    let plan = Plan::compile(&c, &g, &mut store, "bench matmul")?;
    let vals: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    plan.write(a, &vals)?;
    plan.write(b, &vals)?;
    let flops = 2.0 * (n as f64).powi(3);
    // Aim for ~0.3 s per timed batch on the slowest adapters without taking forever on fast ones.
    let probe = time_plan(&c, &plan, 1, 1)?;
    let iters = ((0.3 / probe) as usize).clamp(1, 200);
    let t = time_plan(&c, &plan, iters, 3)?;
    Ok(flops / t / 1e9)
}

/// Microseconds per dispatch of a plan of `n` tiny dependent dispatches: all in one submit,
/// one submit per dispatch, and one submit-and-wait per dispatch.
pub fn dispatch_cost(ctx: &Context, n: usize) -> Result<(f64, f64, f64)> {
    let mut g = Graph::new();
    let mut x = g.input("x", &[64])?;
    for _ in 0..n {
        x = g.add_scalar(x, 1.0)?;
    }
    g.keep(x);
    let mut store = Store::new(0);
    let plan = Plan::compile(ctx, &g, &mut store, "bench dispatch")?;
    let one = time_plan(ctx, &plan, 5, 5)?;
    let mut per = Vec::new();
    let mut per_wait = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        plan.step_unbatched()?;
        ctx.wait()?;
        per.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        plan.step_unbatched_waiting()?;
        per_wait.push(t.elapsed().as_secs_f64());
    }
    per.sort_by(|a, b| a.partial_cmp(b).unwrap());
    per_wait.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let d = plan.stats().dispatches as f64;
    Ok((one / d * 1e6, per[1] / d * 1e6, per_wait[1] / d * 1e6))
}

/// Milliseconds per (forward, forward + backward) of multi-head self-attention over
/// `batch` x `tokens` x `dim` with `heads` heads, for one implementation.
pub fn attention_ms(ctx: &Context, imp: AttnImpl, batch: usize, tokens: usize, dim: usize, heads: usize) -> Result<(f64, f64)> {
    let mut out = [0.0; 2];
    for (k, backward) in [false, true].into_iter().enumerate() {
        let mut g = Graph::new();
        let qkv = g.input("qkv", &[batch, tokens, 3 * dim])?;
        let y = g.attention_with(qkv, heads, None, imp)?;
        if backward {
            // d/dqkv of sum(y * r): the full backward pass, as in training.
            let r = g.input("r", &[batch, tokens, dim])?;
            let yr = g.mul(y, r)?;
            let loss = g.sum_all(yr)?;
            let dq = g.gradients(loss, &[qkv])?[0].expect("attention gradient");
            g.keep(dq);
        } else {
            g.keep(y);
        }
        let mut store = Store::new(0);
        let plan = Plan::compile(ctx, &g, &mut store, "bench attention")?;
        let vals: Vec<f32> = (0..batch * tokens * 3 * dim).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        plan.write(qkv, &vals)?;
        out[k] = time_plan(ctx, &plan, 3, 3)? * 1e3;
    }
    Ok((out[0], out[1]))
}

pub fn run(ctx: &Context, what: &str, sizes: &[usize]) -> Result<()> {
    println!("adapter: {}", ctx.adapter);
    if what == "matmul" || what == "all" {
        println!("f32 matmul, n x n x n, GFLOP/s (median of 3):");
        println!("{:>6} {:>10} {:>16} {:>10}", "n", "register", "register-scalar", "tiled");
        for &n in sizes {
            let r = matmul_gflops(ctx, MatmulVariant::Register, n)?;
            let s = matmul_gflops(ctx, MatmulVariant::RegisterScalar, n)?;
            let t = matmul_gflops(ctx, MatmulVariant::Tiled, n)?;
            println!("{n:>6} {r:>10.2} {s:>16.2} {t:>10.2}");
        }
        println!("selected for this adapter: {}", ctx.profile.matmul.name());
    }
    if what == "dispatch" || what == "all" {
        let (one, per, wait) = dispatch_cost(ctx, 300)?;
        println!(
            "dispatch cost, 300-dispatch plan: {one:.1} us/dispatch in one submit; {per:.1} us with a submit per dispatch; {wait:.1} us with a submit and wait per dispatch"
        );
    }
    if what == "attention" || what == "all" {
        let (b, n, d, h) = (64, 65, 128, 4);
        println!("self-attention, batch {b} x {n} tokens x {d} dims x {h} heads, ms per step (median of 3):");
        println!("{:>14} {:>10} {:>18}", "path", "forward", "forward+backward");
        for imp in [AttnImpl::Fused, AttnImpl::Materialized] {
            let (f, fb) = attention_ms(ctx, imp, b, n, d, h)?;
            println!("{:>14} {f:>10.1} {fb:>18.1}", imp.name());
        }
    }
    Ok(())
}
