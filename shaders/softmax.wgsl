// Softmax and log-softmax over the last axis, numerically stable (max subtracted), and their
// gradients. Serial = one thread per row (short rows, software adapters); wg = one 256-thread
// workgroup per row, reducing through the wg_reduce header (tree or subgroups).

struct SmP { rows: u32, cols: u32, log: u32, _p: u32 }
@group(0) @binding(0) var<uniform> sp: SmP;
@group(0) @binding(1) var<storage, read_write> sx: array<f32>;
@group(0) @binding(2) var<storage, read_write> sy: array<f32>;
@group(0) @binding(3) var<storage, read_write> sdx: array<f32>;

@compute @workgroup_size(64)
fn softmax_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= sp.rows) { return; }
    let o = r * sp.cols;
    var mx = sx[o];
    for (var c = 1u; c < sp.cols; c = c + 1u) { mx = max(mx, sx[o + c]); }
    var s = 0.0;
    for (var c = 0u; c < sp.cols; c = c + 1u) { s = s + exp(sx[o + c] - mx); }
    if (sp.log != 0u) {
        let lse = mx + log(s);
        for (var c = 0u; c < sp.cols; c = c + 1u) { sy[o + c] = sx[o + c] - lse; }
    } else {
        let inv = 1.0 / s;
        for (var c = 0u; c < sp.cols; c = c + 1u) { sy[o + c] = exp(sx[o + c] - mx) * inv; }
    }
}

@compute @workgroup_size(256)
fn softmax_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let r = wg_linear(wid, nwg);
    let o = min(r, sp.rows - 1u) * sp.cols;
    var mx = -3.4e38;
    for (var c = lid; c < sp.cols; c = c + 256u) { mx = max(mx, sx[o + c]); }
    mx = wg_max(ids, mx);
    var s = 0.0;
    for (var c = lid; c < sp.cols; c = c + 256u) { s = s + exp(sx[o + c] - mx); }
    s = wg_sum(ids, s);
    if (r >= sp.rows) { return; }
    if (sp.log != 0u) {
        let lse = mx + log(s);
        for (var c = lid; c < sp.cols; c = c + 256u) { sy[o + c] = sx[o + c] - lse; }
    } else {
        let inv = 1.0 / s;
        for (var c = lid; c < sp.cols; c = c + 256u) { sy[o + c] = exp(sx[o + c] - mx) * inv; }
    }
}

// Bindings: y (1) = forward output, dy (2), dx (3).
// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
@compute @workgroup_size(64)
fn softmax_grad_serial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= sp.rows) { return; }
    let o = r * sp.cols;
    var s = 0.0;
    if (sp.log != 0u) {
        for (var c = 0u; c < sp.cols; c = c + 1u) { s = s + sy[o + c]; }
        for (var c = 0u; c < sp.cols; c = c + 1u) { sdx[o + c] = sy[o + c] - exp(sx[o + c]) * s; }
    } else {
        for (var c = 0u; c < sp.cols; c = c + 1u) { s = s + sy[o + c] * sx[o + c]; }
        for (var c = 0u; c < sp.cols; c = c + 1u) { sdx[o + c] = sx[o + c] * (sy[o + c] - s); }
    }
}

@compute @workgroup_size(256)
fn softmax_grad_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: WgIds) {
    let lid = ids.lid;
    let r = wg_linear(wid, nwg);
    let o = min(r, sp.rows - 1u) * sp.cols;
    var s = 0.0;
    if (sp.log != 0u) {
        for (var c = lid; c < sp.cols; c = c + 256u) { s = s + sy[o + c]; }
    } else {
        for (var c = lid; c < sp.cols; c = c + 256u) { s = s + sy[o + c] * sx[o + c]; }
    }
    s = wg_sum(ids, s);
    if (r >= sp.rows) { return; }
    if (sp.log != 0u) {
        for (var c = lid; c < sp.cols; c = c + 256u) { sdx[o + c] = sy[o + c] - exp(sx[o + c]) * s; }
    } else {
        for (var c = lid; c < sp.cols; c = c + 256u) { sdx[o + c] = sx[o + c] * (sy[o + c] - s); }
    }
}
