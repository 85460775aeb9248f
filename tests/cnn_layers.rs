//! CNN layers: GPU forward vs the f64 CPU references, GPU backward vs central differences of
//! those references, on odd sizes (not multiples of any tile), stride 2, padding, groups and
//! depthwise; both kernel families (register and shared-memory tiled).

mod common;
use common::{OpCase, assert_close, ctx, rand_tensor};
use webdistill::gpu::{KernelProfile, MatmulVariant};
use webdistill::graph::{CpuTensor, DType, Graph, Plan, Var};
use webdistill::ops::conv::{ConvGeom, conv2d_dw_cpu, conv2d_dx_cpu};
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

/// x feeds two convolutions: its gradient is a sum, which the second input gradient's
/// dispatch adds itself (the addend: no `add` dispatch), in every input-gradient kernel.
fn check_conv_addend(c: &Context, what: &'static str) {
    for &(xs, ws, stride, pad, groups, _) in CONV_CASES {
        let inputs = vec![rand_tensor(&xs, 11), rand_tensor(&ws, 12), rand_tensor(&ws, 13)];
        let spec = Conv2dSpec::new(stride, pad, groups);
        let build = |g: &mut Graph, v: &[Var]| {
            let a = g.conv2d(v[0], v[1], None, spec)?;
            let b = g.conv2d(v[0], v[2], None, spec)?;
            g.sub(a, b)
        };
        OpCase::new(what, inputs.clone()).tol((1e-5, 1e-4), (1e-3, 1e-2)).check_on(c, build);
        let mut g = Graph::new();
        let v: Vec<Var> = inputs.iter().enumerate().map(|(i, t)| g.input(&format!("x{i}"), &t.shape).unwrap()).collect();
        let y = build(&mut g, &v).unwrap();
        let l = g.sum_all(y).unwrap();
        let dx = g.gradients(l, &v[..1]).unwrap()[0].unwrap();
        g.keep(dx);
        let plan = Plan::compile(c, &g, &mut Store::new(0), what).unwrap();
        let labels = plan.dispatch_labels();
        assert!(!labels.iter().any(|l| l.starts_with("add:")), "{what} {xs:?} {ws:?}: {labels:?}");
    }
}

#[test]
fn conv2d_input_gradient_addend() {
    let c = ctx();
    check_conv_addend(&c.with_profile(KernelProfile { matmul: MatmulVariant::Register, ..c.profile.clone() }), "conv addend (register)");
    check_conv_addend(&c.with_profile(KernelProfile { matmul: MatmulVariant::Tiled, ..c.profile.clone() }), "conv addend (tiled)");
}

