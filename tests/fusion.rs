//! Fused kernels and epilogues (issue 14, "fewer, fatter dispatches"): each fusion against
//! the f64 CPU reference (forward) and central differences (backward) on odd sizes, under the
//! software profile (register matmuls, thread-per-row kernels) and the real-GPU one (tiled
//! matmul, workgroup rows), plus the rules of `Graph::add_into` and the other rewrites: they
//! fuse exactly when nothing else can see the difference.

mod common;
use common::{OpCase, assert_close, ctx, rand_tensor};
use std::collections::HashMap;
use webdistill::Context;
use webdistill::Store;
use webdistill::gpu::{KernelProfile, MatmulVariant};
use webdistill::graph::{CpuTensor, Graph, Plan, Var};
use webdistill::ops::Unary;

/// The two kernel families CI runs, the software adapter's (register matmuls, thread-per-row
/// kernels) and a real GPU's (tiled matmul, workgroup reductions and rows), the wide tiled
/// matmul and the scalar register matmul.
fn profiles() -> Vec<(&'static str, Context)> {
    let c = ctx();
    let gpu = KernelProfile { software: false, matmul: MatmulVariant::Tiled, serial_row_max: 256, ..c.profile.clone() };
    let soft = KernelProfile { software: true, matmul: MatmulVariant::Register, serial_row_max: 4096, ..c.profile.clone() };
    // The benchmarks' scalar register matmul: the linear backward's two-dispatch form.
    let scalar = KernelProfile { matmul: MatmulVariant::RegisterScalar, ..soft.clone() };
    // The 128x128 matmul (real GPUs' large problems) with every epilogue: forced, as these
    // sizes never fill a GPU; the linear backward then runs as its two matmuls.
    let wide = KernelProfile { matmul: MatmulVariant::TiledWide, ..gpu.clone() };
    vec![
        ("software", c.with_profile(soft)),
        ("gpu", c.with_profile(gpu)),
        ("gpu tiled-wide", c.with_profile(wide)),
        ("register-scalar", c.with_profile(scalar)),
    ]
}

/// Build `f` over inputs of `shapes` and differentiate sum(y * r) as `OpCase` does; the
/// graph, for looking at what was fused.
fn built(shapes: &[&[usize]], f: &dyn Fn(&mut Graph, &[Var]) -> webdistill::Result<Var>) -> Graph {
    let mut g = Graph::new();
    let vars: Vec<Var> = shapes.iter().enumerate().map(|(i, s)| g.input(&format!("x{i}"), s).unwrap()).collect();
    let y = f(&mut g, &vars).unwrap();
    let ys = g.shape(y).to_vec();
    let r = g.constant(&ys, &rand_tensor(&ys, 99).to_f32()).unwrap();
    let yr = g.mul(y, r).unwrap();
    let l = g.sum_all(yr).unwrap();
    g.gradients(l, &vars).unwrap();
    g
}

fn count(g: &Graph, name: &str) -> usize {
    g.nodes().iter().filter(|n| n.op.name() == name).count()
}

/// Check `f` numerically under both profiles.
fn check(case: &OpCase, f: impl Fn(&mut Graph, &[Var]) -> webdistill::Result<Var>) {
    for (_, c) in profiles() {
        case.check_on(&c, &f);
    }
}

fn tensors(shapes: &[&[usize]], seed: u64) -> Vec<CpuTensor> {
    shapes.iter().enumerate().map(|(i, s)| rand_tensor(s, seed + i as u64)).collect()
}

#[test]
fn matmul_addend_epilogue_all_layouts() {
    // (m, k, n): odd sizes, one 4-aligned (the vec4 kernel with ragged tiles), one tiny.
    for (m, k, n) in [(13, 9, 7), (67, 44, 36), (5, 3, 1)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let sa: &[usize] = if ta { &[k, m] } else { &[m, k] };
            let sb: &[usize] = if tb { &[n, k] } else { &[k, n] };
            let shapes: [&[usize]; 4] = [sa, sb, &[n], &[m, n]];
            let f = move |g: &mut Graph, x: &[Var]| {
                let c = g.matmul_ex(x[0], x[1], ta, tb, Some(x[2]))?;
                let before = g.nodes().len();
                let y = g.add_into(x[3], c)?;
                assert_eq!(g.nodes().len(), before, "add_into added a node instead of fusing");
                Ok(y)
            };
            let g = built(&shapes, &f);
            assert_eq!(count(&g, "add"), 0, "{m}x{k}x{n} ta {ta} tb {tb}: an add dispatch is left");
            check(&OpCase::new("matmul + addend", tensors(&shapes, 1)), f);
        }
    }
}

