//! The correctness section: on this adapter, every kernel family under every kernel profile
//! (the one the adapter gets and the others) against the f64 CPU references on odd sizes,
//! gradients against central differences of those references, and model logits against the
//! committed PyTorch goldens. A real GPU runs workgroups truly in parallel, so races and
//! barrier mistakes that a software adapter hides show here first. A failure is recorded,
//! never fatal: the rest of the report still runs.

use super::{Check, Writer};
use crate::error::Result;
use crate::gpu::{Context, KernelProfile, MatmulVariant};
use crate::graph::{CpuTensor, Graph, Plan, Var};
use crate::ops::AttnImpl;
use crate::ops::conv::Conv2dSpec;
use crate::store::Store;
use std::collections::HashMap;

/// Forward outputs agree with the f64 reference within this (relative to the largest value).
const FORWARD_TOL: f64 = 1e-4;
/// Gradients against central differences of the f64 forward.
const GRAD_TOL: f64 = 2e-3;

/// A small graph: its inputs with their values, and the outputs to compare.
struct Case {
    name: &'static str,
    graph: Graph,
    inputs: Vec<(Var, Vec<f32>)>,
    outputs: Vec<Var>,
    /// The input whose gradient of sum(output[0] * weights) is checked, if any.
    grad_of: Option<Var>,
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64).map(|i| crate::golden::unit_of_hash(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), i) as f32).collect()
}

fn case(name: &'static str, shapes: &[&[usize]], grad: bool, f: impl FnOnce(&mut Graph, &[Var]) -> Result<Var>) -> Result<Case> {
    let mut g = Graph::new();
    let mut inputs = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let v = g.input(&format!("in{i}"), s)?;
        inputs.push((v, values(s.iter().product(), 17 + i as u64)));
    }
    let vars: Vec<Var> = inputs.iter().map(|(v, _)| *v).collect();
    let y = f(&mut g, &vars)?;
    g.keep(y);
    Ok(Case { name, graph: g, inputs, outputs: vec![y], grad_of: grad.then_some(vars[0]) })
}

/// The cases: each kernel family at sizes that are not multiples of any tile or vector width.
fn cases() -> Result<Vec<Case>> {
    let c3 = Conv2dSpec::new(1, 1, 1);
    let c3s2 = Conv2dSpec::new(2, 1, 1);
    let pw = Conv2dSpec::new(1, 0, 1);
    let dw = Conv2dSpec::new(1, 1, 6);
    Ok(vec![
        case("matmul 37x29 @ 29x43", &[&[37, 29], &[29, 43]], true, |g, v| g.matmul(v[0], v[1]))?,
        case("matmul batched 3x5x67 @ 67x9, A and B transposed", &[&[3, 67, 5], &[9, 67]], false, |g, v| {
            g.matmul_ex(v[0], v[1], true, true, None)
        })?,
        case("linear 13x70 -> 33 with bias", &[&[13, 70], &[33, 70], &[33]], true, |g, v| g.linear(v[0], v[1], Some(v[2])))?,
        case("conv 3x3 s1 5->7 on 3x5x9x9", &[&[3, 5, 9, 9], &[7, 5, 3, 3]], true, |g, v| g.conv2d(v[0], v[1], None, c3))?,
        case("conv 3x3 s2 5->10 on 3x5x9x11", &[&[3, 5, 9, 11], &[10, 5, 3, 3]], false, |g, v| g.conv2d(v[0], v[1], None, c3s2))?,
        case("conv 1x1 6->11 on 2x6x5x7", &[&[2, 6, 5, 7], &[11, 6, 1, 1]], false, |g, v| g.conv2d(v[0], v[1], None, pw))?,
        case("depthwise 3x3 6ch on 2x6x9x9", &[&[2, 6, 9, 9], &[6, 1, 3, 3]], true, |g, v| g.conv2d(v[0], v[1], None, dw))?,
        case("conv input grad 3x3 s2 (dy 3x10x5x6)", &[&[3, 10, 5, 6], &[10, 5, 3, 3]], false, |g, v| {
            g.conv2d_input_grad(v[0], v[1], &[3, 5, 9, 11], c3s2)
        })?,
        case("conv weight grad 3x3 s1", &[&[3, 5, 9, 9], &[3, 7, 9, 9]], false, |g, v| {
            g.conv2d_weight_grad(v[0], v[1], &[7, 5, 3, 3], c3)
        })?,
        case("layer norm rows of 77", &[&[11, 77], &[77], &[77]], true, |g, v| g.layer_norm(v[0], Some(v[1]), Some(v[2]), 1e-5))?,
        case("layer norm rows of 300 (workgroup rows)", &[&[5, 300]], true, |g, v| g.layer_norm(v[0], None, None, 1e-6))?,
        case("softmax rows of 301", &[&[7, 301]], true, |g, v| g.softmax(v[0]))?,
        case("sum over 5000 (wide reduction)", &[&[3, 5000]], false, |g, v| g.sum(v[0], &[1], false))?,
        case("attention fused 2x17 tokens x 24 dims x 3 heads", &[&[2, 17, 72]], true, |g, v| {
            g.attention_with(v[0], 3, None, AttnImpl::Fused)
        })?,
        case("attention materialised 2x17x24x3", &[&[2, 17, 72]], false, |g, v| g.attention_with(v[0], 3, None, AttnImpl::Materialized))?,
        case("gelu", &[&[1031]], true, |g, v| g.gelu(v[0]))?,
    ])
}