/// conv2d_backward (both gradients from one node, the split weight gradient finished by the
/// input gradient's dispatch): x = u * p depends on a parameter and feeds two convolutions
/// (a gradient sum in the addend); gradients of both weights and of p against the f64
/// references, in every kernel path.
fn check_conv_backward(c: &Context, what: &str) {
    for &(xs, ws, stride, pad, groups, bias) in CONV_CASES {
        let spec = Conv2dSpec::new(stride, pad, groups);
        let geom = ConvGeom::new(&xs, &ws, spec).unwrap();
        let (u, p0) = (rand_tensor(&xs, 21), rand_tensor(&[1, xs[1], 1, 1], 22).map(|v| 1.0 + 0.5 * v));
        let (wa0, wb0, b0) = (rand_tensor(&ws, 23), rand_tensor(&ws, 24), rand_tensor(&[ws[0]], 25));
        let r = rand_tensor(&geom.y_shape(), 26);
        let mut store = Store::new(0);
        let param = |s: &mut Store, name: &str, t: &CpuTensor| s.param(name, &t.shape, Init::Values(t.to_f32().into())).unwrap();
        let (pp, wa, wb, bb) =
            (param(&mut store, "p", &p0), param(&mut store, "wa", &wa0), param(&mut store, "wb", &wb0), param(&mut store, "b", &b0));
        let mut g = Graph::new();
        let uv = g.input("u", &xs).unwrap();
        let (pv, wav, wbv, bv) = (g.param(&pp), g.param(&wa), g.param(&wb), g.param(&bb));
        let x = g.mul(uv, pv).unwrap();
        let ya = g.conv2d(x, wav, bias.then_some(bv), spec).unwrap();
        let yb = g.conv2d(x, wbv, None, spec).unwrap();
        let y = g.add(ya, yb).unwrap();
        let rv = g.constant(&geom.y_shape(), &r.to_f32()).unwrap();
        let yr = g.mul(y, rv).unwrap();
        let l = g.sum_all(yr).unwrap();
        g.keep(l);
        g.backward(l).unwrap();
        let plan = Plan::compile(c, &g, &mut store, "conv2d_backward").unwrap();
        let labels = plan.dispatch_labels();
        assert!(labels.iter().any(|l| l.starts_with("conv2d_backward:")), "{what} {xs:?} {ws:?}: {labels:?}");
        assert_eq!(labels.iter().filter(|l| l.starts_with("add:")).count(), 1, "{what} {xs:?} {ws:?}: {labels:?}");
        plan.write(uv, &u.to_f32()).unwrap();
        plan.step().unwrap();
        // References on the f32-rounded values.
        let f = |t: &CpuTensor| CpuTensor::new(&t.shape, t.to_f32().iter().map(|&v| v as f64).collect());
        let (u, p0, wa0, wb0, r) = (f(&u), f(&p0), f(&wa0), f(&wb0), f(&r));
        let hw = xs[2] * xs[3];
        let xv = CpuTensor::new(&xs, u.data.iter().enumerate().map(|(i, v)| v * p0.data[(i / hw) % xs[1]]).collect());
        let dw = conv2d_dw_cpu(&xv, &r, &geom);
        let (da, db) = (conv2d_dx_cpu(&r, &wa0, &geom), conv2d_dx_cpu(&r, &wb0, &geom));
        let mut dp = vec![0.0; xs[1]];
        for i in 0..u.numel() {
            dp[(i / hw) % xs[1]] += (da.data[i] + db.data[i]) * u.data[i];
        }
        let name = format!("{what} {xs:?} {ws:?} stride {stride}");
        assert_close(&format!("{name}: d wa"), &store.read_grad(&wa).unwrap(), &dw.data, 1e-4, 1e-4);
        assert_close(&format!("{name}: d wb"), &store.read_grad(&wb).unwrap(), &dw.data, 1e-4, 1e-4);
        assert_close(&format!("{name}: d p"), &store.read_grad(&pp).unwrap(), &dp, 1e-4, 1e-4);
    }
}

#[test]
fn conv2d_backward_register_kernels() {
    let c = ctx();
    check_conv_backward(&c.with_profile(KernelProfile { matmul: MatmulVariant::Register, ..c.profile.clone() }), "register");
}

