//! CNN layers: GPU forward vs the f64 CPU references, GPU backward vs central differences of
//! those references, on odd sizes (not multiples of any tile), stride 2, padding, groups and
//! depthwise; both kernel families (register and shared-memory tiled).

mod common;
use common::{OpCase, assert_close, ctx, rand_tensor};
use webdistill::gpu::{KernelProfile, MatmulVariant};
use webdistill::graph::{CpuTensor, DType, Graph, Plan, Var};
use webdistill::ops::{BnVars, Conv2dSpec, PoolSpec, Unary};
use webdistill::{Context, Init, Store};

/// (input shape, weight shape, stride, padding, groups, bias)
type ConvCase = ([usize; 4], [usize; 4], usize, usize, usize, bool);

const CONV_CASES: &[ConvCase] = &[
    // 3x3 stride 1 pad 1, odd spatial size and channel counts off the 8-channel blocks
    ([2, 3, 7, 9], [5, 3, 3, 3], 1, 1, 1, true),
    // stride 2 with padding, odd input size
    ([2, 4, 9, 7], [10, 4, 3, 3], 2, 1, 1, false),
    // 1x1 stride 2 (ResNet downsample), no padding
    ([2, 6, 7, 7], [9, 6, 1, 1], 2, 0, 1, false),
    // 1x1 stride 1: the matmul route (and with bias: the conv kernels)
    ([2, 8, 5, 6], [12, 8, 1, 1], 1, 0, 1, false),
    ([2, 5, 5, 3], [7, 5, 1, 1], 1, 0, 1, true),
    // grouped
    ([2, 6, 6, 5], [9, 2, 3, 3], 1, 1, 3, true),
    // depthwise 3x3 stride 1 and 2, 7x7 pad 3 (ConvNeXt)
    ([2, 5, 7, 6], [5, 1, 3, 3], 1, 1, 5, false),
    ([2, 5, 9, 8], [5, 1, 3, 3], 2, 1, 5, true),
    ([1, 3, 9, 9], [3, 1, 7, 7], 1, 3, 3, true),
    // channel multiplier 2 (groups == Cin, Cout == 2 Cin): the generic kernels
    ([2, 3, 5, 5], [6, 1, 3, 3], 1, 1, 3, false),
    // 7x7 stride 2 pad 3 (ImageNet stem), 4x4 stride 4 and 2x2 stride 2 (patch stems)
    ([1, 3, 13, 11], [4, 3, 7, 7], 2, 3, 1, false),
    ([2, 3, 8, 12], [5, 3, 4, 4], 4, 0, 1, true),
    ([2, 3, 6, 6], [4, 3, 2, 2], 2, 0, 1, true),
    // wide enough for several channel blocks and pixel workgroups
    ([2, 17, 11, 13], [19, 17, 3, 3], 1, 1, 1, false),
    // widths that are multiples of 4 with stride 1 (the vec4 weight-gradient kernel): 3x3,
    // 5x5, grouped, and 1x1 with bias
    ([2, 5, 6, 8], [9, 5, 3, 3], 1, 1, 1, false),
    ([1, 3, 5, 8], [4, 3, 5, 5], 1, 2, 1, false),
    ([2, 6, 5, 4], [6, 2, 3, 3], 1, 1, 3, false),
    ([2, 4, 3, 8], [6, 4, 1, 1], 1, 0, 1, true),
    // 1x1 over 64 pixels: forward and input gradient through the matmul; grouped 1x1
    ([2, 8, 8, 8], [12, 8, 1, 1], 1, 0, 1, false),
    ([2, 6, 4, 4], [9, 2, 1, 1], 1, 0, 3, true),
    // 1x1 stride 2 (ResNet shortcuts), into 16 and into 64 output pixels
    ([2, 8, 8, 8], [12, 8, 1, 1], 2, 0, 1, false),
    ([2, 16, 16, 16], [32, 16, 1, 1], 2, 0, 1, false),
    // no padding: the stride-1 input gradient pads dy by K-1
    ([2, 3, 7, 9], [4, 3, 3, 3], 1, 0, 1, false),
];