#[test]
fn matmul_addend_batched_and_through_reshapes() {
    // A batched matmul [3, 5, 7] @ [7, 9] with an addend, and a linear layer whose output
    // (a reshape of the matmul) takes a residual of the input's shape.
    let shapes: [&[usize]; 3] = [&[3, 5, 7], &[7, 9], &[3, 5, 9]];
    check(&OpCase::new("batched + addend", tensors(&shapes, 3)), |g, x| {
        let c = g.matmul(x[0], x[1])?;
        g.add_into(x[2], c)
    });
    let shapes: [&[usize]; 3] = [&[2, 5, 7], &[7, 7], &[7]];
    let f = |g: &mut Graph, x: &[Var]| {
        let h = g.linear(x[0], x[1], Some(x[2]))?;
        let before = g.nodes().len();
        let y = g.add_into(x[0], h)?;
        assert_eq!(g.nodes().len(), before, "the residual was not fused through the reshape");
        Ok(y)
    };
    assert_eq!(count(&built(&shapes, &f), "add"), 0);
    check(&OpCase::new("linear + residual", tensors(&shapes, 4)), f);
}

#[test]
fn add_into_falls_back_when_fusing_would_change_a_value() {
    let shapes: [&[usize]; 3] = [&[6, 5], &[5, 7], &[6, 7]];
    // `c` has another user: fusing would hand it acc + c. Expected acc + c + 2c.
    let another_user = |g: &mut Graph, x: &[Var]| {
        let c = g.matmul(x[0], x[1])?;
        let z = g.scale(c, 2.0)?;
        let before = g.nodes().len();
        let y = g.add_into(x[2], c)?;
        assert_eq!(g.nodes().len(), before + 1, "fused although the matmul output had a user");
        g.add(y, z)
    };
    check(&OpCase::new("fresh with a user", tensors(&shapes, 5)), another_user);
    // The addend is computed after the matmul: the matmul cannot read it.
    let later_acc = |g: &mut Graph, x: &[Var]| {
        let c = g.matmul(x[0], x[1])?;
        let acc = g.scale(x[2], 3.0)?;
        let before = g.nodes().len();
        let y = g.add_into(acc, c)?;
        assert_eq!(g.nodes().len(), before + 1, "fused an addend computed after the op");
        Ok(y)
    };
    check(&OpCase::new("acc after fresh", tensors(&shapes, 6)), later_acc);
    // Broadcasting (a row vector) is not an addend.
    let broadcast = |g: &mut Graph, x: &[Var]| {
        let c = g.matmul(x[0], x[1])?;
        let row = g.sum(x[2], &[0], true)?;
        let c2 = g.matmul(x[0], x[1])?;
        let before = g.nodes().len();
        let y = g.add_into(row, c2)?;
        assert_eq!(g.nodes().len(), before + 1, "fused a broadcast addend");
        g.add(y, c)
    };
    check(&OpCase::new("broadcast acc", tensors(&shapes, 7)), broadcast);
    // A kept tensor keeps its value for the host.
    let mut g = Graph::new();
    let (a, b, acc) = (g.input("a", &[6, 5]).unwrap(), g.input("b", &[5, 7]).unwrap(), g.input("acc", &[6, 7]).unwrap());
    let c = g.matmul(a, b).unwrap();
    g.keep(c);
    let y = g.add_into(acc, c).unwrap();
    assert_ne!(y, c, "fused into a kept tensor");
    // An op without an addend variant (an elementwise map) falls back too.
    let e = g.exp(a).unwrap();
    let a2 = g.input("a2", &[6, 5]).unwrap();
    let y2 = g.add_into(a2, e).unwrap();
    assert_ne!(y2, e);
    assert_eq!(count(&g, "add"), 2);
}

