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
    let r = rand_tensor(g.shape(y), 3).to_f32();
    let rv = g.constant(&g.shape(y).to_vec(), &r).unwrap();
    let yr = g.mul(y, rv).unwrap();
    let loss = g.sum_all(yr).unwrap();
    let mut wrt = vec![qv];
    wrt.extend(bv);
    let grads: Vec<Var> = g.gradients(loss, &wrt).unwrap().into_iter().map(|v| v.unwrap()).collect();
    g.keep(y);
    grads.iter().for_each(|&v| {
        g.keep(v);
    });
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
