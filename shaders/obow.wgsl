// OBoW (papers-digest B2-B4): the teacher's BoW targets, the vocabulary queue, row-wise L2
// normalisation for the student's weight generator, and feature banks for the evaluations.
//
// Distances are used transposed: dt[k * rows + r] = <w_k, f_r> (a matmul W @ F^T), so the
// one-thread-per-row kernels read consecutive addresses across neighbouring threads and need
// no barriers (expensive on software adapters). The squared distance is
// d(k, r) = |f_r|^2 + |w_k|^2 - 2 dt[k * rows + r].

struct BowP {
    rows: u32,      // rows of this chunk (images x positions)
    k: u32,         // words
    pos: u32,       // positions per image
    c: u32,         // channels
    h: u32,         // feature map height
    w: u32,         // feature map width
    n: u32,         // images (vocabulary update, row banks)
    seed: u32,
    salt: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
    inv_delta: f32,
    decay: f32,
    eps: f32,
    _q0: f32,
}
@group(0) @binding(0) var<uniform> bp: BowP;

// ---- rows: drop a 1-pixel border, NCHW -> [B * (H-2) * (W-2), C] ----------------------------
@group(0) @binding(1) var<storage, read_write> rw_feat: array<f32>;
@group(0) @binding(2) var<storage, read_write> rw_out: array<f32>;

@compute @workgroup_size(256)
fn bow_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= bp.rows * bp.c) { return; }
    let r = i / bp.c;
    let ch = i % bp.c;
    let b = r / bp.pos;
    let q = r % bp.pos;
    let wc = bp.w - 2u;
    let y = q / wc + 1u;
    let x = q % wc + 1u;
    rw_out[i] = rw_feat[((b * bp.c + ch) * bp.h + y) * bp.w + x];
}

// ---- squared L2 norm of each row: [rows, c] -> [rows] ---------------------------------------
@compute @workgroup_size(256)
fn sqnorm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = elem_index(wid, nwg, lid);
    if (r >= bp.rows) { return; }
    var acc = 0.0;
    for (var ch = 0u; ch < bp.c; ch = ch + 1u) {
        let v = rw_feat[r * bp.c + ch];
        acc = acc + v * v;
    }
    rw_out[r] = acc;
}

// ---- distances ------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read_write> d_dt: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_fsq: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_wsq: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_min: array<f32>;

// Smallest squared distance of each row to any word.
@compute @workgroup_size(256)
fn bow_min(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = elem_index(wid, nwg, lid);
    if (r >= bp.rows) { return; }
    let f = d_fsq[r];
    var m = f + d_wsq[0] - 2.0 * d_dt[r];
    for (var k = 1u; k < bp.k; k = k + 1u) {
        m = min(m, f + d_wsq[k] - 2.0 * d_dt[k * bp.rows + r]);
    }
    d_min[r] = m;
}

// Per-row log-sum-exp of -s * d with s = inv_delta / mu (mu already updated this step).
@group(0) @binding(5) var<storage, read_write> d_mu: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_lse: array<f32>;

@compute @workgroup_size(256)
fn bow_lse(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = elem_index(wid, nwg, lid);
    if (r >= bp.rows) { return; }
    let s = bp.inv_delta / d_mu[0];
    let f = d_fsq[r];
    let m = d_min[r];
    var acc = 0.0;
    for (var k = 0u; k < bp.k; k = k + 1u) {
        let d = f + d_wsq[k] - 2.0 * d_dt[k * bp.rows + r];
        acc = acc + exp(-s * (d - m));
    }
    d_lse[r] = -s * m + log(acc);
}

// One workgroup per image: bow[k] = max over positions of softmax_k(-s d), then L1
// normalisation (F.normalize(p=1): divide by max(sum, eps)). Bindings: dt, fsq, wsq, mu, lse, out.
@group(0) @binding(4) var<storage, read_write> p_mu: array<f32>;
@group(0) @binding(5) var<storage, read_write> p_lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> p_out: array<f32>;
var<workgroup> bsh: array<f32, 256>;

@compute @workgroup_size(256)
fn bow_pool_l1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg_linear(wid, nwg);
    let valid = b < bp.n;
    let s = bp.inv_delta / p_mu[0];
    var acc = 0.0;
    if (valid) {
        let r0 = b * bp.pos;
        for (var k = lid; k < bp.k; k = k + 256u) {
            let wk = d_wsq[k];
            var v = 0.0;
            for (var p = 0u; p < bp.pos; p = p + 1u) {
                let r = r0 + p;
                let d = d_fsq[r] + wk - 2.0 * d_dt[k * bp.rows + r];
                v = max(v, exp(-s * d - p_lse[r]));
            }
            p_out[b * bp.k + k] = v;
            acc = acc + v;
        }
    }
    bsh[lid] = acc;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st = st >> 1u) {
        if (lid < st) { bsh[lid] = bsh[lid] + bsh[lid + st]; }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / max(bsh[0], bp.eps);
        for (var k = lid; k < bp.k; k = k + 256u) {
            p_out[b * bp.k + k] = p_out[b * bp.k + k] * inv;
        }
    }
}

