//! Benchmarks (`webdistill bench`, `cargo bench`): kernel throughput and dispatch cost, printed with the adapter name.
//! Speed lives here (and in `cargo bench`), never in tests.

use crate::error::Result;
use crate::gpu::{Context, KernelProfile, MatmulVariant};
use crate::graph::{Graph, Plan, PlanStats};
use crate::nn::Fwd;
use crate::ops::AttnImpl;
use crate::ops::conv::{Conv2dSpec, ConvGeom};
use crate::optim::{OptimState, Optimizer};
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
        ConvBench { label: "pointwise 1x1 96->576 4x4", x: [64, 96, 4, 4], w: [576, 96, 1, 1], spec: Conv2dSpec::new(1, 0, 1) },
        ConvBench { label: "pointwise 1x1 160->960 2x2", x: [64, 160, 2, 2], w: [960, 160, 1, 1], spec: Conv2dSpec::new(1, 0, 1) },
        ConvBench { label: "depthwise 3x3 96ch 16x16", x: [64, 96, 16, 16], w: [96, 1, 3, 3], spec: Conv2dSpec::new(1, 1, 96) },
        ConvBench { label: "depthwise 7x7 80ch 8x8", x: [64, 80, 8, 8], w: [80, 1, 7, 7], spec: Conv2dSpec::new(1, 3, 80) },
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

/// What one training step of a model costs.
pub struct StepReport {
    pub train_s: f64,
    pub eval_s: f64,
    pub train: PlanStats,
    pub eval: PlanStats,
    pub flops: u64,
    /// Seconds per op kind (`op:kernel`) of the train step, dispatches run one by one.
    pub profile: Vec<(String, f64, usize)>,
}

/// A ResNet-20-style training step (forward, backward, SGD with momentum and weight decay) of
/// `model` at `batch` images of 32x32x3, 100 classes; and its eval forward for comparison.
pub fn model_step(ctx: &Context, model: &str, batch: usize) -> Result<StepReport> {
    let mut store = Store::new(0);
    let net = crate::models::build(model, &mut store, "", &crate::models::ModelConfig::new(3, 32, 100))?;
    store.upload(ctx)?;
    let state = OptimState::register(&mut store, "opt")?;
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 3, 32, 32])?;
    let y = g.labels("y", &[batch], 100)?;
    let step = g.input_u32("step", &[1])?;
    let out = net.forward(&mut g, x, Fwd::train(step, 0))?;
    let loss = g.cross_entropy(out.logits, y, 0.0)?;
    g.keep(loss);
    let grads = g.backward(loss)?;
    let flops = g.flops();
    Optimizer::sgd(0.05, 0.9, 5e-4).apply(&mut g, &mut store, &state, &grads)?;
    let train = Plan::compile(ctx, &g, &mut store, "train step")?;
    let xv: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let yv: Vec<u32> = (0..batch as u32).map(|i| i * 7 % 100).collect();
    train.write(x, &xv)?;
    train.write_u32(y, &yv)?;
    let mut ge = Graph::new();
    let xe = ge.input("x", &[batch, 3, 32, 32])?;
    let oe = net.forward(&mut ge, xe, Fwd::eval())?;
    ge.keep(oe.logits);
    let eval = Plan::compile(ctx, &ge, &mut store, "eval")?;
    eval.write(xe, &xv)?;
    let train_s = time_plan(ctx, &train, 2, 3)?;
    let eval_s = time_plan(ctx, &eval, 2, 3)?;
    let mut by_kind: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (label, t) in train.profile_dispatches()? {
        let e = by_kind.entry(label).or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut profile: Vec<(String, f64, usize)> = by_kind.into_iter().map(|(k, (t, n))| (k, t, n)).collect();
    profile.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    Ok(StepReport { train_s, eval_s, train: train.stats().clone(), eval: eval.stats().clone(), flops, profile })
}