/// max |a - b| / max(max |b|, 1e-6).
fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs())) / scale
}

fn feeds(c: &Case, x: Option<(Var, Vec<f32>)>) -> HashMap<Var, CpuTensor> {
    c.inputs
        .iter()
        .map(|(v, vals)| {
            let vals = match &x {
                Some((xv, xvals)) if xv == v => xvals,
                _ => vals,
            };
            (*v, CpuTensor::from_f32(c.graph.shape(*v), vals))
        })
        .collect()
}

/// Run one case under `ctx`'s profile: (worst forward error, worst gradient error).
fn run_case(ctx: &Context, c: &Case) -> Result<(f64, Option<f64>)> {
    let mut g = c.graph.clone();
    let y = c.outputs[0];
    // The gradient of sum(y * r) with fixed weights r: every element of dy differs.
    let grad = match c.grad_of {
        Some(x) => {
            let r = g.input("r", g.shape(y).to_vec().as_slice())?;
            let p = g.mul(y, r)?;
            let axes: Vec<isize> = (0..g.shape(p).len() as isize).collect();
            let loss = g.sum(p, &axes, false)?;
            let gx = g.gradients(loss, &[x])?[0].expect("the loss depends on x");
            g.keep(gx);
            Some((x, r, gx))
        }
        None => None,
    };
    let plan = Plan::compile(ctx, &g, &mut Store::new(0), c.name)?;
    for (v, vals) in &c.inputs {
        plan.write(*v, vals)?;
    }
    let rvals = grad.map(|(_, r, _)| values(g.numel(r), 99));
    if let (Some((_, r, _)), Some(rv)) = (grad, &rvals) {
        plan.write(r, rv)?;
    }
    plan.run(1)?;
    let want = c.graph.eval_cpu(&feeds(c, None))?;
    let mut fwd = 0.0f64;
    for &o in &c.outputs {
        fwd = fwd.max(rel_error(&plan.read(o)?, &want[&o].data));
    }
    let Some((x, _, gx)) = grad else { return Ok((fwd, None)) };
    let got = plan.read(gx)?;
    let rv = rvals.expect("set with grad");
    // Central differences of the f64 reference at a spread of coordinates.
    let x0 = c.inputs.iter().find(|(v, _)| *v == x).map(|(_, vals)| vals.clone()).expect("x is an input");
    let loss_at = |vals: Vec<f32>| -> Result<f64> {
        let out = c.graph.eval_cpu(&feeds(c, Some((x, vals))))?;
        Ok(out[&y].data.iter().zip(&rv).map(|(a, &b)| a * b as f64).sum())
    };
    let h = 1e-3f32;
    let n = x0.len();
    let mut worst = 0.0f64;
    let scale = got.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)).max(1e-3);
    for k in 0..8usize {
        let i = (k * 7919 + 3) % n;
        let (mut up, mut down) = (x0.clone(), x0.clone());
        up[i] += h;
        down[i] -= h;
        // The perturbation as f32 holds it, so the difference quotient uses the real step.
        let step = (up[i] as f64) - (down[i] as f64);
        let fd = (loss_at(up)? - loss_at(down)?) / step;
        worst = worst.max((got[i] as f64 - fd).abs() / scale);
    }
    Ok((fwd, Some(worst)))
}