fn check_conv(c: &Context, what: &'static str) {
    for &(xs, ws, stride, pad, groups, bias) in CONV_CASES {
        let mut inputs = vec![rand_tensor(&xs, 1), rand_tensor(&ws, 2)];
        if bias {
            inputs.push(rand_tensor(&[ws[0]], 3));
        }
        let spec = Conv2dSpec::new(stride, pad, groups);
        let case = OpCase::new(what, inputs).tol((1e-5, 1e-4), (1e-3, 1e-2));
        case.check_on(c, |g, v| g.conv2d(v[0], v[1], v.get(2).copied(), spec));
    }
}

#[test]
fn conv2d_register_kernels() {
    let c = ctx();
    let c = c.with_profile(KernelProfile { matmul: MatmulVariant::Register, ..c.profile.clone() });
    check_conv(&c, "conv2d (register)");
}

#[test]
fn conv2d_tiled_kernels() {
    let c = ctx();
    let c = c.with_profile(KernelProfile { matmul: MatmulVariant::Tiled, ..c.profile.clone() });
    check_conv(&c, "conv2d (tiled)");
}

#[test]
fn depthwise_vec4_kernels() {
    // Stride 1, width kept, widths of whole vec4s: the vec4 depthwise kernels, with rows of one
    // and a half 8-pixel blocks, 7x7, and vertical padding other than "same".
    for (xs, k, pad) in
        [([2usize, 5, 6, 8], 3usize, [1usize, 1usize]), ([1, 3, 5, 12], 7, [3, 3]), ([2, 4, 5, 4], 3, [0, 1]), ([1, 2, 3, 4], 5, [2, 2])]
    {
        let c = xs[1];
        let spec = Conv2dSpec { stride: [1, 1], padding: pad, groups: c };
        OpCase::new("depthwise vec4", vec![rand_tensor(&xs, 6), rand_tensor(&[c, 1, k, k], 7), rand_tensor(&[c], 8)])
            .check(|g, v| g.conv2d(v[0], v[1], Some(v[2]), spec));
    }
}

#[test]
fn conv2d_wide_kernel_fallback() {
    // A 1x15 kernel does not fit the row-window kernel: the plain register kernel runs.
    OpCase::new("conv2d 1x15", vec![rand_tensor(&[1, 2, 3, 20], 4), rand_tensor(&[3, 2, 1, 15], 5)])
        .check(|g, v| g.conv2d(v[0], v[1], None, Conv2dSpec { stride: [1, 1], padding: [0, 7], groups: 1 }));
}

fn bn_inputs(shape: &[usize], seed: u64) -> Vec<CpuTensor> {
    let c = shape[1];
    vec![
        rand_tensor(shape, seed).map(|v| 2.0 * v + 0.5),
        rand_tensor(&[c], seed + 1).map(|v| 1.0 + 0.5 * v),
        rand_tensor(&[c], seed + 2),
        rand_tensor(&[c], seed + 3).map(|v| 0.2 * v),
        rand_tensor(&[c], seed + 4).map(|v| 1.0 + 0.5 * v),
        CpuTensor::new(&[1], vec![3.0]),
    ]
}

fn bn_vars(v: &[Var], affine: bool) -> BnVars {
    let k = if affine { 3 } else { 1 };
    BnVars {
        weight: affine.then(|| v[1]),
        bias: affine.then(|| v[2]),
        running_mean: v[k],
        running_var: v[k + 1],
        num_batches_tracked: v[k + 2],
    }
}

#[test]
fn batch_norm_train_forward_and_backward() {
    // Odd sizes; [N, C] (BatchNorm1d-style) and a map with one pixel per sample.
    for shape in [vec![3usize, 5, 7, 9], vec![2, 3, 5, 1], vec![6, 4], vec![5, 3, 1, 1]] {
        let inputs = bn_inputs(&shape, 10);
        OpCase::new("batch_norm train", inputs.clone())
            .data(3)
            .data(4)
            .labels(5, 1000)
            .tol((1e-5, 1e-4), (2e-3, 1e-2))
            .check(|g, v| g.batch_norm(v[0], &bn_vars(v, true), 1e-5, 0.1, true));
        let plain: Vec<CpuTensor> = [0, 3, 4, 5].iter().map(|&i| inputs[i].clone()).collect();
        OpCase::new("batch_norm train, no affine", plain)
            .data(1)
            .data(2)
            .labels(3, 1000)
            .tol((1e-5, 1e-4), (2e-3, 1e-2))
            .check(|g, v| g.batch_norm(v[0], &bn_vars(v, false), 1e-5, 0.1, true));
    }
}

