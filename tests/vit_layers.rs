//! Token-model layers: fused attention (forward and backward) against the f64 reference, the
//! materialised path and finite differences; gathers with repeated indices; Swin's shifted
//! window attention against a direct CPU reference.

mod common;
use common::{OpCase, assert_close, ctx, rand_tensor};
use webdistill::Store;
use webdistill::graph::{CpuTensor, Graph, Plan, Var};
use webdistill::ops::AttnImpl;

/// qkv [b, n, 3*heads*dh] with values spread enough for peaked softmaxes.
fn qkv(b: usize, n: usize, heads: usize, dh: usize, seed: u64) -> CpuTensor {
    rand_tensor(&[b, n, 3 * heads * dh], seed).map(|v| 2.0 * v)
}

#[test]
fn fused_attention_odd_tokens_and_head_dims() {
    // (batch, tokens, heads, head dim): odd head dims use the masked vec4 loads; 65 and 70
    // tokens cross query and key blocks; 1 token is the degenerate softmax.
    for (b, n, h, dh) in [(2, 13, 2, 5), (1, 65, 4, 8), (2, 70, 1, 36), (1, 1, 3, 7), (1, 37, 1, 128), (1, 9, 2, 3)] {
        OpCase::new("fused attention", vec![qkv(b, n, h, dh, (n * 31 + dh) as u64)])
            .tol((2e-5, 1e-4), (1e-3, 1e-2))
            .check(|g, x| g.attention_with(x[0], h, None, AttnImpl::Fused));
    }
}

#[test]
fn fused_attention_backward_in_one_dispatch_as_real_gpus_run_it() {
    // A real GPU's profile runs dQ and dK/dV as one dispatch, the dK/dV blocks recomputing
    // dvec: tokens across query and key blocks, an odd head dim, a broadcast bias.
    use webdistill::gpu::KernelProfile;
    let c = ctx().with_profile(KernelProfile { software: false, ..ctx().profile.clone() });
    let check_one = |case: OpCase, h: usize, bias: bool| {
        let f = move |g: &mut Graph, x: &[Var]| g.attention_with(x[0], h, bias.then(|| x[1]), AttnImpl::Fused);
        let mut g = Graph::new();
        let vars: Vec<Var> = case.inputs.iter().enumerate().map(|(i, t)| g.input(&format!("x{i}"), &t.shape).unwrap()).collect();
        let y = f(&mut g, &vars).unwrap();
        let l = g.sum_all(y).unwrap();
        let dq = g.gradients(l, &vars[..1]).unwrap()[0].unwrap();
        g.keep(dq);
        let plan = Plan::compile(&c, &g, &mut Store::new(0), "attention backward").unwrap();
        let n = plan.dispatch_labels().iter().filter(|l| l.starts_with("attention_backward:")).collect::<Vec<_>>();
        assert_eq!(n, ["attention_backward:attn_bwd"], "{}", case.name);
        case.tol((2e-5, 1e-4), (1e-3, 1e-2)).check_on(&c, f);
    };
    check_one(OpCase::new("one-dispatch attention backward", vec![qkv(1, 65, 4, 7, 3)]), 4, false);
    let bias = rand_tensor(&[2, 1, 16, 16], 4).map(|v| 3.0 * v);
    check_one(OpCase::new("one-dispatch attention backward + bias", vec![qkv(4, 16, 1, 9, 5), bias]), 1, true);
}

#[test]
fn fused_attention_with_broadcast_bias() {
    // 4 batches, bias groups of 2 (batch b reads bias[b % 2]), as Swin windows read the mask.
    for (b, groups, n, h, dh) in [(4, 2, 7, 3, 4), (3, 1, 11, 2, 6), (2, 2, 16, 1, 9)] {
        let bias = rand_tensor(&[groups, h, n, n], 7).map(|v| 3.0 * v);
        OpCase::new("fused attention + bias", vec![qkv(b, n, h, dh, 5), bias])
            .tol((2e-5, 1e-4), (1e-3, 1e-2))
            .check(|g, x| g.attention_with(x[0], h, Some(x[1]), AttnImpl::Fused));
    }
}

#[test]
fn materialized_attention_matches_reference() {
    let bias = rand_tensor(&[2, 2, 9, 9], 8);
    OpCase::new("materialized attention", vec![qkv(4, 9, 2, 5, 9), bias])
        .check(|g, x| g.attention_with(x[0], 2, Some(x[1]), AttnImpl::Materialized));
    OpCase::new("materialized attention", vec![qkv(2, 13, 3, 4, 10)]).check(|g, x| g.attention_with(x[0], 3, None, AttnImpl::Materialized));
}