#[test]
fn gradient_sums_fuse_and_respect_shared_gradients() {
    // x feeds two matmuls: its gradient is one matmul plus the other's epilogue.
    let shapes: [&[usize]; 3] = [&[7, 5], &[5, 9], &[5, 3]];
    let f = |g: &mut Graph, x: &[Var]| {
        let p = g.matmul(x[0], x[1])?;
        let q = g.matmul(x[0], x[2])?;
        let s = g.sum(q, &[1], true)?;
        g.add(p, s)
    };
    let g = built(&shapes, &f);
    // Forward add only; the gradient sum of x is fused.
    assert_eq!(count(&g, "add"), 1, "the gradient sum of x was not fused");
    check(&OpCase::new("gradient sum", tensors(&shapes, 8)), f);
    // s = a + b hands the same gradient tensor (a matmul output) to a and b; a also has a
    // gradient of its own. Fusing a's sum into that matmul would give b a's sum.
    let shapes: [&[usize]; 4] = [&[6, 5], &[6, 5], &[5, 4], &[5, 3]];
    let shared = |g: &mut Graph, x: &[Var]| {
        let s = g.add(x[0], x[1])?;
        let t = g.matmul(s, x[2])?;
        let u = g.matmul(x[0], x[3])?;
        let t1 = g.sum(t, &[1], true)?;
        let u1 = g.sum(u, &[1], true)?;
        g.add(t1, u1)
    };
    check(&OpCase::new("shared gradient", tensors(&shapes, 9)), shared);
}

#[test]
fn linear_gelu_linear_fuses_activation_and_its_gradient() {
    // timm's Mlp on odd sizes: fc1 + GELU in one matmul, fc2's dX times gelu'(h) in one,
    // bias gradients from the weight-gradient matmuls.
    for (rows, (din, hid, dout)) in [(&[2usize, 5][..], (7, 13, 3)), (&[3, 4][..], (8, 12, 8))] {
        let xs: Vec<usize> = rows.iter().copied().chain([din]).collect();
        let shapes: [&[usize]; 5] = [&xs, &[hid, din], &[hid], &[dout, hid], &[dout]];
        for u in [Unary::Gelu, Unary::Relu] {
            let f = move |g: &mut Graph, x: &[Var]| {
                let h = g.linear(x[0], x[1], Some(x[2]))?;
                let a = g.unary(h, u)?;
                g.linear(a, x[3], Some(x[4]))
            };
            let g = built(&shapes, &f);
            // The one sum is the test's loss.
            for (op, n) in [("gelu", 0), ("relu", 0), ("unary_grad", 0), ("sum", 1)] {
                assert_eq!(count(&g, op), n, "{op} is left in the MLP's graph");
            }
            assert_eq!(count(&g, "matmul"), 2, "MLP forward matmuls");
            assert_eq!(count(&g, "linear_grad"), 2, "MLP backward: one node per layer");
            let x = rand_tensor(&xs, 10).map(|v| 2.0 * v);
            let mut ins = vec![x];
            ins.extend(tensors(&shapes[1..], 11));
            check(&OpCase::new("linear + act + linear", ins), f);
        }
    }
}

#[test]
fn activation_epilogue_keeps_the_pre_activation() {
    // The pre-activation stays readable (and differentiable) after the activation is fused.
    let shapes: [&[usize]; 2] = [&[9, 6], &[6, 11]];
    let f = |g: &mut Graph, x: &[Var]| {
        let h = g.matmul(x[0], x[1])?;
        let a = g.gelu(h)?;
        let h2 = g.scale(h, 0.5)?;
        g.add(a, h2)
    };
    assert_eq!(count(&built(&shapes, &f), "gelu"), 0);
    let mut ins = tensors(&shapes, 12);
    ins[0] = ins[0].map(|v| 3.0 * v);
    check(&OpCase::new("gelu epilogue + pre-activation", ins), f);
}