#[test]
fn batch_norm_eval_forward_and_backward() {
    let inputs = bn_inputs(&[2, 5, 3, 7], 20);
    // Gradients flow to x, weight and bias; the running stats are data.
    OpCase::new("batch_norm eval", inputs[..5].to_vec()).data(3).data(4).check(|g, v| {
        let vars = BnVars { weight: Some(v[1]), bias: Some(v[2]), running_mean: v[3], running_var: v[4], num_batches_tracked: v[0] };
        g.batch_norm(v[0], &vars, 1e-5, 0.1, false)
    });
}

#[test]
fn batch_norm_updates_running_stats_like_pytorch() {
    // Two train steps on stored state: running_mean/var follow momentum 0.1 with the unbiased
    // batch variance, num_batches_tracked counts.
    let ctx = ctx();
    let mut store = Store::new(0);
    let (n, c, hw) = (3usize, 4usize, 5usize);
    let w = store.param("bn.weight", &[c], Init::Ones).unwrap();
    let b = store.param("bn.bias", &[c], Init::Zeros).unwrap();
    let rm = store.state("bn.running_mean", &[c], DType::F32, Init::Zeros).unwrap();
    let rv = store.state("bn.running_var", &[c], DType::F32, Init::Ones).unwrap();
    let nbt = store.state("bn.num_batches_tracked", &[1], DType::U32, Init::Zeros).unwrap();
    let mut g = Graph::new();
    let x = g.input("x", &[n, c, 1, hw]).unwrap();
    let vars = BnVars {
        weight: Some(g.param(&w)),
        bias: Some(g.param(&b)),
        running_mean: g.state(&rm),
        running_var: g.state(&rv),
        num_batches_tracked: g.state(&nbt),
    };
    let y = g.batch_norm(x, &vars, 1e-5, 0.1, true).unwrap();
    g.keep(y);
    let plan = Plan::compile(&ctx, &g, &mut store, "bn stats").unwrap();
    let (mut m_ref, mut v_ref) = (vec![0.0f64; c], vec![1.0f64; c]);
    for step in 0..2u64 {
        let xv = rand_tensor(&[n, c, 1, hw], 30 + step).map(|v| 3.0 * v + step as f64);
        plan.write(x, &xv.to_f32()).unwrap();
        plan.step().unwrap();
        for ch in 0..c {
            let vals: Vec<f64> =
                (0..n).flat_map(|s| (0..hw).map(move |p| (s, p))).map(|(s, p)| xv.data[(s * c + ch) * hw + p] as f32 as f64).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let unbiased = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
            m_ref[ch] = 0.9 * m_ref[ch] + 0.1 * mean;
            v_ref[ch] = 0.9 * v_ref[ch] + 0.1 * unbiased;
        }
    }
    assert_close("running_mean", &store.read_state(&rm).unwrap(), &m_ref, 1e-6, 1e-5);
    assert_close("running_var", &store.read_state(&rv).unwrap(), &v_ref, 1e-6, 1e-5);
    assert_eq!(store.read_state(&nbt).unwrap(), vec![2.0]);
}

#[test]
fn layer_norm2d_over_channels() {
    for shape in [[2usize, 5, 3, 7], [3, 40, 2, 2], [2, 3, 1, 1]] {
        let c = shape[1];
        let x = rand_tensor(&shape, 40).map(|v| 2.0 * v + 0.3);
        let w = rand_tensor(&[c], 41).map(|v| 1.0 + 0.5 * v);
        let b = rand_tensor(&[c], 42);
        OpCase::new("layer_norm2d affine", vec![x.clone(), w, b]).check(|g, v| g.layer_norm2d(v[0], Some(v[1]), Some(v[2]), 1e-6));
        OpCase::new("layer_norm2d", vec![x]).check(|g, v| g.layer_norm2d(v[0], None, None, 1e-6));
    }
}