// ---- mu <- decay * mu + (1 - decay) * mean(min distances): one workgroup ------------------
@group(0) @binding(1) var<storage, read_write> m_mu: array<f32>;
@group(0) @binding(2) var<storage, read_write> m_min: array<f32>;

@compute @workgroup_size(256)
fn bow_mu(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var r = lid; r < bp.rows; r = r + 256u) { acc = acc + m_min[r]; }
    bsh[lid] = acc;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st = st >> 1u) {
        if (lid < st) { bsh[lid] = bsh[lid] + bsh[lid + st]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        m_mu[0] = bp.decay * m_mu[0] + (1.0 - bp.decay) * bsh[0] / f32(bp.rows);
    }
}

// ---- the vocabulary queue: one workgroup ----------------------------------------------------
// For each image b: drop the 1-pixel border of its [C, H, W] map, average 3x3 windows (stride 1,
// no padding), take the window at a random location and write it as word (ptr + b); then
// ptr = (ptr + n) % k. The location is rand_u32(seed, step, salt + b) % ((H-4) * (W-4)).
@group(0) @binding(1) var<storage, read_write> v_vocab: array<f32>;
@group(0) @binding(2) var<storage, read_write> v_ptr: array<u32>;
@group(0) @binding(3) var<storage, read_write> v_feat: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_step: array<u32>;

@compute @workgroup_size(256)
fn vocab_update(@builtin(local_invocation_index) lid: u32) {
    let head = v_ptr[0];
    let step = v_step[0];
    let ah = bp.h - 4u;
    let aw = bp.w - 4u;
    for (var i = lid; i < bp.n * bp.c; i = i + 256u) {
        let b = i / bp.c;
        let ch = i % bp.c;
        let loc = rand_u32(bp.seed, step, bp.salt + b) % (ah * aw);
        let y0 = loc / aw + 1u;
        let x0 = loc % aw + 1u;
        let base = (b * bp.c + ch) * bp.h;
        var acc = 0.0;
        for (var dy = 0u; dy < 3u; dy = dy + 1u) {
            for (var dx = 0u; dx < 3u; dx = dx + 1u) {
                acc = acc + v_feat[(base + y0 + dy) * bp.w + x0 + dx];
            }
        }
        v_vocab[((head + b) % bp.k) * bp.c + ch] = acc / 9.0;
    }
    // Every invocation has read the pointer before any writes it.
    workgroupBarrier();
    storageBarrier();
    if (lid == 0u) {
        v_ptr[0] = (head + bp.n) % bp.k;
    }
}

// ---- row L2 normalisation (F.normalize(p=2, dim=1)): y = x / max(|x|, eps) ------------------
@group(0) @binding(1) var<storage, read_write> l_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> l_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> l_norm: array<f32>;

@compute @workgroup_size(256)
fn l2n_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = elem_index(wid, nwg, lid);
    if (r >= bp.rows) { return; }
    var acc = 0.0;
    for (var ch = 0u; ch < bp.c; ch = ch + 1u) { let v = l_x[r * bp.c + ch]; acc = acc + v * v; }
    let nrm = sqrt(acc);
    l_norm[r] = nrm;
    let inv = 1.0 / max(nrm, bp.eps);
    for (var ch = 0u; ch < bp.c; ch = ch + 1u) { l_y[r * bp.c + ch] = l_x[r * bp.c + ch] * inv; }
}

// dx = (gy - y <gy, y>) / |x| where |x| > eps, else gy / eps. Bindings: y, norm, gy, dx.
@group(0) @binding(1) var<storage, read_write> g_y: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_gy: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_dx: array<f32>;

@compute @workgroup_size(256)
fn l2n_rows_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = elem_index(wid, nwg, lid);
    if (r >= bp.rows) { return; }
    let nrm = g_norm[r];
    let o = r * bp.c;
    if (nrm > bp.eps) {
        var dot = 0.0;
        for (var ch = 0u; ch < bp.c; ch = ch + 1u) { dot = dot + g_gy[o + ch] * g_y[o + ch]; }
        let inv = 1.0 / nrm;
        for (var ch = 0u; ch < bp.c; ch = ch + 1u) { g_dx[o + ch] = (g_gy[o + ch] - g_y[o + ch] * dot) * inv; }
    } else {
        for (var ch = 0u; ch < bp.c; ch = ch + 1u) { g_dx[o + ch] = g_gy[o + ch] / bp.eps; }
    }
}

// ---- feature banks (linear probe, few-shot, vocabulary pictures) ----------------------------
// scatter: bank[index[i]] = x[i] where valid[i] > 0.5 (n rows of c). gather: out[i] = bank[index[i]].
@group(0) @binding(1) var<storage, read_write> f_bank: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_index: array<u32>;
@group(0) @binding(4) var<storage, read_write> f_valid: array<f32>;

@compute @workgroup_size(256)
fn rows_scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= bp.n * bp.c) { return; }
    let r = i / bp.c;
    if (f_valid[r] > 0.5) {
        let dst = f_index[r];
        if (dst < bp.rows) { f_bank[dst * bp.c + i % bp.c] = f_x[i]; }
    }
}

@compute @workgroup_size(256)
fn rows_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= bp.n * bp.c) { return; }
    let src = min(f_index[i / bp.c], bp.rows - 1u);
    f_x[i] = f_bank[src * bp.c + i % bp.c];
}
