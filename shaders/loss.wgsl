// Cross-entropy with integer labels (with label smoothing) or soft targets, fused with a
// stable log-softmax; its gradient; and top-k correctness counts. One thread per row.

struct CeP { rows: u32, cols: u32, k: u32, _p: u32, smoothing: f32, scale: f32, _q0: f32, _q1: f32 }
@group(0) @binding(0) var<uniform> cp: CeP;
@group(0) @binding(1) var<storage, read_write> cz: array<f32>;
@group(0) @binding(2) var<storage, read_write> clab: array<u32>;
@group(0) @binding(2) var<storage, read_write> ctgt: array<f32>;
@group(0) @binding(3) var<storage, read_write> cout: array<f32>;
@group(0) @binding(4) var<storage, read_write> cgy: array<f32>;

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

// dz = gy * scale * (softmax(z) - q)
@compute @workgroup_size(64)
fn ce_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    let o = r * cp.cols;
    let lse = row_lse(o);
    let g = cgy[0] * cp.scale;
    let eps = cp.smoothing;
    let y = clab[r];
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let q = eps / f32(cp.cols) + select(0.0, 1.0 - eps, c == y);
        cout[o + c] = g * (exp(cz[o + c] - lse) - q);
    }
}

// Soft targets t (rows sum to 1), smoothed: q = (1-eps) t + eps/C.
@compute @workgroup_size(64)
fn ce_soft_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    let o = r * cp.cols;
    let lse = row_lse(o);
    let eps = cp.smoothing;
    var acc = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let q = (1.0 - eps) * ctgt[o + c] + eps / f32(cp.cols);
        acc = acc + q * (lse - cz[o + c]);
    }
    cout[r] = acc;
}

@compute @workgroup_size(64)
fn ce_soft_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg_linear(wid, nwg) * 64u + lid;
    if (r >= cp.rows) { return; }
    let o = r * cp.cols;
    let lse = row_lse(o);
    let g = cgy[0] * cp.scale;
    let eps = cp.smoothing;
    var tsum = 0.0;
    for (var c = 0u; c < cp.cols; c = c + 1u) { tsum = tsum + ctgt[o + c]; }
    for (var c = 0u; c < cp.cols; c = c + 1u) {
        let q = (1.0 - eps) * ctgt[o + c] + eps / f32(cp.cols);
        // d/dz of sum_c q_c (lse - z_c) = softmax * sum(q) - q
        cout[o + c] = g * (exp(cz[o + c] - lse) * ((1.0 - eps) * tsum + eps) - q);
    }
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