#[test]
fn layer_norm2d_equals_permuted_layer_norm() {
    // The channels-last form (permute, last-axis LayerNorm, permute back) gives the same maps.
    let x = rand_tensor(&[2, 6, 3, 5], 43);
    let w = rand_tensor(&[6], 44).map(|v| 1.0 + v);
    let b = rand_tensor(&[6], 45);
    OpCase::new("channels-last layer_norm", vec![x, w, b]).check(|g, v| {
        let a = g.layer_norm2d(v[0], Some(v[1]), Some(v[2]), 1e-6)?;
        let t = g.permute(v[0], &[0, 2, 3, 1])?;
        let t = g.layer_norm(t, Some(v[1]), Some(v[2]), 1e-6)?;
        let t = g.permute(t, &[0, 3, 1, 2])?;
        // Both paths: the difference is ~0 and the sum carries both gradients.
        let d = g.sub(a, t)?;
        let d = g.scale(d, 1e3)?;
        g.add(d, a)
    });
}

#[test]
fn pooling() {
    let x = rand_tensor(&[2, 3, 9, 11], 50);
    for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0)] {
        OpCase::new("max_pool2d", vec![x.clone()]).check(|g, v| g.max_pool2d(v[0], PoolSpec::new(k, s, p)));
        OpCase::new("avg_pool2d", vec![x.clone()]).check(|g, v| g.avg_pool2d(v[0], PoolSpec::new(k, s, p)));
        let spec = PoolSpec { count_include_pad: false, ..PoolSpec::new(k, s, p) };
        OpCase::new("avg_pool2d exclude pad", vec![x.clone()]).check(|g, v| g.avg_pool2d(v[0], spec));
    }
    OpCase::new("global_avg_pool", vec![x.clone()]).check(|g, v| g.global_avg_pool(v[0]));
}

#[test]
fn layer_scale_residual_and_activations() {
    // ConvNeXt's layer scale (gamma per channel) on a residual branch, then ReLU / ReLU6 / GELU.
    let x = rand_tensor(&[2, 5, 3, 4], 60).map(|v| 4.0 * v);
    let gamma = rand_tensor(&[5], 61);
    let r = rand_tensor(&[2, 5, 3, 4], 62);
    for act in [Unary::Relu, Unary::Relu6, Unary::Gelu] {
        OpCase::new("layer scale + residual + act", vec![x.clone(), gamma.clone(), r.clone()]).check(|g, v| {
            let gm = g.reshape(v[1], &[1, 5, 1, 1])?;
            let s = g.mul(v[0], gm)?;
            let s = g.add(s, v[2])?;
            g.unary(s, act)
        });
    }
}

#[test]
fn drop_path_keeps_or_drops_whole_samples_and_backward_uses_the_same_mask() {
    let mut g = Graph::new();
    let x = g.input("x", &[32, 3, 2, 2]).unwrap();
    let step = g.input_u32("step", &[1]).unwrap();
    let y = g.drop_path(x, 0.25, step, 11).unwrap();
    let r = g.input("r", &[32, 3, 2, 2]).unwrap();
    let yr = g.mul(y, r).unwrap();
    let l = g.sum_all(yr).unwrap();
    let dx = g.gradients(l, &[x]).unwrap()[0].unwrap();
    g.keep(y);
    g.keep(dx);
    let ctx = ctx();
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx, &g, &mut store, "drop path").unwrap();
    let xv: Vec<f32> = (0..384).map(|i| 1.0 + (i % 7) as f32).collect();
    let rv: Vec<f32> = (0..384).map(|i| 0.5 + (i % 5) as f32).collect();
    plan.write(x, &xv).unwrap();
    plan.write(r, &rv).unwrap();
    plan.write_u32(step, &[5]).unwrap();
    plan.step().unwrap();
    let (yv, dv) = (plan.read(y).unwrap(), plan.read(dx).unwrap());
    let mut dropped = 0;
    for s in 0..32 {
        let keep = yv[s * 12] != 0.0;
        dropped += (!keep) as usize;
        for e in s * 12..(s + 1) * 12 {
            let (wy, wd) = if keep { (xv[e] / 0.75, rv[e] / 0.75) } else { (0.0, 0.0) };
            assert!((yv[e] - wy).abs() < 1e-5 && (dv[e] - wd).abs() < 1e-5, "sample {s}: y {} dx {}", yv[e], dv[e]);
        }
    }
    assert!((2..=16).contains(&dropped), "dropped {dropped} of 32 samples at p = 0.25");
}
