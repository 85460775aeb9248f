// BatchNorm2d over NCHW maps, as PyTorch: statistics per channel over N*H*W elements, with a
// fused epilogue y = act(bn(x) [+ residual]), act none, ReLU or ReLU6 (ResNet's bn + add +
// relu, MobileNetV2's bn + relu6 and bn + skip).
//   bn_train     one workgroup per channel: mean, biased variance (two passes), normalise,
//                save mean and 1/std (one [2, C] tensor) for the backward pass, and update the
//                running stats in place (momentum, unbiased variance) and num_batches_tracked
//                (channel 0).
//   bn_backward  one workgroup per channel: the activation's mask from the saved output y,
//                g = dy * mask, sum(g), sum(g * xhat), then dx, dweight, dbias, and
//                d(residual) = g when there is a residual behind an activation.
//   bn_eval      elementwise with the running stats.
//   bn_act_grad  elementwise g = dy * mask(y) (the evaluation-mode backward).
// bn_backward_serial does the same with one thread per channel and no barriers: better when a
// channel has few elements (small maps, many channels) and barriers are expensive. (A serial
// bn_train gave gradients 1e-2 off PyTorch's in the resnet20 train-step golden and was removed.)
// bn_train and bn_backward sum through the wg_reduce header (tree or subgroups).

struct BnP {
    n: u32, c: u32, hw: u32, m: u32,
    eps: f32, momentum: f32, unbias: f32, affine: u32,
    // act: 0 none, 1 ReLU, 2 ReLU6. res: forward adds the residual (binding 9 of bn_train,
    // 7 of bn_eval); backward writes d(residual) (binding 9).
    act: u32, res: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> bp: BnP;
// At most 9 storage bindings (what the library asks of a device, see src/embed):
// bn_train: x, w, b, y, stats (mean, rstd), running_mean, running_var, num_batches_tracked,
//           residual
// bn_backward: dy, x, w, dx, stats, dw, db, y, dresidual
// bn_eval: x, w, b, y, running_mean, running_var, residual
// bn_act_grad: dy, y, g
@group(0) @binding(1) var<storage, read_write> b1: array<f32>;
@group(0) @binding(2) var<storage, read_write> b2: array<f32>;
@group(0) @binding(3) var<storage, read_write> b3: array<f32>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;
@group(0) @binding(7) var<storage, read_write> b7: array<f32>;
// Binding 8: the counter in bn_train, the saved output y in the backward kernels (never both
// views in one entry point).
@group(0) @binding(8) var<storage, read_write> bcount: array<u32>;
@group(0) @binding(8) var<storage, read_write> b8: array<f32>;
@group(0) @binding(9) var<storage, read_write> b9: array<f32>;

fn bn_act(v: f32) -> f32 {
    if (bp.act == 1u) { return max(v, 0.0); }
    if (bp.act == 2u) { return clamp(v, 0.0, 6.0); }
    return v;
}

// dy where the activation passes its input on (y > 0, and y < 6 for ReLU6), else 0.
fn bn_mask(dy: f32, y: f32) -> f32 {
    let on = bp.act == 0u || (y > 0.0 && (bp.act == 1u || y < 6.0));
    return select(0.0, dy, on);
}

// The backward kernels' gradient at element i: dy (binding 1) masked by the output (binding 8).
fn bn_grad_at(i: u32) -> f32 {
    if (bp.act == 0u) { return b1[i]; }
    return bn_mask(b1[i], b8[i]);
}

// Thread lid visits elements lid, lid + 256, ... of its channel: (sample, pixel) pairs walked
// without a division per element (llvmpipe scalarises integer division lane by lane).
struct BnWalk { n: u32, p: u32, dn: u32, dp: u32 }

fn bn_walk(lid: u32) -> BnWalk {
    return BnWalk(lid / bp.hw, lid % bp.hw, 256u / bp.hw, 256u % bp.hw);
}

fn bn_next(w: BnWalk) -> BnWalk {
    var r = BnWalk(w.n + w.dn, w.p + w.dp, w.dn, w.dp);
    if (r.p >= bp.hw) { r.p = r.p - bp.hw; r.n = r.n + 1u; }
    return r;
}

fn bn_off(c: u32, w: BnWalk) -> u32 {
    return (w.n * bp.c + c) * bp.hw + w.p;
}

@compute @workgroup_size(256)
fn bn_train(@builtin(workgroup_id) wid: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let c = wid.x;
    var s = 0.0;
    var w = bn_walk(lid);
    for (var e = lid; e < bp.m; e = e + 256u) { s = s + b1[bn_off(c, w)]; w = bn_next(w); }
    let mean = wg_sum(ids, s) / f32(bp.m);
    var v = 0.0;
    w = bn_walk(lid);
    for (var e = lid; e < bp.m; e = e + 256u) { let d = b1[bn_off(c, w)] - mean; v = v + d * d; w = bn_next(w); }
    let var_b = wg_sum(ids, v) / f32(bp.m);
    let rstd = inverseSqrt(var_b + bp.eps);
    var scale = rstd;
    var shift = -mean * rstd;
    if (bp.affine != 0u) {
        scale = rstd * b2[c];
        shift = b3[c] - mean * scale;
    }
    w = bn_walk(lid);
    for (var e = lid; e < bp.m; e = e + 256u) {
        let i = bn_off(c, w);
        var o = b1[i] * scale + shift;
        if (bp.res != 0u) { o = o + b9[i]; }
        b4[i] = bn_act(o);
        w = bn_next(w);
    }
    if (lid == 0u) {
        b5[c] = mean;
        b5[bp.c + c] = rstd;
        b6[c] = (1.0 - bp.momentum) * b6[c] + bp.momentum * mean;
        b7[c] = (1.0 - bp.momentum) * b7[c] + bp.momentum * var_b * bp.unbias;
        if (c == 0u) { bcount[0] = bcount[0] + 1u; }
    }
}

@compute @workgroup_size(256)
fn bn_backward(@builtin(workgroup_id) wid: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let c = wid.x;
    let mean = b5[c];
    let rstd = b5[bp.c + c];
    var sdy = 0.0;
    var sdyx = 0.0;
    var w = bn_walk(lid);
    for (var e = lid; e < bp.m; e = e + 256u) {
        let i = bn_off(c, w);
        let dy = bn_grad_at(i);
        sdy = sdy + dy;
        sdyx = sdyx + dy * (b2[i] - mean) * rstd;
        w = bn_next(w);
    }
    // Both sums in one reduction.
    let t = wg_sum2(ids, vec2<f32>(sdy, sdyx));
    var wt = 1.0;
    if (bp.affine != 0u) { wt = b3[c]; }
    let k = wt * rstd;
    let a = t.x / f32(bp.m);
    let b = t.y / f32(bp.m);
    w = bn_walk(lid);
    for (var e = lid; e < bp.m; e = e + 256u) {
        let i = bn_off(c, w);
        let xh = (b2[i] - mean) * rstd;
        let dy = bn_grad_at(i);
        b4[i] = k * (dy - a - xh * b);
        if (bp.res != 0u) { b9[i] = dy; }
        w = bn_next(w);
    }
    if (lid == 0u && bp.affine != 0u) {
        b6[c] = t.y;
        b7[c] = t.x;
    }
}

// One workgroup per (sample, channel) plane (wg_linear), its threads stride over the pixels:
// the channel comes from the workgroup id, with no division per element.
@compute @workgroup_size(256)
fn bn_eval(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let plane = wg_linear(wid, nwg);
    if (plane >= bp.n * bp.c) { return; }
    let c = plane % bp.c;
    let rstd = inverseSqrt(b6[c] + bp.eps);
    var scale = rstd;
    var shift = -b5[c] * rstd;
    if (bp.affine != 0u) {
        scale = rstd * b2[c];
        shift = b3[c] - b5[c] * scale;
    }
    for (var p = lid; p < bp.hw; p = p + 256u) {
        let i = plane * bp.hw + p;
        var o = b1[i] * scale + shift;
        if (bp.res != 0u) { o = o + b7[i]; }
        b4[i] = bn_act(o);
    }
}

// g = dy * mask(y), elementwise (bp.m elements): the evaluation-mode backward's first step.
@compute @workgroup_size(256)
fn bn_act_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= bp.m) { return; }
    b3[i] = bn_mask(b1[i], b2[i]);
}