#[test]
fn layer_norm_backward_in_two_dispatches_with_residual_addend() {
    // A pre-norm residual: x + linear(LN(x)). d/dx = LN's dx (with the weight inside) plus
    // the residual's gradient as its addend; dweight and dbias from one more kernel.
    for xs in [vec![5usize, 7, 13], vec![2, 520], vec![2, 3, 300]] {
        let d = *xs.last().unwrap();
        let shapes: [&[usize]; 5] = [&xs, &[d], &[d], &[d, d], &[d]];
        let f = |g: &mut Graph, x: &[Var]| {
            let h = g.layer_norm(x[0], Some(x[1]), Some(x[2]), 1e-5)?;
            let h = g.linear(h, x[3], Some(x[4]))?;
            g.add_into(x[0], h)
        };
        let g = built(&shapes, &f);
        // The muls and the sum are the test's own loss, sum(y * r), and its gradient.
        for (op, n) in [("add", 0), ("mul", 3), ("sub", 0), ("sum", 1)] {
            assert_eq!(count(&g, op), n, "{op} is left in the block's backward");
        }
        assert_eq!(count(&g, "layer_norm_dx"), 1);
        assert_eq!(count(&g, "layer_norm_dparams"), 1);
        let mut ins = tensors(&shapes, 13);
        ins[1] = ins[1].map(|v| 1.0 + 0.5 * v);
        ins[3] = ins[3].map(|v| v / (d as f64).sqrt());
        check(&OpCase::new("pre-norm residual", ins).tol((2e-5, 1e-4), (2e-3, 2e-2)), f);
    }
    // Without the affine parameters.
    let f = |g: &mut Graph, x: &[Var]| g.layer_norm(x[0], None, None, 1e-6);
    check(&OpCase::new("layer norm, no affine", vec![rand_tensor(&[4, 3, 11], 14)]), f);
}

/// Run `g` on `ctx` and read `vars`.
fn run_on(ctx: &Context, g: &Graph, writes: &[(Var, &CpuTensor)], reads: &[Var]) -> Vec<Vec<f32>> {
    let mut store = Store::new(0);
    let plan = Plan::compile(ctx, g, &mut store, "fusion").unwrap();
    for (v, t) in writes {
        plan.write(*v, &t.to_f32()).unwrap();
    }
    plan.step().unwrap();
    reads.iter().map(|&v| plan.read(v).unwrap()).collect()
}

