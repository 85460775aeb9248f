//! WebGPU rules that native wgpu does not enforce but browsers do: no two overlapping storage
//! bindings in one dispatch when either is writable (all of ours are read_write). Plans must be
//! valid for browsers while they are tested natively.

mod common;
use common::{assert_close, ctx, rand_tensor};
use std::collections::HashMap;
use webdistill::gpu::{KernelProfile, MatmulVariant};
use webdistill::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Plan};
use webdistill::optim::{OptimState, Optimizer};
use webdistill::{Error, Init, Store};

#[test]
fn a_tensor_read_through_two_bindings_gets_a_copy_and_the_right_values() {
    for variant in [MatmulVariant::Register, MatmulVariant::Tiled] {
        let c = ctx().with_profile(KernelProfile { matmul: variant, ..ctx().profile.clone() });
        let x = rand_tensor(&[6, 8], 3);
        let mut g = Graph::new();
        let vx = g.input("x", &[6, 8]).unwrap();
        let gram = g.matmul_ex(vx, vx, false, true, None).unwrap(); // x @ x^T: CKA's Gram matrix
        let sq = g.mul(vx, vx).unwrap();
        let flat = g.reshape(vx, &[48]).unwrap();
        let flat = g.reshape(flat, &[6, 8]).unwrap();
        let twice = g.add(vx, flat).unwrap(); // the same memory under another var
        for v in [gram, sq, twice] {
            g.keep(v);
        }
        let mut store = Store::new(0);
        let plan = Plan::compile(&c, &g, &mut store, "repeated reads").unwrap();
        assert!(plan.dispatch_labels().iter().filter(|l| l.ends_with(":gather")).count() >= 3, "{:?}", plan.dispatch_labels());
        plan.write(vx, &x.to_f32()).unwrap();
        plan.step().unwrap();
        let want = g.eval_cpu(&HashMap::from([(vx, x.clone())])).unwrap();
        for (name, v) in [("x @ x^T", gram), ("x * x", sq), ("x + reshape(x)", twice)] {
            assert_close(name, &plan.read(v).unwrap(), &want[&v].data, 1e-5, 1e-4);
        }
    }
}

#[test]
fn gradients_through_repeated_reads_are_right() {
    // loss = sum(w @ w^T): dL/dw = 2 * colsum-broadcast; checked against the f64 formula.
    let ctx = ctx();
    let mut store = Store::new(1);
    let w0 = rand_tensor(&[4, 5], 9);
    let w = store.param("w", &[4, 5], Init::Values(w0.to_f32().into())).unwrap();
    store.upload(&ctx).unwrap();
    let mut g = Graph::new();
    let vw = g.param(&w);
    let gram = g.matmul_ex(vw, vw, false, true, None).unwrap();
    let l = g.sum_all(gram).unwrap();
    g.keep(l);
    g.backward(l).unwrap();
    let plan = Plan::compile(&ctx, &g, &mut store, "gram grad").unwrap();
    plan.step().unwrap();
    let colsum: Vec<f64> = (0..5).map(|j| (0..4).map(|i| w0.data[i * 5 + j]).sum()).collect();
    let want: Vec<f64> = (0..20).map(|k| 2.0 * colsum[k % 5]).collect();
    assert_close("d sum(w w^T) / dw", &store.read_grad(&w).unwrap(), &want, 1e-5, 1e-4);
}

#[test]
fn placeholder_bindings_never_alias() {
    // Ops with absent operands (no bias, no affine weights, optimizer slots a method lacks,
    // clipping, EMA within one page) all compile: compile rejects any overlap.
    let ctx = ctx();
    for opt in [Optimizer::sgd(0.1, 0.0, 0.0), Optimizer::sgd(0.1, 0.9, 0.01).with_clip(1.0), Optimizer::adamw(1e-3, 0.01).with_clip(0.5)] {
        let mut store = Store::new(2);
        let w = store.param("w", &[8, 6], Init::Uniform { lo: -0.5, hi: 0.5 }).unwrap();
        let state = OptimState::register(&mut store, "opt").unwrap();
        store.upload(&ctx).unwrap();
        let mut g = Graph::new();
        let x = g.input("x", &[4, 6]).unwrap();
        let vw = g.param(&w);
        let h = g.linear(x, vw, None).unwrap();
        let h = g.layer_norm(h, None, None, 1e-5).unwrap();
        let l = g.mean_all(h).unwrap();
        let l2 = g.square(l).unwrap();
        let grads = g.backward(l2).unwrap();
        opt.apply(&mut g, &mut store, &state, &grads).unwrap();
        let plan = Plan::compile(&ctx, &g, &mut store, "placeholders").unwrap();
        plan.write(x, &rand_tensor(&[4, 6], 4).to_f32()).unwrap();
        plan.run(2).unwrap();
        assert_eq!(store.read_state(&state.step).unwrap()[0], 2.0);
        assert!(store.read_param(&w).unwrap().iter().all(|v| v.is_finite()));
    }
}

/// An in-place op that (wrongly) binds its state twice.
#[derive(Debug)]
struct Twice;

impl Op for Twice {
    fn name(&self) -> &'static str {
        "twice"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> webdistill::Result<()> {
        let v = Bind::T(n.inputs[0].var);
        l.dispatch("counter", "tick", Params::new(), &[v, v], [1, 1, 1]);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> webdistill::Result<Vec<CpuTensor>> {
        Ok(vec![x[0].clone()])
    }
}

#[test]
fn overlapping_bindings_are_reported_natively_as_browsers_would() {
    let ctx = ctx();
    let mut store = Store::new(0);
    let s = store.state("counter", &[1], DType::U32, Init::Zeros).unwrap();
    store.upload(&ctx).unwrap();
    let mut g = Graph::new();
    let v = g.state(&s);
    g.push(Twice, &[v], vec![1], DType::F32).unwrap();
    let err = Plan::compile(&ctx, &g, &mut store, "bad").unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("counter::tick for twice binds overlapping memory at bindings 1 and 2"), "{msg}");
    assert!(msg.contains("WebGPU forbids"), "{msg}");
}