/// The kernel profiles to check: this adapter's, then the others (every variant a profile
/// can pick runs somewhere in the list: the wide and the 64x64 tiled matmuls, subgroup and
/// tree reductions where the device has subgroups, the register matmuls).
fn profiles(ctx: &Context) -> Vec<(String, KernelProfile)> {
    let own = ctx.profile.clone();
    let subgroups = cfg!(not(target_arch = "wasm32")) && ctx.device.features().contains(wgpu::Features::SUBGROUP);
    let gpu = KernelProfile { software: false, matmul: MatmulVariant::Tiled, serial_row_max: 256, subgroups, ..own.clone() };
    // Tiny cases never fill a GPU with 128x128 tiles, so the wide kernel is forced here.
    let wide = KernelProfile { matmul: MatmulVariant::TiledWide, ..gpu.clone() };
    let tree = KernelProfile { subgroups: false, ..gpu.clone() };
    let soft = KernelProfile { software: true, matmul: MatmulVariant::Register, serial_row_max: 4096, subgroups: false, ..own.clone() };
    let scalar = KernelProfile { matmul: MatmulVariant::RegisterScalar, ..soft.clone() };
    let name = |p: &KernelProfile| {
        let kind = if p.software { "software" } else { "gpu" };
        format!("{kind} (matmul {}{})", p.matmul.name(), if p.subgroups { ", subgroups" } else { "" })
    };
    let mut out = vec![(format!("{}, this adapter's", name(&own)), own.clone())];
    for p in [gpu, wide, tree, soft, scalar] {
        if !out.iter().any(|(_, q)| *q == p) {
            out.push((name(&p), p));
        }
    }
    out
}

/// The correctness section.
pub(super) fn run(w: &mut Writer, ctx: &Context) -> Result<String> {
    let cases = cases()?;
    for (pname, profile) in profiles(ctx) {
        let pctx = ctx.with_profile(profile);
        for c in &cases {
            let mut push = |name: String, err: Result<f64>, tol: f64| {
                let (rel_error, error) = match err {
                    Ok(e) => (Some(e), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let ok = rel_error.is_some_and(|e| e <= tol);
                w.report.checks.push(Check { kind: "kernel".into(), name, profile: pname.clone(), rel_error, tolerance: tol, ok, error });
            };
            match run_case(&pctx, c) {
                Ok((f, g)) => {
                    push(c.name.to_string(), Ok(f), FORWARD_TOL);
                    if let Some(g) = g {
                        push(format!("{} (gradient)", c.name), Ok(g), GRAD_TOL);
                    }
                }
                Err(e) => push(c.name.to_string(), Err(e), FORWARD_TOL),
            }
        }
        let bad = w.report.checks.iter().filter(|c| c.profile == pname && !c.ok).count();
        w.say(format!("kernels under {pname}: {} checks, {bad} failed", cases.len()));
    }
    w.save()?;
    for model in ["resnet20", "vit_micro_p4", "mixer_micro_p4"] {
        let path = w.opts.repo.join("tests/golden").join(format!("{model}.safetensors"));
        let r = crate::golden::check_logits(ctx, model, &path);
        let (rel_error, error) = match r {
            Ok(r) => (Some(r.rel_error), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = rel_error.is_some_and(|e| e <= FORWARD_TOL);
        w.say(format!(
            "{model} logits vs PyTorch: {}",
            rel_error.map(|e| format!("{e:.2e}")).unwrap_or_else(|| error.clone().unwrap_or_default())
        ));
        w.report.checks.push(Check {
            kind: "golden".into(),
            name: format!("{model} logits vs PyTorch"),
            profile: if ctx.profile.software { "software" } else { "gpu" }.into(),
            rel_error,
            tolerance: FORWARD_TOL,
            ok,
            error,
        });
    }
    let failed = w.report.checks.iter().filter(|c| !c.ok).count();
    Ok(if failed == 0 { "all passed".into() } else { format!("{failed} failed") })
}