#[test]
fn conv2d_backward_tiled_kernels() {
    let c = ctx();
    check_conv_backward(&c.with_profile(KernelProfile { matmul: MatmulVariant::Tiled, ..c.profile.clone() }), "tiled");
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

/// act(bn(x) [+ residual]) in train and eval mode, for every activation, with and without
/// the residual, against the f64 reference and central differences.
fn check_bn_act(c: &Context, kernels: &str, shape: &[usize]) {
    for train in [true, false] {
        for act in [Unary::Identity, Unary::Relu, Unary::Relu6] {
            for residual in [false, true] {
                // Train: x, w, b, running mean, running var, counter, [residual]; eval: no counter.
                let mut inputs = bn_inputs(shape, 70);
                if !train {
                    inputs.pop();
                }
                let r = inputs.len();
                if residual {
                    // Wide enough to cross ReLU6's upper edge too.
                    inputs.push(rand_tensor(shape, 77).map(|v| 7.0 * v));
                }
                let name = format!("batch_norm_act {kernels} {shape:?} train {train} {act:?} residual {residual}");
                let mut case = OpCase::new(Box::leak(name.into_boxed_str()), inputs).data(3).data(4).tol((1e-5, 1e-4), (2e-3, 1e-2));
                if train {
                    case = case.labels(5, 1000);
                }
                case.check_on(c, |g, v| {
                    // Evaluation reads no counter.
                    let nbt = if train { v[5] } else { v[0] };
                    let vars =
                        BnVars { weight: Some(v[1]), bias: Some(v[2]), running_mean: v[3], running_var: v[4], num_batches_tracked: nbt };
                    g.batch_norm_act(v[0], &vars, 1e-5, 0.1, train, residual.then(|| v[r]), act)
                });
            }
        }
    }
}

#[test]
fn batch_norm_fused_epilogue_serial_kernels() {
    // Small channels: the one-thread-per-channel backward on every profile.
    check_bn_act(&ctx(), "serial", &[3, 5, 7, 7]);
    check_bn_act(&ctx(), "serial", &[2, 9, 3, 1]);
}

#[test]
fn batch_norm_fused_epilogue_workgroup_kernels() {
    // serial_row_max 0: the workgroup-per-channel backward.
    let c = ctx();
    let c = c.with_profile(KernelProfile { serial_row_max: 0, ..c.profile.clone() });
    check_bn_act(&c, "workgroup", &[3, 5, 7, 7]);
    check_bn_act(&c, "workgroup", &[2, 9, 3, 1]);
}

#[test]
fn resnet_block_epilogues_leave_no_elementwise_dispatches() {
    // conv -> bn+relu -> conv -> bn+add+relu, trained: no relu or relu-gradient dispatches
    // remain, and the block's values and gradients match the references.
    let ctx = ctx();
    let x = rand_tensor(&[2, 4, 5, 5], 80);
    let bn = bn_inputs(&[2, 4, 5, 5], 83);
    let bn2 = bn_inputs(&[2, 4, 5, 5], 84);
    // x, conv1, conv2, bn1 weight and bias, bn2 weight and bias, running stats, counter.
    let mut inputs = vec![x, rand_tensor(&[4, 4, 3, 3], 81), rand_tensor(&[4, 4, 3, 3], 82)];
    inputs.extend([bn[1].clone(), bn[2].clone(), bn2[1].clone(), bn2[2].clone(), bn[3].clone(), bn[4].clone(), bn[5].clone()]);
    let block = |g: &mut Graph, v: &[Var]| -> webdistill::Result<Var> {
        // x comes from a node, as a block input does inside a network.
        let x = g.scale(v[0], 1.0)?;
        let spec = Conv2dSpec::new(1, 1, 1);
        let bn = |w: usize| BnVars {
            weight: Some(v[w]),
            bias: Some(v[w + 1]),
            running_mean: v[7],
            running_var: v[8],
            num_batches_tracked: v[9],
        };
        let h = g.conv2d(x, v[1], None, spec)?;
        let h = g.batch_norm_act(h, &bn(3), 1e-5, 0.1, true, None, Unary::Relu)?;
        let h = g.conv2d(h, v[2], None, spec)?;
        g.batch_norm_act(h, &bn(5), 1e-5, 0.1, true, Some(x), Unary::Relu)
    };
    OpCase::new("resnet block, fused", inputs.clone()).data(7).data(8).labels(9, 1000).tol((1e-5, 1e-4), (2e-3, 1e-2)).check(block);
    let mut g = Graph::new();
    let v: Vec<Var> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| if i == 9 { g.labels("nbt", &t.shape, 1000) } else { g.input(&format!("x{i}"), &t.shape) }.unwrap())
        .collect();
    let y = block(&mut g, &v).unwrap();
    let l = g.sum_all(y).unwrap();
    let gs = g.gradients(l, &v[..7]).unwrap();
    for gv in gs.into_iter().flatten() {
        g.keep(gv);
    }
    let mut store = Store::new(0);
    let plan = Plan::compile(&ctx, &g, &mut store, "fused block").unwrap();
    let labels = plan.dispatch_labels();
    for bad in ["relu:", "unary_grad:"] {
        assert!(!labels.iter().any(|l| l.starts_with(bad)), "{bad} in {labels:?}");
    }
    // The one gradient sum (x feeds conv1 and the residual) folds into conv1's input gradient.
    assert!(labels.iter().filter(|l| l.starts_with("add:")).count() <= 1, "{labels:?}");
}

