//! Time OBoW training steps and split one step's GPU time by part (teacher forward, student
//! forward + backward, BoW targets and vocabulary, weight-generator head, optimizer/EMA).
//! `cargo run --release --example obow_profile -- [model] [batch] [steps]`
//! (defaults resnet20 64 3; bundled Fashion-MNIST at 28 px, 2 crops + 5 patches, K = 8192).

use std::collections::BTreeMap;
use std::time::Instant;
use webdistill::train::Run;
use webdistill::train::TrainConfig;
use webdistill::{Context, data};

fn part(scope: &str, label: &str) -> &'static str {
    let s = scope.to_ascii_lowercase();
    if s.contains("bow_predictor") || label.starts_with("l2_normalize") {
        "weight-generator head"
    } else if s.contains("bow") || label.contains("bow") || label.starts_with("vocab") || label.starts_with("sqnorm") {
        "BoW targets + vocabulary"
    } else if s.contains("teacher") {
        "teacher forward"
    } else if s.contains("student") {
        "student forward + backward"
    } else if s.contains("multicrop") || label.contains("crop") || label.contains("batch") {
        "views (multi-crop)"
    } else if label.starts_with("sgd") || label.starts_with("ema") || label.starts_with("schedule") || label.starts_with("tick") {
        "optimizer + EMA"
    } else if label.starts_with("matmul") || label.starts_with("cross_entropy") {
        // Unscoped backward nodes: the head's matmuls (logits, generator) and the soft CE.
        "weight-generator head"
    } else if label.starts_with("conv") || label.starts_with("batch_norm") || label.contains("pool") || label.starts_with("unary_grad") {
        "student forward + backward"
    } else {
        "other (losses, backward glue)"
    }
}

fn main() -> webdistill::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).cloned().unwrap_or_else(|| "resnet20".into());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let ctx = Context::new()?;
    let splits = data::bundled()?;
    let mut cfg = TrainConfig::preset("obow")?;
    cfg.model = model.clone();
    cfg.batch = batch;
    cfg.test_limit = 100;
    let mut s = Run::new(&ctx, cfg, &splits, None)?;
    let o = s.cfg.obow.clone().unwrap();
    let views = o.crops + o.patches;
    println!(
        "{model}, batch {batch} x ({} crops + {} patches) + teacher view; {} | adapter: {}",
        o.crops,
        o.patches,
        s.train_stats(),
        ctx.adapter
    );
    s.train_steps(1)?;
    s.request_train_metrics()?.wait(&ctx)?;
    let t = Instant::now();
    s.train_steps(steps)?;
    let m = s.parse_train_metrics(&s.request_train_metrics()?.wait(&ctx)?);
    let dt = t.elapsed().as_secs_f64() / steps as f64;
    println!(
        "{:.2} s/step: {:.1} images/s ({:.1} student views/s), BoW loss {:.3}",
        dt,
        batch as f64 / dt,
        (batch * views) as f64 / dt,
        m.terms[0].1
    );
    let prof = s.train_plan().profile_dispatches()?;
    let scopes = s.train_plan().dispatch_scopes();
    let mut by: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let mut by_kernel: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for ((label, t), scope) in prof.iter().zip(scopes) {
        let e = by.entry(part(scope, label)).or_default();
        e.0 += t;
        e.1 += 1;
        let k = by_kernel.entry(label.clone()).or_default();
        k.0 += t;
        k.1 += 1;
    }
    let total: f64 = prof.iter().map(|p| p.1).sum();
    println!("one step, dispatches run one at a time ({} dispatches, {:.2} s in all):", prof.len(), total);
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    for (k, (t, n)) in v {
        println!("  {k:<32} {n:>5} dispatches {:>8.2} s {:>5.1}%", t, 100.0 * t / total);
    }
    let mut v: Vec<_> = by_kernel.into_iter().collect();
    v.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!("top kernels:");
    for (k, (t, n)) in v.into_iter().take(10) {
        println!("  {k:<40} {n:>4} x {:>8.3} s {:>5.1}%", t, 100.0 * t / total);
    }
    Ok(())
}