#[test]
fn head_dims_over_the_fused_limit_fall_back() {
    // 130 > 128: the call still works, through the materialised path.
    OpCase::new("wide heads", vec![qkv(1, 5, 1, 130, 11)]).check(|g, x| g.attention(x[0], 1, None));
}

/// Output and gradients of sum(attention(qkv, bias) * r) for one implementation.
fn attention_grads(imp: AttnImpl, q: &CpuTensor, bias: Option<&CpuTensor>, heads: usize) -> Vec<Vec<f32>> {
    let mut g = Graph::new();
    let qv = g.input("qkv", &q.shape).unwrap();
    let bv = bias.map(|b| g.input("bias", &b.shape).unwrap());
    let y = g.attention_with(qv, heads, bv, imp).unwrap();
    let ys = g.shape(y).to_vec();
    let rv = g.constant(&ys, &rand_tensor(&ys, 3).to_f32()).unwrap();
    let yr = g.mul(y, rv).unwrap();
    let loss = g.sum_all(yr).unwrap();
    let mut wrt = vec![qv];
    wrt.extend(bv);
    let grads: Vec<Var> = g.gradients(loss, &wrt).unwrap().into_iter().map(|v| v.unwrap()).collect();
    g.keep(y);
    for &v in &grads {
        g.keep(v);
    }
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx(), &g, &mut store, imp.name()).unwrap();
    plan.write(qv, &q.to_f32()).unwrap();
    if let (Some(bv), Some(b)) = (bv, bias) {
        plan.write(bv, &b.to_f32()).unwrap();
    }
    plan.step().unwrap();
    std::iter::once(y).chain(grads).map(|v| plan.read(v).unwrap()).collect()
}

#[test]
fn fused_and_materialized_agree_at_benchmark_size() {
    // The benchmark shape (65 tokens, 128 dims, 4 heads) at batch 3, with and without a bias.
    let q = qkv(3, 65, 4, 32, 21);
    let bias = rand_tensor(&[3, 4, 65, 65], 22);
    for bias in [None, Some(&bias)] {
        let f = attention_grads(AttnImpl::Fused, &q, bias, 4);
        let m = attention_grads(AttnImpl::Materialized, &q, bias, 4);
        for (what, (a, b)) in ["output", "d qkv", "d bias"].iter().zip(f.iter().zip(&m)) {
            let want: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            assert_close(&format!("fused vs materialized {what}"), a, &want, 1e-4, 1e-3);
        }
    }
}

#[test]
fn gather_with_repeats_and_permutations() {
    let x = rand_tensor(&[3, 5, 4], 30);
    // Repeated and unused indices: the gradient sums repeats and leaves row 3 at zero.
    OpCase::new("gather repeats", vec![x.clone()]).check(|g, v| g.gather_axis(v[0], 1, &[4, 0, 0, 2, 4, 4, 1]));
    OpCase::new("gather permutation", vec![x.clone()]).check(|g, v| g.gather_axis(v[0], -1, &[3, 1, 0, 2]));
    OpCase::new("gather axis 0", vec![rand_tensor(&[9, 2], 31)]).check(|g, v| g.gather_axis(v[0], 0, &[8, 8, 8, 0, 5]));
}

