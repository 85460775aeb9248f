//! `webdistill bench`: kernel throughput and dispatch cost, printed with the adapter name.
//! Speed lives here (and in `cargo bench`), never in tests.

use crate::error::Result;
use crate::gpu::{Context, KernelProfile, MatmulVariant};
use crate::graph::{Graph, Plan};
use crate::ops::conv::{Conv2dSpec, ConvGeom};
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

/// One convolution shape for `bench conv`.
pub struct ConvBench {
    pub label: &'static str,
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub spec: Conv2dSpec,
}

/// The shapes the CNN issue asks for: a ResNet-20 layer and its stride-2 transitions.
pub fn conv_benches() -> Vec<ConvBench> {
    vec![
        ConvBench { label: "resnet20 layer1 3x3 16->16 32x32", x: [64, 16, 32, 32], w: [16, 16, 3, 3], spec: Conv2dSpec::new(1, 1, 1) },
        ConvBench { label: "resnet20 layer2.0 3x3/2 16->32", x: [64, 16, 32, 32], w: [32, 16, 3, 3], spec: Conv2dSpec::new(2, 1, 1) },
        ConvBench { label: "resnet20 layer2 3x3 32->32 16x16", x: [64, 32, 16, 16], w: [32, 32, 3, 3], spec: Conv2dSpec::new(1, 1, 1) },
        ConvBench { label: "downsample 1x1/2 16->32", x: [64, 16, 32, 32], w: [32, 16, 1, 1], spec: Conv2dSpec::new(2, 0, 1) },
        ConvBench { label: "pointwise 1x1 64->128 8x8", x: [64, 64, 8, 8], w: [128, 64, 1, 1], spec: Conv2dSpec::new(1, 0, 1) },
        ConvBench { label: "depthwise 3x3 96ch 16x16", x: [64, 96, 16, 16], w: [96, 1, 3, 3], spec: Conv2dSpec::new(1, 1, 96) },
    ]
}

/// Seconds per forward, input-gradient and weight-gradient pass of one convolution shape.
pub fn conv_times(ctx: &Context, b: &ConvBench) -> Result<[f64; 3]> {
    let geom = ConvGeom::new(&b.x, &b.w, b.spec)?;
    let mut out = [0.0; 3];
    for (i, out) in out.iter_mut().enumerate() {
        let mut g = Graph::new();
        let y = match i {
            0 => {
                let x = g.input("x", &b.x)?;
                let w = g.input("w", &b.w)?;
                g.conv2d(x, w, None, b.spec)?
            }
            1 => {
                let dy = g.input("dy", &geom.y_shape())?;
                let w = g.input("w", &b.w)?;
                g.conv2d_input_grad(dy, w, &b.x, b.spec)?
            }
            _ => {
                let x = g.input("x", &b.x)?;
                let dy = g.input("dy", &geom.y_shape())?;
                g.conv2d_weight_grad(x, dy, &b.w, b.spec)?
            }
        };
        g.keep(y);
        let mut store = Store::new(0);
        let plan = Plan::compile(ctx, &g, &mut store, "bench conv")?;
        let probe = time_plan(ctx, &plan, 1, 1)?;
        let iters = ((0.3 / probe) as usize).clamp(1, 100);
        *out = time_plan(ctx, &plan, iters, 3)?;
    }
    Ok(out)
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
    if what == "conv" || what == "all" {
        println!("f32 conv2d, batch 64, GFLOP/s (median of 3; kernels: {}):", ctx.profile.matmul.name());
        println!("{:<36} {:>8} {:>8} {:>8} {:>10} {:>9}", "shape", "forward", "dx", "dw", "fwd+bwd", "ms/f+b");
        for b in conv_benches() {
            let t = conv_times(ctx, &b)?;
            let f = 2.0 * ConvGeom::new(&b.x, &b.w, b.spec)?.macs() as f64;
            let tot: f64 = t.iter().sum();
            println!(
                "{:<36} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>9.2}",
                b.label,
                f / t[0] / 1e9,
                f / t[1] / 1e9,
                f / t[2] / 1e9,
                3.0 * f / tot / 1e9,
                tot * 1e3
            );
        }
    }
    if what == "dispatch" || what == "all" {
        let (one, per, wait) = dispatch_cost(ctx, 300)?;
        println!(
            "dispatch cost, 300-dispatch plan: {one:.1} us/dispatch in one submit; {per:.1} us with a submit per dispatch; {wait:.1} us with a submit and wait per dispatch"
        );
    }
    Ok(())
}
