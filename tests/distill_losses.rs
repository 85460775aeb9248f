//! Distillation losses and CKA against their reference formulas: values and gradients from
//! PyTorch (scripts/golden_losses.py), CKA against the f64 CPU reference and its invariances.

mod common;
use common::{assert_close, ctx, rand_tensor};
use std::collections::HashMap;
use std::path::Path;
use webdistill::distill::{cka, losses};
use webdistill::graph::{CpuTensor, Graph, Plan, Var};
use webdistill::{Result, Store};

fn golden() -> std::collections::BTreeMap<String, webdistill::checkpoint::FileTensor> {
    webdistill::checkpoint::read(Path::new("tests/golden/losses.safetensors")).unwrap()
}

fn check(name: &str, f: impl Fn(&mut Graph, Var, Var, Var, Var) -> Result<Var>) {
    let gd = golden();
    let (b, c) = (gd["zs"].shape[0], gd["zs"].shape[1]);
    let mut g = Graph::new();
    let zs = g.input("zs", &[b, c]).unwrap();
    let zt = g.input("zt", &[b, c]).unwrap();
    let y = g.labels("labels", &[b], c).unwrap();
    let onehot = g.one_hot(y, c).unwrap();
    let loss = f(&mut g, zs, zt, y, onehot).unwrap();
    g.keep(loss);
    let grad = g.gradients(loss, &[zs]).unwrap()[0].unwrap();
    g.keep(grad);
    // The teacher's logits are detached: no gradient may reach them.
    assert!(g.gradients(loss, &[zt]).unwrap()[0].is_none(), "{name}: gradient leaked into the teacher");
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx(), &g, &mut store, name).unwrap();
    plan.write(zs, &gd["zs"].data).unwrap();
    plan.write(zt, &gd["zt"].data).unwrap();
    plan.write_u32(y, &gd["labels"].data.iter().map(|&v| v as u32).collect::<Vec<_>>()).unwrap();
    plan.step().unwrap();
    let want_loss: Vec<f64> = gd[&format!("{name}.loss")].data.iter().map(|&v| v as f64).collect();
    let want_grad: Vec<f64> = gd[&format!("{name}.grad")].data.iter().map(|&v| v as f64).collect();
    assert_close(&format!("{name} loss"), &plan.read(loss).unwrap(), &want_loss, 1e-6, 1e-4);
    assert_close(&format!("{name} grad"), &plan.read(grad).unwrap(), &want_grad, 1e-6, 1e-3);
}

#[test]
fn kd_matches_pytorch() {
    check("kd_t1", |g, zs, zt, _, _| losses::kd(g, zs, zt, 1.0));
    check("kd_t4", |g, zs, zt, _, _| losses::kd(g, zs, zt, 4.0));
}

#[test]
fn dkd_matches_pytorch() {
    check("dkd", |g, zs, zt, _, oh| losses::dkd(g, zs, zt, oh, 1.0, 2.0, 1.0));
    check("dkd_t4", |g, zs, zt, _, oh| losses::dkd(g, zs, zt, oh, 1.0, 8.0, 4.0));
}

#[test]
fn dist_matches_pytorch() {
    check("dist", |g, zs, zt, _, _| losses::dist(g, zs, zt, 1.0, 1.0, 1.0));
    check("dist_t2", |g, zs, zt, _, _| losses::dist(g, zs, zt, 2.0, 0.5, 2.0));
}

#[test]
fn ofa_matches_pytorch() {
    check("ofa_eps1", |g, zs, zt, _, oh| losses::ofa(g, zs, zt, oh, 1.0, 1.0));
    check("ofa_eps1.5", |g, zs, zt, _, oh| losses::ofa(g, zs, zt, oh, 1.5, 1.0));
    check("ofa_eps1.5_t2", |g, zs, zt, _, oh| losses::ofa(g, zs, zt, oh, 1.5, 2.0));
}

/// CKA matrix of (x, x*Q, 3x, y) on the GPU, and its f64 CPU reference.
fn cka_run(x: &CpuTensor, y: &CpuTensor, q: &CpuTensor) -> (Vec<f32>, Vec<f64>) {
    let mut g = Graph::new();
    let (n, d) = (x.shape[0], x.shape[1]);
    let xv = g.input("x", &[n, d]).unwrap();
    let yv = g.input("y", &y.shape).unwrap();
    let qv = g.input("q", &[d, d]).unwrap();
    let xq = g.matmul(xv, qv).unwrap();
    let x3 = g.scale(xv, 3.0).unwrap();
    let m = cka::cka_matrix(&mut g, &[xv], &[xv, xq, x3, yv]).unwrap();
    g.keep(m);
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx(), &g, &mut store, "cka").unwrap();
    plan.write(xv, &x.to_f32()).unwrap();
    plan.write(yv, &y.to_f32()).unwrap();
    plan.write(qv, &q.to_f32()).unwrap();
    plan.step().unwrap();
    let feeds: HashMap<Var, CpuTensor> = [(xv, x.clone()), (yv, y.clone()), (qv, q.clone())]
        .into_iter()
        .map(|(v, t)| (v, CpuTensor::new(&t.shape, t.to_f32().iter().map(|&a| a as f64).collect())))
        .collect();
    (plan.read(m).unwrap(), g.eval_cpu(&feeds).unwrap()[&m].data.clone())
}

/// A random orthogonal matrix (Gram-Schmidt in f64).
fn orthogonal(d: usize) -> CpuTensor {
    let r = rand_tensor(&[d, d], 77);
    let mut q: Vec<Vec<f64>> = Vec::new();
    for i in 0..d {
        let mut v: Vec<f64> = r.data[i * d..(i + 1) * d].to_vec();
        for u in &q {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        q.push(v.iter().map(|a| a / n).collect());
    }
    CpuTensor::new(&[d, d], q.concat())
}

#[test]
fn cka_identity_invariances_and_reference() {
    // Feature maps flattened per sample: [n, c, h, w] works through cka_matrix's flatten.
    let x = rand_tensor(&[24, 12], 5);
    let y = rand_tensor(&[24, 7], 6);
    let (got, want) = cka_run(&x, &y, &orthogonal(12));
    assert!((got[0] - 1.0).abs() < 1e-5, "CKA(X, X) = {}", got[0]);
    assert!((got[1] - 1.0).abs() < 1e-4, "CKA(X, XQ) = {} (orthogonal invariance)", got[1]);
    assert!((got[2] - 1.0).abs() < 1e-5, "CKA(X, 3X) = {} (isotropic scaling)", got[2]);
    assert!(got[3] < 0.9 && got[3] > 0.0, "CKA of unrelated features {}", got[3]);
    assert_close("cka vs f64", &got, &want, 1e-5, 1e-4);
}