/// CPU seconds this process has used (user + system), from /proc on Linux. Software adapters
/// run inside the process, so this counts their work even while other programs compete for
/// the cores, which wall time does not.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Per-run (wall ms, CPU ms) of several plans, measured in interleaved rounds (median of
/// `reps`, `iters` runs per submit) so that load from other programs hits them alike.
pub fn time_interleaved(ctx: &Context, plans: &[&Plan], iters: usize, reps: usize) -> Result<Vec<(f64, Option<f64>)>> {
    for p in plans {
        p.run(1)?;
        ctx.wait()?;
    }
    let mut wall = vec![Vec::new(); plans.len()];
    let mut cpu = vec![Vec::new(); plans.len()];
    for _ in 0..reps {
        for (k, p) in plans.iter().enumerate() {
            let c0 = process_cpu_seconds();
            let t = Instant::now();
            p.run(iters)?;
            ctx.wait()?;
            wall[k].push(t.elapsed().as_secs_f64() * 1e3 / iters as f64);
            if let (Some(c0), Some(c1)) = (c0, process_cpu_seconds()) {
                cpu[k].push((c1 - c0) * 1e3 / iters as f64);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    Ok(wall.iter_mut().zip(cpu.iter_mut()).map(|(w, c)| (median(w), if c.is_empty() { None } else { Some(median(c)) })).collect())
}

/// A plan of multi-head self-attention over `batch` x `tokens` x `dim` with `heads` heads:
/// the forward pass only, or with the backward pass to the qkv input (as in training).
pub fn attention_plan(ctx: &Context, imp: AttnImpl, backward: bool, batch: usize, tokens: usize, dim: usize, heads: usize) -> Result<Plan> {
    let mut g = Graph::new();
    let qkv = g.input("qkv", &[batch, tokens, 3 * dim])?;
    let y = g.attention_with(qkv, heads, None, imp)?;
    if backward {
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
    Ok(plan)
}

/// A training-step plan of a registry ViT at 32 px with 100 classes: forward in training
/// mode with drop path 0.1, label-smoothed cross-entropy, backward, AdamW with gradient
/// clipping (OFA-KD's ViT recipe).
pub fn vit_step_plan(ctx: &Context, name: &str, batch: usize, imp: AttnImpl) -> Result<Plan> {
    use crate::models::vit::{Vit, arch};
    use crate::models::{Backbone, ModelConfig};
    use crate::nn::{Builder, Fwd};
    use crate::optim::{OptimState, Optimizer};
    let a = arch(name).ok_or_else(|| crate::Error::usage(format!("vit-step: '{name}' is not a ViT")))?;
    let mut cfg = ModelConfig::new(3, 32, 100);
    cfg.drop_path = 0.1;
    let mut store = Store::new(0);
    let net = Vit::new(&mut Builder::new(&mut store, ""), name, a, &cfg)?.with_attention(imp);
    store.upload(ctx)?;
    let state = OptimState::register(&mut store, "opt")?;
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 3, 32, 32])?;
    let y = g.labels("y", &[batch], 100)?;
    let step = g.state(&state.step);
    let out = net.forward(&mut g, x, Fwd::train(step, 0))?;
    let loss = g.cross_entropy(out.logits, y, 0.1)?;
    g.keep(loss);
    let grads = g.backward(loss)?;
    Optimizer::adamw(5e-4, 0.05).with_clip(5.0).apply(&mut g, &mut store, &state, &grads)?;
    let plan = Plan::compile(ctx, &g, &mut store, "bench vit step")?;
    let xs: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let ys: Vec<u32> = (0..batch).map(|i| (i * 37 % 100) as u32).collect();
    plan.write(x, &xs)?;
    plan.write_u32(y, &ys)?;
    Ok(plan)
}

fn fmt_ms((wall, cpu): (f64, Option<f64>)) -> String {
    match cpu {
        Some(c) => format!("{wall:>9.1} ({c:>7.1} cpu)"),
        None => format!("{wall:>9.1}"),
    }
}

pub fn run(ctx: &Context, what: &str, sizes: &[usize]) -> Result<()> {
    println!("adapter: {}", ctx.adapter);
    if what == "matmul" || what == "all" {
        println!("f32 matmul, n x n x n, GFLOP/s (median of 3):");
        // `tiled` is what a real GPU gets: tiled-wide where the grid is large, else tiled64.
        print!("{:>6}", "n");
        for v in MatmulVariant::ALL {
            print!(" {:>16}", v.name());
        }
        println!();
        for &n in sizes {
            print!("{n:>6}");
            for v in MatmulVariant::ALL {
                print!(" {:>16.2}", matmul_gflops(ctx, v, n)?);
            }
            println!();
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
    if what == "resnet20-step" || what == "all" {
        let r = model_step(ctx, "resnet20", 64)?;
        println!("resnet20 train step, batch 64, 32x32x3 (forward + backward + SGD), median of 3:");
        println!(
            "  {:.1} ms/step, {:.2} GFLOP/s ({:.2} GFLOP fwd+bwd); {}",
            r.train_s * 1e3,
            r.flops as f64 / r.train_s / 1e9,
            r.flops as f64 / 1e9,
            r.train
        );
        println!("  eval forward: {:.1} ms, {}", r.eval_s * 1e3, r.eval);
        let total: f64 = r.profile.iter().map(|p| p.1).sum();
        println!("  train step by kernel (dispatches run one at a time, {:.0} ms in all):", total * 1e3);
        for (k, t, n) in r.profile.iter().take(14) {
            println!("    {k:<40} {n:>4} x {:>9.1} ms  {:>5.1}%", t * 1e3, 100.0 * t / total);
        }
    }
    if what == "dispatch" || what == "all" {
        let (one, per, wait) = dispatch_cost(ctx, 300)?;
        println!(
            "dispatch cost, 300-dispatch plan: {one:.1} us/dispatch in one submit; {per:.1} us with a submit per dispatch; {wait:.1} us with a submit and wait per dispatch"
        );
    }
    if what == "attention" || what == "all" {
        let (b, n, d, h) = (64, 65, 128, 4);
        println!(
            "self-attention, batch {b} x {n} tokens x {d} dims x {h} heads: ms per run, wall (process CPU), median of 5 interleaved rounds:"
        );
        let imps = [AttnImpl::Fused, AttnImpl::Materialized];
        let mut plans = Vec::new();
        for imp in imps {
            plans.push(attention_plan(ctx, imp, false, b, n, d, h)?);
            plans.push(attention_plan(ctx, imp, true, b, n, d, h)?);
        }
        let t = time_interleaved(ctx, &plans.iter().collect::<Vec<_>>(), 2, 5)?;
        println!("{:>14} {:>24} {:>24} {:>10}", "path", "forward", "forward+backward", "dispatches");
        for (k, imp) in imps.iter().enumerate() {
            let disp =
                format!("{}+{}", plans[2 * k].stats().dispatches, plans[2 * k + 1].stats().dispatches - plans[2 * k].stats().dispatches);
            println!("{:>14} {:>24} {:>24} {:>10}", imp.name(), fmt_ms(t[2 * k]), fmt_ms(t[2 * k + 1]), disp);
        }
    }
    if what == "vit-step" || what == "all" {
        let batch = 64;
        println!(
            "vit_micro_p4 training step (32 px, batch {batch}, AdamW, drop path 0.1): ms per step, wall (process CPU), median of 3 interleaved rounds:"
        );
        let imps = [AttnImpl::Fused, AttnImpl::Materialized];
        let plans = imps.iter().map(|&imp| vit_step_plan(ctx, "vit_micro_p4", batch, imp)).collect::<Result<Vec<_>>>()?;
        let t = time_interleaved(ctx, &plans.iter().collect::<Vec<_>>(), 1, 3)?;
        for (k, imp) in imps.iter().enumerate() {
            println!(
                "  attention {:>12}: {} ms/step, {:.1} images/s; {}",
                imp.name(),
                fmt_ms(t[k]),
                batch as f64 / t[k].0 * 1e3,
                plans[k].stats()
            );
        }
    }
    if what == "distill-step" || what == "all" {
        for student in ["vit_micro_p4", "mixer_micro_p4"] {
            let r = distill_step(ctx, student, 64, 5)?;
            println!(
                "OFA distillation step (resnet20 teacher -> {student} student, batch 64, 3x32x32, 100 classes, branches on stages 1-3, AdamW):"
            );
            println!("  {:.0} ms/step, {:.1} images/s (median of {} steps); {}", r.seconds * 1e3, 64.0 / r.seconds, 5, r.stats);
            let top: Vec<String> = r.by_kernel.iter().take(8).map(|(k, n)| format!("{k} {n}")).collect();
            println!("  most dispatches: {}", top.join(", "));
        }
        println!(
            "  PyTorch on the same machine: python3 scripts/torch_distill_step.py --student vit_micro_p4|mixer_micro_p4 [--device cuda]"
        );
    }
    Ok(())
}

/// Seconds per OFA distillation step (median of `steps`) and the plan's stats: the step of
/// `webdistill distill` on synthetic 3x32x32 images with 100 classes and a random teacher.
pub fn distill_step(ctx: &Context, student: &str, batch: usize, steps: usize) -> Result<DistillTiming> {
    use crate::checkpoint;
    use crate::data::{Dataset, Splits};
    use crate::train::Run;
    use crate::train::{DistillConfig, TrainConfig};
    let classes = 100;
    let synthetic = |n: usize, name: &str| {
        let images = (0..n * 3 * 32 * 32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let names = (0..classes).map(|c| format!("class {c}")).collect();
        Dataset::new(name, images, (0..n as u32).map(|i| i % classes as u32).collect(), 3, 32, 32, names)
    };
    let splits = Splits { train: synthetic(batch * 4, "synthetic/train")?, test: synthetic(batch, "synthetic/test")? };
    let plain = TrainConfig { model: "resnet20".into(), batch, epochs: 1, ..TrainConfig::default() };
    let teacher = Run::new(ctx, plain, &splits, None)?;
    let teacher = checkpoint::parse(&pollster::block_on(teacher.student_bytes(&Default::default()))?, "random resnet20")?;
    let distill = DistillConfig { method: "ofa".into(), teacher: "resnet20".into(), ofa_stages: vec![1, 2, 3], ..DistillConfig::default() };
    let cfg =
        TrainConfig { model: student.into(), batch, epochs: 100, opt: "adamw".into(), distill: Some(distill), ..TrainConfig::default() };
    let mut s = Run::new(ctx, cfg, &splits, Some(&teacher))?;
    s.train_steps(1)?;
    s.request_train_metrics()?.wait(ctx)?;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        s.train_steps(1)?;
        s.request_train_metrics()?.wait(ctx)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(DistillTiming {
        seconds: times[times.len() / 2],
        stats: s.train_stats().clone(),
        by_kernel: s.train_plan().dispatch_counts(),
        store_bytes: s.store.gpu_bytes(),
    })
}

/// What [`distill_step`] measured.
#[derive(Clone, Debug)]
pub struct DistillTiming {
    /// Seconds per step, median.
    pub seconds: f64,
    pub stats: PlanStats,
    /// Dispatches per kernel (`op:entry`, count), most first.
    pub by_kernel: Vec<(String, usize)>,
    /// Weights, gradients, optimizer state and other persistent tensors on the GPU.
    pub store_bytes: u64,
}

/// What [`session_steps`] measured.
#[derive(Clone, Debug)]
pub struct SessionTiming {
    pub steps: usize,
    pub chunk: usize,
    /// Seconds of the timed calls (the warm-up step excluded).
    pub seconds: f64,
    pub examples: u64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// The held-out evaluation after the steps.
    pub eval: crate::session::Metrics,
}

impl SessionTiming {
    pub fn steps_per_sec(&self) -> f64 {
        self.steps as f64 / self.seconds.max(1e-9)
    }
    pub fn images_per_sec(&self) -> f64 {
        self.examples as f64 / self.seconds.max(1e-9)
    }
}

impl std::fmt::Display for SessionTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps in calls of {} (after 1 warm-up step): {:.1} steps/s, {:.0} images/s; loss {:.4} -> {:.4}; held-out loss {:.4}, accuracy {:.1}%",
            self.steps,
            self.chunk,
            self.steps_per_sec(),
            self.images_per_sec(),
            self.first_loss,
            self.last_loss,
            self.eval.loss,
            self.eval.accuracy.unwrap_or(0.0) * 100.0
        )
    }
}

/// Time a session as the page drives it: one warm-up step, then `steps` steps in `step(chunk)`
/// calls that each await their loss, then one evaluation (`webdistill selftest --bench`).
pub fn session_steps(s: &mut dyn crate::session::Session, steps: usize, chunk: usize) -> Result<SessionTiming> {
    pollster::block_on(async {
        let first = s.step(1).await?;
        let chunk = chunk.max(1);
        let (mut done, mut seconds, mut examples, mut last) = (0usize, 0.0f64, 0u64, first.clone());
        while done < steps {
            let n = chunk.min(steps - done);
            last = s.step(n).await?;
            done += n;
            seconds += last.seconds;
            examples += last.examples;
        }
        let eval = s.evaluate().await?;
        Ok(SessionTiming { steps: done, chunk, seconds, examples, first_loss: first.loss, last_loss: last.loss, eval })
    })
}