/// Shifted-window attention computed directly as timm defines it (roll by -shift, windows,
/// relative position bias, -100 between regions of a shifted window, roll back), in f64.
fn swin_reference(qkv: &CpuTensor, table: &CpuTensor, heads: usize, res: usize, ws: usize, shift: usize) -> Vec<f64> {
    let (b, l, c3) = (qkv.shape[0], qkv.shape[1], qkv.shape[2]);
    let (c, dh) = (c3 / 3, c3 / 3 / heads);
    let scale = (dh as f64).powf(-0.5);
    // Position of token (y, x) after torch.roll(shifts=-shift).
    let rolled = |t: usize| ((t / res + res - shift) % res, (t % res + res - shift) % res);
    let region = |p: usize| {
        if shift == 0 || p < res - ws {
            0
        } else if p < res - shift {
            1
        } else {
            2
        }
    };
    let mut out = vec![0.0; b * l * c];
    for bb in 0..b {
        for h in 0..heads {
            for t in 0..l {
                let (ty, tx) = rolled(t);
                let keys: Vec<usize> = (0..l).filter(|&u| rolled(u).0 / ws == ty / ws && rolled(u).1 / ws == tx / ws).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&u| {
                        let (uy, ux) = rolled(u);
                        let dot: f64 =
                            (0..dh).map(|k| qkv.data[(bb * l + t) * c3 + h * dh + k] * qkv.data[(bb * l + u) * c3 + c + h * dh + k]).sum();
                        let rel = (ty % ws + ws - 1 - uy % ws) * (2 * ws - 1) + (tx % ws + ws - 1 - ux % ws);
                        let masked = region(ty) != region(uy) || region(tx) != region(ux);
                        dot * scale + table.data[rel * heads + h] + if masked { -100.0 } else { 0.0 }
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - mx).exp()).sum();
                for k in 0..dh {
                    out[(bb * l + t) * c + h * dh + k] =
                        keys.iter().zip(&scores).map(|(&u, s)| (s - mx).exp() / z * qkv.data[(bb * l + u) * c3 + 2 * c + h * dh + k]).sum();
                }
            }
        }
    }
    out
}

#[test]
fn swin_shifted_window_attention_matches_direct_reference() {
    use webdistill::models::swin::WindowGeometry;
    // (batch, map size, window, shifted, heads, head dim)
    for (b, res, window, shifted, heads, dh) in
        [(2, 8, 4, true, 2, 3), (1, 8, 4, false, 1, 4), (1, 6, 3, true, 2, 2), (2, 4, 7, true, 3, 2)]
    {
        let geo = WindowGeometry::for_stage(res, window, shifted).unwrap();
        let q = qkv(b, res * res, heads, dh, 40 + res as u64);
        let table = rand_tensor(&[(2 * geo.ws - 1).pow(2), heads], 41);
        let build = |g: &mut Graph, x: &[Var]| -> webdistill::Result<Var> {
            let w = geo.partition(g, x[0])?;
            let bias = geo.bias(g, x[1])?;
            let a = g.attention(w, heads, Some(bias))?;
            geo.reverse(g, a)
        };
        let mut g = Graph::new();
        let vars = [g.input("qkv", &q.shape).unwrap(), g.input("table", &table.shape).unwrap()];
        let y = build(&mut g, &vars).unwrap();
        g.keep(y);
        let got = common::run(&g, &[(vars[0], q.to_f32()), (vars[1], table.to_f32())], &[y]).remove(0);
        let f32_round = |t: &CpuTensor| CpuTensor::from_f32(&t.shape, &t.to_f32());
        let want = swin_reference(&f32_round(&q), &f32_round(&table), heads, res, geo.ws, geo.shift);
        assert_close(&format!("swin window attention {geo:?}"), &got, &want, 2e-5, 1e-4);
        // Gradients of the composed graph (table lookup with repeated indices included).
        OpCase::new("swin window attention", vec![q, table]).tol((2e-5, 1e-4), (1e-3, 1e-2)).check(build);
    }
}

#[test]
fn swin_geometry_matches_timm_rules() {
    use webdistill::models::swin::WindowGeometry;
    // A window at least as large as the map shrinks to it and stops shifting (timm's
    // _calc_window_shift); Swin-T's last stage at 224 px is such a case.
    assert_eq!(WindowGeometry::for_stage(7, 7, true).unwrap(), WindowGeometry { res: 7, ws: 7, shift: 0 });
    assert_eq!(WindowGeometry::for_stage(2, 4, true).unwrap(), WindowGeometry { res: 2, ws: 2, shift: 0 });
    assert_eq!(WindowGeometry::for_stage(56, 7, true).unwrap(), WindowGeometry { res: 56, ws: 7, shift: 3 });
    assert!(WindowGeometry::for_stage(10, 4, false).is_err());
    // timm's relative_position_index for a 2x2 window.
    let geo = WindowGeometry::for_stage(2, 2, false).unwrap();
    assert_eq!(geo.relative_position_index(), [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]);
    // The shift mask of a 4x4 map, 2x2 windows, shift 1: the last window mixes 4 regions.
    let geo = WindowGeometry { res: 4, ws: 2, shift: 1 };
    let m = geo.mask().unwrap();
    assert_eq!(m.len(), 4 * 16);
    assert!(m[..16].iter().all(|&v| v == 0.0));
    assert_eq!(m[3 * 16..3 * 16 + 4], [0.0, -100.0, -100.0, -100.0]);
}