#[test]
fn cross_entropy_writes_its_gradient_in_the_forward_pass() {
    // The loss and d loss / d logits from one pass: differentiating the loss itself needs no
    // seed fill and no gradient dispatch (one dispatch in all for up to 2048 rows; a per-row
    // pass and a reduction past that). Hard labels and soft targets, smoothed or not, against
    // the f64 softmax formulas. (tests/ops.rs checks a loss that is scaled further.)
    let ctx = ctx();
    for (rows, cols) in [(13usize, 17usize), (2500, 5)] {
        let z = rand_tensor(&[rows, cols], 90).map(|v| 3.0 * v);
        let labels: Vec<usize> = (0..rows).map(|i| (i * 5 + 3) % cols).collect();
        let t = rand_tensor(&[rows, cols], 91).map(|v| v.abs() + 0.1);
        for soft in [false, true] {
            for eps in [0.0f32, 0.1] {
                let mut g = Graph::new();
                let zv = g.input("z", &[rows, cols]).unwrap();
                let (loss, tv) = if soft {
                    let tv = g.input("t", &[rows, cols]).unwrap();
                    (g.cross_entropy_soft(zv, tv, eps).unwrap(), tv)
                } else {
                    let lv = g.labels("y", &[rows], cols).unwrap();
                    (g.cross_entropy(zv, lv, eps).unwrap(), lv)
                };
                let dz = g.gradients(loss, &[zv]).unwrap()[0].unwrap();
                g.keep(loss);
                g.keep(dz);
                let plan = Plan::compile(&ctx, &g, &mut Store::new(0), "cross entropy").unwrap();
                let want = if rows <= 2048 { 1 } else { 2 };
                assert_eq!(plan.stats().dispatches, want, "{:?}", plan.dispatch_labels());
                plan.write(zv, &z.to_f32()).unwrap();
                if soft {
                    plan.write(tv, &t.to_f32()).unwrap();
                } else {
                    plan.write_u32(tv, &labels.iter().map(|&l| l as u32).collect::<Vec<_>>()).unwrap();
                }
                plan.step().unwrap();
                let (mut lw, mut dw) = (0.0, vec![0.0; rows * cols]);
                let e = eps as f64;
                for r in 0..rows {
                    let zr: Vec<f64> = (0..cols).map(|c| z.data[r * cols + c] as f32 as f64).collect();
                    let mx = zr.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = mx + zr.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                    let tr: Vec<f64> =
                        (0..cols).map(|c| if soft { t.data[r * cols + c] as f32 as f64 } else { (labels[r] == c) as u8 as f64 }).collect();
                    let tsum: f64 = tr.iter().sum();
                    for c in 0..cols {
                        let q = (1.0 - e) * tr[c] + e / cols as f64;
                        lw += q * (lse - zr[c]) / rows as f64;
                        dw[r * cols + c] = ((zr[c] - lse).exp() * ((1.0 - e) * tsum + e) - q) / rows as f64;
                    }
                }
                let what = format!("cross entropy {rows}x{cols} soft {soft} eps {eps}");
                assert_close(&format!("{what}: loss"), &plan.read(loss).unwrap(), &[lw], 1e-6, 1e-5);
                assert_close(&format!("{what}: gradient"), &plan.read(dz).unwrap(), &dw, 1e-7, 1e-4);
            }
        }
    }
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
