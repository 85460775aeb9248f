// LayerNorm over the last axis (rows x cols): forward saves mean and 1/std per row; the
// backward kernel gives dx from g = dy * weight. Serial = a thread per row, wg = a workgroup.

struct LnP { rows: u32, cols: u32, affine: u32, _p: u32, eps: f32, _q0: f32, _q1: f32, _q2: f32 }
@group(0) @binding(0) var<uniform> lp: LnP;
@group(0) @binding(1) var<storage, read_write> lx: array<f32>;
@group(0) @binding(2) var<storage, read_write> lw: array<f32>;
@group(0) @binding(3) var<storage, read_write> lb: array<f32>;
@group(0) @binding(4) var<storage, read_write> ly: array<f32>;
@group(0) @binding(5) var<storage, read_write> lmean: array<f32>;
@group(0) @binding(6) var<storage, read_write> lrstd: array<f32>;

fn ln_write(o: u32, c: u32, mu: f32, rs: f32) {
    var v = (lx[o + c] - mu) * rs;
    if (lp.affine != 0u) { v = v * lw[c] + lb[c]; }
    ly[o + c] = v;
}

@compute @workgroup_size(64)
fn ln_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= lp.rows) { return; }
    let o = r * lp.cols;
    var s = 0.0;
    for (var c = 0u; c < lp.cols; c = c + 1u) { s = s + lx[o + c]; }
    let mu = s / f32(lp.cols);
    var v = 0.0;
    for (var c = 0u; c < lp.cols; c = c + 1u) { let d = lx[o + c] - mu; v = v + d * d; }
    let rs = inverseSqrt(v / f32(lp.cols) + lp.eps);
    lmean[r] = mu;
    lrstd[r] = rs;
    for (var c = 0u; c < lp.cols; c = c + 1u) { ln_write(o, c, mu, rs); }
}

var<workgroup> ln_sh: array<f32, 256>;

fn ln_sum(lid: u32, v: f32) -> f32 {
    ln_sh[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { ln_sh[lid] = ln_sh[lid] + ln_sh[lid + s]; }
        workgroupBarrier();
    }
    let r = ln_sh[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn ln_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg);
    let o = min(r, lp.rows - 1u) * lp.cols;
    var s = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) { s = s + lx[o + c]; }
    let mu = ln_sum(lid, s) / f32(lp.cols);
    var v = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) { let d = lx[o + c] - mu; v = v + d * d; }
    let rs = inverseSqrt(ln_sum(lid, v) / f32(lp.cols) + lp.eps);
    if (r >= lp.rows) { return; }
    if (lid == 0u) { lmean[r] = mu; lrstd[r] = rs; }
    for (var c = lid; c < lp.cols; c = c + 256u) { ln_write(o, c, mu, rs); }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); bindings: x (1), g (2), dx (4),
// mean (5), rstd (6). lw/lb unused.
@compute @workgroup_size(64)
fn ln_dx_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= lp.rows) { return; }
    let o = r * lp.cols;
    let mu = lmean[r];
    let rs = lrstd[r];
    var a = 0.0;
    var b = 0.0;
    for (var c = 0u; c < lp.cols; c = c + 1u) {
        let g = lw[o + c];
        a = a + g;
        b = b + g * (lx[o + c] - mu) * rs;
    }
    a = a / f32(lp.cols);
    b = b / f32(lp.cols);
    for (var c = 0u; c < lp.cols; c = c + 1u) {
        let xh = (lx[o + c] - mu) * rs;
        ly[o + c] = rs * (lw[o + c] - a - xh * b);
    }
}

@compute @workgroup_size(256)
fn ln_dx_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg);
    let rr = min(r, lp.rows - 1u);
    let o = rr * lp.cols;
    let mu = lmean[rr];
    let rs = lrstd[rr];
    var a = 0.0;
    var b = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) {
        let g = lw[o + c];
        a = a + g;
        b = b + g * (lx[o + c] - mu) * rs;
    }
    a = ln_sum(lid, a) / f32(lp.cols);
    b = ln_sum(lid, b) / f32(lp.cols);
    if (r >= lp.rows) { return; }
    for (var c = lid; c < lp.cols; c = c + 256u) {
        let xh = (lx[o + c] - mu) * rs;
        ly[o + c] = rs * (lw[o + c] - a - xh * b);
    }
}
