//! Test harness: a shared GPU context and op checks against the f64 CPU references
//! (forward) and finite differences of those references (backward).
#![allow(dead_code)]

pub mod golden;

use std::collections::HashMap;
use std::sync::OnceLock;
use webdistill::graph::{CpuTensor, DType, Graph, Plan, Var};
use webdistill::{Context, Store};

pub fn ctx() -> Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        // SAFETY of env: tests only read it. Silence lavapipe's XDG noise.
        Context::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)")
    })
    .clone()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

pub fn rand_tensor(shape: &[usize], seed: u64) -> CpuTensor {
    CpuTensor::new(shape, rand_vec(shape.iter().product(), seed))
}

/// max |a - b| / (atol + rtol |b|) <= 1 elementwise; returns the worst ratio.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = (g as f64 - w).abs() / (atol + rtol * w.abs());
        assert!(r.is_finite() || (g as f64).is_nan() == w.is_nan(), "{what}: non-finite at {i}: got {g}, want {w}");
        if r > worst.0 {
            worst = (r, i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 1.0, "{what}: element {i}: got {}, want {} (atol {atol}, rtol {rtol}, ratio {:.3})", got[i], want[i], worst.0);
}

pub struct OpCase {
    pub name: &'static str,
    pub inputs: Vec<CpuTensor>,
    /// Inputs given as U32 (labels): not differentiated.
    pub u32_inputs: Vec<usize>,
    /// Class count for U32 inputs (labels range check).
    pub classes: usize,
    pub fwd_tol: (f64, f64),
    pub bwd_tol: (f64, f64),
    /// Check gradients (false for ops without one).
    pub grad: bool,
    /// F32 inputs that are data (targets): not differentiated.
    pub data_inputs: Vec<usize>,
}

impl OpCase {
    pub fn new(name: &'static str, inputs: Vec<CpuTensor>) -> Self {
        OpCase {
            name,
            inputs,
            u32_inputs: vec![],
            classes: 0,
            fwd_tol: (1e-5, 1e-4),
            bwd_tol: (1e-3, 1e-2),
            grad: true,
            data_inputs: vec![],
        }
    }
    pub fn labels(mut self, i: usize, classes: usize) -> Self {
        self.u32_inputs.push(i);
        self.classes = classes;
        self
    }
    pub fn tol(mut self, fwd: (f64, f64), bwd: (f64, f64)) -> Self {
        self.fwd_tol = fwd;
        self.bwd_tol = bwd;
        self
    }
    pub fn data(mut self, i: usize) -> Self {
        self.data_inputs.push(i);
        self
    }
    pub fn no_grad(mut self) -> Self {
        self.grad = false;
        self
    }

    /// Build `f` over the inputs, run it on the GPU, compare with the CPU reference; then
    /// differentiate sum(y * r) on the GPU and compare with central differences in f64.
    pub fn check(&self, f: impl Fn(&mut Graph, &[Var]) -> webdistill::Result<Var>) {
        self.check_on(&ctx(), f)
    }

    /// [`Self::check`] on a given context (e.g. one with another kernel profile).
    pub fn check_on(&self, ctx: &Context, f: impl Fn(&mut Graph, &[Var]) -> webdistill::Result<Var>) {
        let mut g = Graph::new();
        let vars: Vec<Var> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if self.u32_inputs.contains(&i) {
                    g.labels(&format!("x{i}"), &t.shape, self.classes).unwrap()
                } else {
                    g.input(&format!("x{i}"), &t.shape).unwrap()
                }
            })
            .collect();
        let y = f(&mut g, &vars).expect("build");
        g.keep(y);
        let yshape = g.shape(y).to_vec();
        let r = rand_tensor(&yshape, 99);
        let mut grads = vec![];
        let mut loss = None;
        if self.grad {
            let rv = g.constant(&yshape, &r.to_f32()).unwrap();
            let yr = g.mul(y, rv).unwrap();
            let l = g.sum_all(yr).unwrap();
            let wrt: Vec<Var> = vars
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.u32_inputs.contains(i) && !self.data_inputs.contains(i))
                .map(|(_, v)| *v)
                .collect();
            let gs = g.gradients(l, &wrt).unwrap();
            for (v, gv) in wrt.iter().zip(gs) {
                let gv = gv.unwrap_or_else(|| panic!("{}: no gradient for an input", self.name));
                g.keep(gv);
                grads.push((*v, gv));
            }
            loss = Some(l);
        }
        let mut store = Store::new(0);
        let plan = Plan::compile(ctx, &g, &mut store, self.name).unwrap_or_else(|e| panic!("{}: compile: {e}", self.name));
        for (i, (v, t)) in vars.iter().zip(&self.inputs).enumerate() {
            if self.u32_inputs.contains(&i) {
                plan.write_u32(*v, &t.data.iter().map(|&x| x as u32).collect::<Vec<_>>()).unwrap();
            } else {
                plan.write(*v, &t.to_f32()).unwrap();
            }
        }
        plan.step().unwrap();
        // CPU reference on f32-rounded inputs (what the GPU saw).
        let feeds: HashMap<Var, CpuTensor> = vars
            .iter()
            .zip(&self.inputs)
            .map(|(v, t)| (*v, CpuTensor::new(&t.shape, t.to_f32().iter().map(|&x| x as f64).collect())))
            .collect();
        let want = g.eval_cpu(&feeds).unwrap();
        let got = plan.read(y).unwrap();
        assert_close(&format!("{} forward", self.name), &got, &want[&y].data, self.fwd_tol.0, self.fwd_tol.1);
        let Some(loss) = loss else { return };
        let f64_loss = |feeds: &HashMap<Var, CpuTensor>| -> f64 { g.eval_cpu(feeds).unwrap()[&loss].data[0] };
        for (v, gv) in grads {
            let got = plan.read(gv).unwrap();
            let x = &feeds[&v];
            let n = x.numel();
            // All elements when small, else a deterministic sample of 64.
            let idx: Vec<usize> = if n <= 256 { (0..n).collect() } else { (0..64).map(|k| (k * 7919 + 13) % n).collect() };
            let mut fd = Vec::new();
            let mut gsel = Vec::new();
            for &j in &idx {
                let h = 1e-6 * (1.0 + x.data[j].abs());
                let mut fp = feeds.clone();
                fp.get_mut(&v).unwrap().data[j] += h;
                let mut fm = feeds.clone();
                fm.get_mut(&v).unwrap().data[j] -= h;
                fd.push((f64_loss(&fp) - f64_loss(&fm)) / (2.0 * h));
                gsel.push(got[j]);
            }
            assert_close(&format!("{} gradient of input {:?}", self.name, v), &gsel, &fd, self.bwd_tol.0, self.bwd_tol.1);
        }
    }
}

/// Compile and run a graph once; read the kept vars.
pub fn run(g: &Graph, writes: &[(Var, Vec<f32>)], reads: &[Var]) -> Vec<Vec<f32>> {
    let ctx = ctx();
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx, g, &mut store, "run").unwrap();
    for (v, d) in writes {
        plan.write(*v, d).unwrap();
    }
    plan.step().unwrap();
    reads.iter().map(|&v| plan.read(v).unwrap()).collect()
}

pub fn dtype_of(g: &Graph, v: Var) -> DType {
    g.dtype(v)
}