#[test]
fn a_long_weight_gradient_is_cut_along_its_rows_on_real_gpus() {
    // dW = dY^T X sums over the layer's 1100 rows while dX's K is the 40 outputs: the tiled
    // pair cuts dW's K into chunks (224 rows each, the last one ragged), leaves their partial
    // dW and bias sums in scratch and adds them up in mm_pair_sum. Every gradient against the
    // f64 reference, with and without a bias, for a layer too short to cut, and with the cut
    // turned off (split_k, WEBDISTILL_SPLIT_K=0).
    let c = ctx();
    for variant in [MatmulVariant::Tiled, MatmulVariant::Tiled64] {
        for (rows, bias, split_k, split) in
            [(1100, true, true, true), (1100, false, true, true), (200, true, true, false), (1100, true, false, false)]
        {
            let cc = c.with_profile(KernelProfile { software: false, matmul: variant, serial_row_max: 256, split_k, ..c.profile.clone() });
            let mut g = Graph::new();
            let x = g.input("x", &[rows, 24]).unwrap();
            let w = g.input("w", &[40, 24]).unwrap();
            let b = bias.then(|| g.input("b", &[40]).unwrap());
            let r = g.input("r", &[rows, 40]).unwrap();
            let y = g.linear(x, w, b).unwrap();
            let yr = g.mul(y, r).unwrap();
            let l = g.sum_all(yr).unwrap();
            let wrt: Vec<Var> = [Some(x), Some(w), b].into_iter().flatten().collect();
            let grads: Vec<Var> = g.gradients(l, &wrt).unwrap().into_iter().map(|v| g.keep(v.unwrap())).collect();
            let mut shapes = vec![vec![rows, 24], vec![40, 24]];
            shapes.extend(b.map(|_| vec![40]));
            shapes.push(vec![rows, 40]);
            let t: Vec<CpuTensor> = shapes.iter().enumerate().map(|(i, s)| rand_tensor(s, 40 + i as u64)).collect();
            let vars: Vec<Var> = [Some(x), Some(w), b, Some(r)].into_iter().flatten().collect();
            let mut store = Store::new(0);
            let plan = Plan::compile(&cc, &g, &mut store, "long dW").unwrap();
            let sums = plan.dispatch_labels().iter().filter(|l| *l == "linear_grad:mm_pair_sum").count();
            assert_eq!(sums, split as usize, "{variant:?} rows {rows} split_k {split_k}: {:?}", plan.dispatch_labels());
            for (v, tt) in vars.iter().zip(&t) {
                plan.write(*v, &tt.to_f32()).unwrap();
            }
            plan.step().unwrap();
            let want = g.eval_cpu(&vars.iter().copied().zip(t.iter().cloned()).collect()).unwrap();
            for (i, gv) in grads.iter().enumerate() {
                let label = format!("{variant:?} rows {rows} bias {bias} split_k {split_k}: gradient {i}");
                assert_close(&label, &plan.read(*gv).unwrap(), &want[gv].data, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn layer_norm_parameter_gradients_match_the_reference_directly() {
    // The fused backward tensors themselves (not only through finite differences): dx with an
    // addend, dweight and dbias, against their f64 references, on rows that are not multiples
    // of the kernels' 16/64 and columns over one workgroup.
    for xs in [vec![37usize, 19], vec![7, 300]] {
        let d = xs[1];
        let mut g = Graph::new();
        let x = g.input("x", &xs).unwrap();
        let w = g.input("w", &[d]).unwrap();
        let b = g.input("b", &[d]).unwrap();
        let r = g.input("r", &xs).unwrap();
        let acc = g.input("acc", &xs).unwrap();
        let y = g.layer_norm(x, Some(w), Some(b), 1e-5).unwrap();
        let yr = g.mul(y, r).unwrap();
        let l = g.sum_all(yr).unwrap();
        let gs = g.gradients(l, &[x, w, b]).unwrap();
        let (dx, dw, db) = (gs[0].unwrap(), gs[1].unwrap(), gs[2].unwrap());
        let dx2 = g.add_into(acc, dx).unwrap();
        assert_eq!(dx2, dx, "the LayerNorm dx did not take the addend");
        for v in [dx2, dw, db] {
            g.keep(v);
        }
        let t: Vec<CpuTensor> =
            [&xs[..], &[d], &[d], &xs[..], &xs[..]].iter().enumerate().map(|(i, s)| rand_tensor(s, 20 + i as u64)).collect();
        // f64 reference by hand: dy = r.
        let f32s = |t: &CpuTensor| CpuTensor::new(&t.shape, t.to_f32().iter().map(|&v| v as f64).collect());
        let (tx, tw, tr, tacc) = (f32s(&t[0]), f32s(&t[1]), f32s(&t[3]), f32s(&t[4]));
        let (rows, cols) = (tx.numel() / d, d);
        let mut mean = CpuTensor::zeros(&[rows]);
        let mut rstd = CpuTensor::zeros(&[rows]);
        for i in 0..rows {
            let row = &tx.data[i * cols..(i + 1) * cols];
            let mu = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
            mean.data[i] = mu;
            rstd.data[i] = 1.0 / (var + 1e-5f32 as f64).sqrt();
        }
        let want_dx = webdistill::ops::norm::layer_norm_dx_cpu(&tx, &tr, &mean, &rstd, Some(&tw));
        let want_dx: Vec<f64> = want_dx.data.iter().zip(&tacc.data).map(|(a, b)| a + b).collect();
        let mut want_dw = vec![0.0; cols];
        let mut want_db = vec![0.0; cols];
        for i in 0..rows {
            for c in 0..cols {
                let dy = tr.data[i * cols + c];
                want_dw[c] += dy * (tx.data[i * cols + c] - mean.data[i]) * rstd.data[i];
                want_db[c] += dy;
            }
        }
        for (name, c) in profiles() {
            let writes = [(x, &t[0]), (w, &t[1]), (b, &t[2]), (r, &t[3]), (acc, &t[4])];
            let got = run_on(&c, &g, &writes, &[dx2, dw, db]);
            assert_close(&format!("{name} {xs:?} dx + addend"), &got[0], &want_dx, 1e-4, 1e-3);
            assert_close(&format!("{name} {xs:?} dweight"), &got[1], &want_dw, 1e-4, 1e-3);
            assert_close(&format!("{name} {xs:?} dbias"), &got[2], &want_db, 1e-4, 1e-3);
        }
    }
}

#[test]
fn fused_matmul_outputs_match_the_reference_directly() {
    // Bias gradient as row sums of dY^T (all matmul kernels), and the GELU-gradient epilogue
    // with an addend, read straight from the fused dispatch.
    for (m, k, n) in [(37, 13, 9), (64, 68, 12), (5, 4, 4)] {
        let mut g = Graph::new();
        let x = g.input("x", &[m, k]).unwrap();
        let w = g.input("w", &[n, k]).unwrap();
        let b = g.input("b", &[n]).unwrap();
        let r = g.input("r", &[m, n]).unwrap();
        let y = g.matmul_ex(x, w, false, true, Some(b)).unwrap();
        let yr = g.mul(y, r).unwrap();
        let l = g.sum_all(yr).unwrap();
        let gs = g.gradients(l, &[x, w, b]).unwrap();
        assert_eq!(count(&g, "sum"), 1, "the bias gradient is not a row sum of the weight gradient's matmul");
        let (dx, dw, db) = (gs[0].unwrap(), gs[1].unwrap(), gs[2].unwrap());
        for v in [dx, dw, db] {
            g.keep(v);
        }
        let t: Vec<CpuTensor> =
            [&[m, k][..], &[n, k], &[n], &[m, n]].iter().enumerate().map(|(i, s)| rand_tensor(s, 30 + i as u64)).collect();
        let f32s = |t: &CpuTensor| t.to_f32().iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (tx, tw, tr) = (f32s(&t[0]), f32s(&t[1]), f32s(&t[3]));
        let want_db: Vec<f64> = (0..n).map(|j| (0..m).map(|i| tr[i * n + j]).sum()).collect();
        let want_dw: Vec<f64> = (0..n * k).map(|e| (0..m).map(|i| tr[i * n + e / k] * tx[i * k + e % k]).sum()).collect();
        let want_dx: Vec<f64> = (0..m * k).map(|e| (0..n).map(|j| tr[e / k * n + j] * tw[j * k + e % k]).sum()).collect();
        for (name, c) in profiles() {
            let got = run_on(&c, &g, &[(x, &t[0]), (w, &t[1]), (b, &t[2]), (r, &t[3])], &[dx, dw, db]);
            assert_close(&format!("{name} {m}x{k}x{n} dx"), &got[0], &want_dx, 1e-4, 1e-3);
            assert_close(&format!("{name} {m}x{k}x{n} dweight"), &got[1], &want_dw, 1e-4, 1e-3);
            assert_close(&format!("{name} {m}x{k}x{n} dbias"), &got[2], &want_db, 1e-4, 1e-3);
        }
    }
    // dX = (dY W) * gelu'(h) + acc through Graph::unary_grad and add_into, against eval_cpu.
    let (m, k, n) = (13, 9, 7);
    let mut g = Graph::new();
    let dy = g.input("dy", &[m, n]).unwrap();
    let w = g.input("w", &[n, k]).unwrap();
    let h = g.input("h", &[m, k]).unwrap();
    let acc = g.input("acc", &[m, k]).unwrap();
    let dx = g.matmul(dy, w).unwrap();
    let dh = g.unary_grad(h, dx, Unary::Gelu).unwrap();
    let out = g.add_into(acc, dh).unwrap();
    assert_eq!(g.nodes().len(), 1, "unary_grad and add_into should both fuse into the matmul");
    g.keep(out);
    let t: Vec<CpuTensor> =
        [&[m, n][..], &[n, k], &[m, k], &[m, k]].iter().enumerate().map(|(i, s)| rand_tensor(s, 40 + i as u64)).collect();
    let feeds: HashMap<Var, CpuTensor> = [dy, w, h, acc]
        .iter()
        .zip(&t)
        .map(|(v, t)| (*v, CpuTensor::new(&t.shape, t.to_f32().iter().map(|&x| x as f64).collect())))
        .collect();
    let want = g.eval_cpu(&feeds).unwrap()[&out].data.clone();
    let hd = &feeds[&h].data;
    let (dyd, wd, accd) = (&feeds[&dy].data, &feeds[&w].data, &feeds[&acc].data);
    for e in 0..m * k {
        let s: f64 = (0..n).map(|j| dyd[e / k * n + j] * wd[j * k + e % k]).sum();
        let x = hd[e];
        let dg = 0.5 * (1.0 + webdistill::ops::elementwise::erf64(x / 2f64.sqrt()))
            + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        assert!((want[e] - (s * dg + accd[e])).abs() < 1e-9, "CPU reference of the fused epilogue at {e}");
    }
    for (name, c) in profiles() {
        let got = run_on(&c, &g, &[(dy, &t[0]), (w, &t[1]), (h, &t[2]), (acc, &t[3])], &[out]);
        assert_close(&format!("{name} gelu-gradient epilogue"), &got[0], &want, 1e-5, 1e-4);
    }
}

#[test]
fn transformer_block_forward_and_backward_dispatches() {
    // timm's pre-norm Block, forward and backward with every parameter's gradient and the
    // input's: 7 dispatches forward (LN, qkv, attention, proj + residual, LN, fc1 + GELU,
    // fc2 + residual) and 13 backward (a linear_grad per Linear, two per LayerNorm with the
    // residual gradient as dx's addend, one for attention: two on software adapters), plus
    // the test's loss.
    use webdistill::nn::{Block, Builder, Fwd};
    for (name, c) in profiles() {
        let two_dispatch = name == "register-scalar" || name == "gpu tiled-wide";
        let software = c.profile.software;
        let mut store = Store::new(0);
        let blk = Block::new(&mut Builder::new(&mut store, ""), "blk", 32, 2, 4.0, true, 1e-6, 0.0).unwrap();
        let mut g = Graph::new();
        let x = g.input("x", &[2, 5, 32]).unwrap();
        let y = blk.forward(&mut g, x, &Fwd::eval()).unwrap();
        let r = g.constant(&[2, 5, 32], &rand_tensor(&[2, 5, 32], 3).to_f32()).unwrap();
        let yr = g.mul(y, r).unwrap();
        let l = g.sum_all(yr).unwrap();
        g.keep(l);
        let params = g.params();
        let wrt: Vec<Var> = std::iter::once(x).chain(params.iter().map(|(_, v)| *v)).collect();
        let grads = g.gradients(l, &wrt).unwrap();
        g.keep(grads[0].unwrap());
        let pairs = params.into_iter().zip(&grads[1..]).map(|((p, _), gv)| (p, gv.unwrap())).collect();
        let routed = g.set_param_grads(pairs).unwrap();
        assert_eq!(count(&g, "copy"), 0, "a parameter gradient needed a copy");
        assert_eq!(routed.len(), 12);
        let plan = Plan::compile(&c, &g, &mut store, "block").unwrap();
        let counts: HashMap<String, usize> = plan.dispatch_counts().into_iter().collect();
        let n = |label: &str| counts.iter().filter(|(l, _)| l.starts_with(label)).map(|(_, n)| *n).sum::<usize>();
        for (label, want) in [
            ("layer_norm:", 2),
            ("matmul:", 4),
            ("attention:", 1),
            // The scalar-only benchmark variant has no pair kernel, and the wide one runs
            // the two problems apart: two dispatches each.
            ("linear_grad:", if two_dispatch { 8 } else { 4 }),
            ("layer_norm_dx:", 2),
            ("layer_norm_dparams:", 2),
            // One dispatch on real GPUs, dQ then dK/dV on software adapters.
            ("attention_backward:", if software { 2 } else { 1 }),
            ("add:", 0),
            ("sub:", 0),
            ("gelu:", 0),
            ("unary_grad:", 0),
        ] {
            assert_eq!(n(label), want, "{name}: {label} dispatches in {counts:?}");
        }
        // The loss: mul, sum and its seed fill and broadcast forward; mul backward.
        let budget = 20 + 6 + if two_dispatch { 4 } else { 0 } + software as usize;
        assert!(plan.stats().dispatches <= budget, "{name}: {} dispatches: {counts:?}", plan.stats().dispatches);
    }
}
