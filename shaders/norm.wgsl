// LayerNorm over the last axis (rows x cols): forward saves mean and 1/std per row; the
// backward kernel gives dx from g = dy * weight. Serial = a thread per row, wg = a workgroup
// (reducing through the wg_reduce header: tree or subgroups).

// In the backward kernels `affine` says binding 3 holds the weight and `addend` that binding 7
// holds a tensor to add to dx (the residual stream's gradient).
struct LnP { rows: u32, cols: u32, affine: u32, addend: u32, eps: f32, _q0: f32, _q1: f32, _q2: f32 }
@group(0) @binding(0) var<uniform> lp: LnP;
@group(0) @binding(1) var<storage, read_write> lx: array<f32>;
@group(0) @binding(2) var<storage, read_write> lw: array<f32>;
@group(0) @binding(3) var<storage, read_write> lb: array<f32>;
@group(0) @binding(4) var<storage, read_write> ly: array<f32>;
@group(0) @binding(5) var<storage, read_write> lmean: array<f32>;
@group(0) @binding(6) var<storage, read_write> lrstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> ladd: array<f32>;

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

@compute @workgroup_size(256)
fn ln_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let r = wg_linear(wid, nwg);
    let o = min(r, lp.rows - 1u) * lp.cols;
    var s = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) { s = s + lx[o + c]; }
    let mu = wg_sum(ids, s) / f32(lp.cols);
    var v = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) { let d = lx[o + c] - mu; v = v + d * d; }
    let rs = inverseSqrt(wg_sum(ids, v) / f32(lp.cols) + lp.eps);
    if (r >= lp.rows) { return; }
    if (lid == 0u) { lmean[r] = mu; lrstd[r] = rs; }
    for (var c = lid; c < lp.cols; c = c + 256u) { ln_write(o, c, mu, rs); }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) (+ addend), g = dy * weight; bindings:
// x (1), dy (2), weight (3), dx (4), mean (5), rstd (6), addend (7).
fn ln_g(o: u32, c: u32) -> f32 {
    if (lp.affine != 0u) { return lw[o + c] * lb[c]; }
    return lw[o + c];
}

fn ln_dx_write(o: u32, c: u32, mu: f32, rs: f32, a: f32, b: f32) {
    let xh = (lx[o + c] - mu) * rs;
    var v = rs * (ln_g(o, c) - a - xh * b);
    if (lp.addend != 0u) { v = v + ladd[o + c]; }
    ly[o + c] = v;
}

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
        let g = ln_g(o, c);
        a = a + g;
        b = b + g * (lx[o + c] - mu) * rs;
    }
    a = a / f32(lp.cols);
    b = b / f32(lp.cols);
    for (var c = 0u; c < lp.cols; c = c + 1u) { ln_dx_write(o, c, mu, rs, a, b); }
}

@compute @workgroup_size(256)
fn ln_dx_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let r = wg_linear(wid, nwg);
    let rr = min(r, lp.rows - 1u);
    let o = rr * lp.cols;
    let mu = lmean[rr];
    let rs = lrstd[rr];
    var a = 0.0;
    var b = 0.0;
    for (var c = lid; c < lp.cols; c = c + 256u) {
        let g = ln_g(o, c);
        a = a + g;
        b = b + g * (lx[o + c] - mu) * rs;
    }
    a = wg_sum(ids, a) / f32(lp.cols);
    b = wg_sum(ids, b) / f32(lp.cols);
    if (r >= lp.rows) { return; }
    for (var c = lid; c < lp.cols; c = c + 256u) { ln_dx_write(o, c, mu, rs, a, b); }
}

// dweight = sum_rows(dy * xhat), dbias = sum_rows(dy); bindings: x (1), dy (2), dweight (4),
// mean (5), rstd (6), dbias (7). A workgroup owns CW columns; RP threads share each column's
// rows and add their sums through workgroup memory (RP = 1 on software adapters: no barrier).
override CW: u32 = 64u;
override RP: u32 = 1u;
@group(0) @binding(4) var<storage, read_write> ldw: array<f32>;
@group(0) @binding(7) var<storage, read_write> ldb: array<f32>;
var<workgroup> ln_part: array<vec2<f32>, 256>;

@compute @workgroup_size(CW, RP)
fn ln_dparams(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wg_linear(wid, nwg) * CW + lid.x;
    let cc = min(c, lp.cols - 1u);
    var s = vec2<f32>(0.0);
    for (var r = lid.y; r < lp.rows; r = r + RP) {
        let o = r * lp.cols + cc;
        let dy = lw[o];
        s = s + vec2<f32>(dy * (lx[o] - lmean[r]) * lrstd[r], dy);
    }
    if (RP > 1u) {
        ln_part[lid.y * CW + lid.x] = s;
        workgroupBarrier();
        if (lid.y == 0u) {
            for (var i = 1u; i < RP; i = i + 1u) { s = s + ln_part[i * CW + lid.x]; }
        }
    }
    if (lid.y == 0u && c < lp.cols) {
        ldw[c] = s.x;
        ldb[c] = s.y;
    }
}
