// LayerNorm over the channels of NCHW maps (timm's LayerNorm2d, ConvNeXt): every pixel of
// every sample is normalised over its C channel values, which sit hw apart in memory.
//   ln2d_fwd  one thread per (n, pixel): neighbouring threads read neighbouring addresses.
//             Saves mean and 1/std per (n, pixel).
//   ln2d_dx   one thread per (n, pixel): dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),
//             g = dy * weight.
//   ln2d_dwb  one workgroup per channel: dweight = sum(dy * xhat), dbias = sum(dy).

struct L2P { n: u32, c: u32, hw: u32, affine: u32, eps: f32, _q0: f32, _q1: f32, _q2: f32 }
@group(0) @binding(0) var<uniform> lp2: L2P;
// fwd: x, w, b, y, mean, rstd. dx: dy, x, w, dx, mean, rstd. dwb: dy, x, -, -, mean, rstd, dw, db
@group(0) @binding(1) var<storage, read_write> l1: array<f32>;
@group(0) @binding(2) var<storage, read_write> l2: array<f32>;
@group(0) @binding(3) var<storage, read_write> l3: array<f32>;
@group(0) @binding(4) var<storage, read_write> l4: array<f32>;
@group(0) @binding(5) var<storage, read_write> l5: array<f32>;
@group(0) @binding(6) var<storage, read_write> l6: array<f32>;
@group(0) @binding(7) var<storage, read_write> l7: array<f32>;
@group(0) @binding(8) var<storage, read_write> l8: array<f32>;

@compute @workgroup_size(64)
fn ln2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= lp2.n * lp2.hw) { return; }
    let base = (r / lp2.hw) * lp2.c * lp2.hw + r % lp2.hw;
    var s = 0.0;
    for (var c = 0u; c < lp2.c; c = c + 1u) { s = s + l1[base + c * lp2.hw]; }
    let mu = s / f32(lp2.c);
    var v = 0.0;
    for (var c = 0u; c < lp2.c; c = c + 1u) { let d = l1[base + c * lp2.hw] - mu; v = v + d * d; }
    let rs = inverseSqrt(v / f32(lp2.c) + lp2.eps);
    l5[r] = mu;
    l6[r] = rs;
    for (var c = 0u; c < lp2.c; c = c + 1u) {
        let i = base + c * lp2.hw;
        var y = (l1[i] - mu) * rs;
        if (lp2.affine != 0u) { y = y * l2[c] + l3[c]; }
        l4[i] = y;
    }
}

@compute @workgroup_size(64)
fn ln2d_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= lp2.n * lp2.hw) { return; }
    let base = (r / lp2.hw) * lp2.c * lp2.hw + r % lp2.hw;
    let mu = l5[r];
    let rs = l6[r];
    var a = 0.0;
    var b = 0.0;
    for (var c = 0u; c < lp2.c; c = c + 1u) {
        let i = base + c * lp2.hw;
        var g = l1[i];
        if (lp2.affine != 0u) { g = g * l3[c]; }
        a = a + g;
        b = b + g * (l2[i] - mu) * rs;
    }
    a = a / f32(lp2.c);
    b = b / f32(lp2.c);
    for (var c = 0u; c < lp2.c; c = c + 1u) {
        let i = base + c * lp2.hw;
        var g = l1[i];
        if (lp2.affine != 0u) { g = g * l3[c]; }
        l4[i] = rs * (g - a - (l2[i] - mu) * rs * b);
    }
}

var<workgroup> l2d_sh: array<f32, 256>;
var<workgroup> l2d_sh2: array<f32, 256>;

@compute @workgroup_size(256)
fn ln2d_dwb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let m = lp2.n * lp2.hw;
    var sdy = 0.0;
    var sdyx = 0.0;
    for (var r = lid; r < m; r = r + 256u) {
        let i = ((r / lp2.hw) * lp2.c + c) * lp2.hw + r % lp2.hw;
        let dy = l1[i];
        sdy = sdy + dy;
        sdyx = sdyx + dy * (l2[i] - l5[r]) * l6[r];
    }
    l2d_sh[lid] = sdy;
    l2d_sh2[lid] = sdyx;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            l2d_sh[lid] = l2d_sh[lid] + l2d_sh[lid + s];
            l2d_sh2[lid] = l2d_sh2[lid] + l2d_sh2[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        l7[c] = l2d_sh2[0];
        l8[c] = l2d_sh[0];
    }
}