@compute @workgroup_size(64)
fn bn_backward_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x * 64u + lid;
    if (c >= bp.c) { return; }
    let stride = bp.c * bp.hw;
    let mean = b5[c];
    let rstd = b5[bp.c + c];
    var sdy = 0.0;
    var sdyx = 0.0;
    for (var n = 0u; n < bp.n; n = n + 1u) {
        let o = n * stride + c * bp.hw;
        for (var p = 0u; p < bp.hw; p = p + 1u) {
            let dy = bn_grad_at(o + p);
            sdy = sdy + dy;
            sdyx = sdyx + dy * (b2[o + p] - mean) * rstd;
        }
    }
    var wt = 1.0;
    if (bp.affine != 0u) { wt = b3[c]; }
    let k = wt * rstd;
    let a = sdy / f32(bp.m);
    let b = sdyx / f32(bp.m);
    for (var n = 0u; n < bp.n; n = n + 1u) {
        let o = n * stride + c * bp.hw;
        for (var p = 0u; p < bp.hw; p = p + 1u) {
            let dy = bn_grad_at(o + p);
            b4[o + p] = k * (dy - a - (b2[o + p] - mean) * rstd * b);
            if (bp.res != 0u) { b9[o + p] = dy; }
        }
    }
    if (bp.affine != 0u) {
        b6[c] = sdyx;
        b7[c] = sdy;
    }
}
