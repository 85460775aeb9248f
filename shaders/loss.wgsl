// Cross-entropy with integer labels (with label smoothing) or soft targets, fused with a
// stable log-softmax and its gradient (written by the same pass); and top-k correctness
// counts. One thread per row; ce_fused / ce_soft_fused run all rows in one workgroup and
// reduce the mean there too (the whole loss and its gradient in one dispatch).

struct CeP { rows: u32, cols: u32, k: u32, _p: u32, smoothing: f32, scale: f32, _q0: f32, _q1: f32 }
@group(0) @binding(0) var<uniform> cp: CeP;
@group(0) @binding(1) var<storage, read_write> cz: array<f32>;
@group(0) @binding(2) var<storage, read_write> clab: array<u32>;
@group(0) @binding(2) var<storage, read_write> ctgt: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<f32>;
// The gradient dz = scale * d(sum of row losses)/dz (scale = 1/rows for the mean).
@group(0) @binding(4) var<storage, read_write> cdz: array<f32>;

fn row_lse(o: u32) -> f32 {
    var mx = cz[o];
    for (var c = 1u; c < cp.cols; c = c + 1u) { mx = max(mx, cz[o + c]); }
    var s = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) { s = s + exp(cz[o + c] - mx); }
    return mx + log(s);
}

// Per-row loss: lse - sum_c q_c z_c with q = (1-eps) onehot(y) + eps/C.
@compute @workgroup_size(64)
fn ce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    let o = r * cp.cols;
    let lse = row_lse(o);
    var zsum = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) { zsum = zsum + cz[o + c]; }
    let eps = cp.smoothing;
    cout[r] = lse - (1.0 - eps) * cz[o + clab[r]] - eps / f32(cp.cols) * zsum;
}

// Row r's loss lse - sum_c q_c z_c with q = (1-eps) onehot(y) + eps/C; writes its gradient
// scale * (softmax(z) - q).
fn ce_row_grad(r: u32) -> f32 {
    let o = r * cp.cols;
    let lse = row_lse(o);
    let eps = cp.smoothing;
    let y = clab[r];
    var zsum = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let z = cz[o + c];
        zsum = zsum + z;
        let q = eps / f32(cp.cols) + select(0.0, 1.0 - eps, c == y);
        cdz[o + c] = cp.scale * (exp(z - lse) - q);
    }
    return lse - (1.0 - eps) * cz[o + y] - eps / f32(cp.cols) * zsum;
}

// Soft targets: row r's loss sum_c q_c (lse - z_c), q = (1-eps) t + eps/C, and its gradient
// scale * (softmax(z) * sum(q) - q).
fn ce_soft_row_grad(r: u32) -> f32 {
    let o = r * cp.cols;
    let lse = row_lse(o);
    let eps = cp.smoothing;
    var tsum = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) { tsum = tsum + ctgt[o + c]; }
    let qsum = (1.0 - eps) * tsum + eps;
    var acc = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let z = cz[o + c];
        let q = (1.0 - eps) * ctgt[o + c] + eps / f32(cp.cols);
        acc = acc + q * (lse - z);
        cdz[o + c] = cp.scale * (exp(z - lse) * qsum - q);
    }
    return acc;
}

var<workgroup> ce_sh: array<f32, 64>;

// Sum of the 64 threads' partial losses, times scale, into cout[0] (by thread 0).
fn ce_mean_out(lid: u32, v: f32) {
    ce_sh[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (lid < s) { ce_sh[lid] = ce_sh[lid] + ce_sh[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { cout[0] = ce_sh[0] * cp.scale; }
}

// One workgroup: the mean loss into cout[0] and the gradient into cdz.
@compute @workgroup_size(64)
fn ce_fused(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var r = lid; r < cp.rows; r = r + 64u) { acc = acc + ce_row_grad(r); }
    ce_mean_out(lid, acc);
}

@compute @workgroup_size(64)
fn ce_soft_fused(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var r = lid; r < cp.rows; r = r + 64u) { acc = acc + ce_soft_row_grad(r); }
    ce_mean_out(lid, acc);
}

// One thread per row: per-row losses into cout (summed by a reduction after) and the gradient.
@compute @workgroup_size(64)
fn ce_rows_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    cout[r] = ce_row_grad(r);
}

@compute @workgroup_size(64)
fn ce_soft_rows_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    cout[r] = ce_soft_row_grad(r);
}

// 1 where the label is among the k largest logits (ties count against), else 0.
@compute @workgroup_size(64)
fn topk_correct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    let o = r * cp.cols;
    let y = clab[r];
    let zy = cz[o + y];
    var above = 0u;
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let z = cz[o + c];
        if (z > zy || (z == zy && c < y)) { above = above + 1u; }
    }
    cout[r] = select(0.0, 1.0, above < cp.k);
}

// One-hot rows from labels: out[r, c] = (label[r] == c). Bindings as ce_rows (clab, cout).
@compute @workgroup_size(256)
fn one_hot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= cp.rows * cp.cols) { return; }
    cout[i] = select(0.0, 1.0, clab[i / cp.cols] == i % cp.cols);
}
