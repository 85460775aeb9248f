// Fused multi-head self-attention (flash-attention style) and its backward pass.
//
// Layouts (no permutes around the kernels):
//   qkv  [B, N, 3, H, DH]  the output of the qkv Linear as timm lays it out
//   o    [B, N, H, DH]     = [B, N, D], ready for the output projection
//   lse  [B, H, N]         log-sum-exp of each score row, saved for the backward pass
//   bias [G, H, N, N]      optional additive bias (Swin relative position bias + shift mask);
//                          batch b uses bias[b % G]
//   dvec [B, H, N]         rowsum(dO * O), the softmax-backward correction term (kept for
//                          the bias gradient)
//
// One invocation owns one query row (forward, dQ) or one key row (dK/dV); its vectors live in
// private vec4 arrays (head dim up to 128). The other side streams through workgroup memory
// in blocks of BK rows, so the N x N score matrix never exists in memory: the forward pass
// keeps a running max and sum (online softmax), the backward pass recomputes the scores of
// each block from q, k and the saved log-sum-exp.
//
// Overrides: WG threads per workgroup (= rows per block), DH4 = ceil(DH / 4), BK keys (or
// queries) staged per block with BK * DH4 <= 496 and BK <= 64.

override WG: u32 = 64u;
override DH4: u32 = 8u;
override BK: u32 = 64u;

struct AttP {
    n: u32, heads: u32, dh: u32, d: u32,
    batch: u32, groups: u32, rs: u32, _p: u32,
    scale: f32, _q0: f32, _q1: f32, _q2: f32,
}
@group(0) @binding(0) var<uniform> ap: AttP;
@group(0) @binding(1) var<storage, read_write> aqkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> ao: array<f32>;
@group(0) @binding(3) var<storage, read_write> alse: array<f32>;
@group(0) @binding(4) var<storage, read_write> abias: array<f32>;
@group(0) @binding(5) var<storage, read_write> ado: array<f32>;
@group(0) @binding(6) var<storage, read_write> adqkv: array<f32>;
@group(0) @binding(7) var<storage, read_write> advec: array<f32>;

// 2 x 496 vec4 + 2 x 64 f32 = 16 KiB: WebGPU's default workgroup storage limit.
var<workgroup> s_a: array<vec4<f32>, 496>;
var<workgroup> s_b: array<vec4<f32>, 496>;
var<workgroup> s_r0: array<f32, 64>;
var<workgroup> s_r1: array<f32, 64>;

const NEG_BIG: f32 = -1.0e30;

// Four elements of a head vector starting at column 4*c4 (zero past DH).
fn ld_qkv(base: u32, c4: u32) -> vec4<f32> {
    let c = c4 * 4u;
    let i = base + c;
    if (c + 4u <= ap.dh) { return vec4<f32>(aqkv[i], aqkv[i + 1u], aqkv[i + 2u], aqkv[i + 3u]); }
    var r = vec4<f32>(0.0);
    r.x = aqkv[i];
    if (c + 1u < ap.dh) { r.y = aqkv[i + 1u]; }
    if (c + 2u < ap.dh) { r.z = aqkv[i + 2u]; }
    return r;
}

fn ld_o(base: u32, c4: u32) -> vec4<f32> {
    let c = c4 * 4u;
    let i = base + c;
    if (c + 4u <= ap.dh) { return vec4<f32>(ao[i], ao[i + 1u], ao[i + 2u], ao[i + 3u]); }
    var r = vec4<f32>(0.0);
    r.x = ao[i];
    if (c + 1u < ap.dh) { r.y = ao[i + 1u]; }
    if (c + 2u < ap.dh) { r.z = ao[i + 2u]; }
    return r;
}

fn ld_do(base: u32, c4: u32) -> vec4<f32> {
    let c = c4 * 4u;
    let i = base + c;
    if (c + 4u <= ap.dh) { return vec4<f32>(ado[i], ado[i + 1u], ado[i + 2u], ado[i + 3u]); }
    var r = vec4<f32>(0.0);
    r.x = ado[i];
    if (c + 1u < ap.dh) { r.y = ado[i + 1u]; }
    if (c + 2u < ap.dh) { r.z = ado[i + 2u]; }
    return r;
}

fn st_o(base: u32, c4: u32, v: vec4<f32>) {
    let c = c4 * 4u;
    let i = base + c;
    ao[i] = v.x;
    if (c + 1u < ap.dh) { ao[i + 1u] = v.y; }
    if (c + 2u < ap.dh) { ao[i + 2u] = v.z; }
    if (c + 3u < ap.dh) { ao[i + 3u] = v.w; }
}

fn st_dqkv(base: u32, c4: u32, v: vec4<f32>) {
    let c = c4 * 4u;
    let i = base + c;
    adqkv[i] = v.x;
    if (c + 1u < ap.dh) { adqkv[i + 1u] = v.y; }
    if (c + 2u < ap.dh) { adqkv[i + 2u] = v.z; }
    if (c + 3u < ap.dh) { adqkv[i + 3u] = v.w; }
}

// Offset of row `t` of batch `b` in qkv (the q part of head h; k is +d, v is +2d).
fn qkv_row(b: u32, t: u32, h: u32) -> u32 {
    return (b * ap.n + t) * ap.rs + h * ap.dh;
}

// Offset of bias[b % G, h, i, 0].
fn bias_row(b: u32, h: u32, i: u32) -> u32 {
    return (((b % ap.groups) * ap.heads + h) * ap.n + i) * ap.n;
}

// Forward: workgroup (query block x, batch*head y).
@compute @workgroup_size(WG)
fn attn_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bh = wid.y;
    let b = bh / ap.heads;
    let h = bh % ap.heads;
    let i = wid.x * WG + lid;
    let iv = min(i, ap.n - 1u);
    let qb = qkv_row(b, iv, h);
    var q: array<vec4<f32>, 32>;
    var acc: array<vec4<f32>, 32>;
    for (var c = 0u; c < DH4; c = c + 1u) {
        q[c] = ld_qkv(qb, c) * ap.scale;
        acc[c] = vec4<f32>(0.0);
    }
    let has_bias = ap.groups > 0u;
    var brow = 0u;
    if (has_bias) { brow = bias_row(b, h, iv); }
    var m = NEG_BIG;
    var l = 0.0;
    for (var k0 = 0u; k0 < ap.n; k0 = k0 + BK) {
        let cnt = min(BK, ap.n - k0);
        workgroupBarrier();
        for (var e = lid; e < cnt * DH4; e = e + WG) {
            let kb = qkv_row(b, k0 + e / DH4, h) + ap.d;
            s_a[e] = ld_qkv(kb, e % DH4);
            s_b[e] = ld_qkv(kb + ap.d, e % DH4);
        }
        workgroupBarrier();
        for (var j = 0u; j < cnt; j = j + 1u) {
            var dot4 = vec4<f32>(0.0);
            for (var c = 0u; c < DH4; c = c + 1u) { dot4 = dot4 + q[c] * s_a[j * DH4 + c]; }
            var sj = dot4.x + dot4.y + dot4.z + dot4.w;
            if (has_bias) { sj = sj + abias[brow + k0 + j]; }
            if (sj > m) {
                let corr = exp(m - sj);
                l = l * corr;
                for (var c = 0u; c < DH4; c = c + 1u) { acc[c] = acc[c] * corr; }
                m = sj;
            }
            let p = exp(sj - m);
            l = l + p;
            for (var c = 0u; c < DH4; c = c + 1u) { acc[c] = acc[c] + p * s_b[j * DH4 + c]; }
        }
    }
    if (i >= ap.n) { return; }
    let inv = 1.0 / l;
    let ob = (b * ap.n + i) * ap.d + h * ap.dh;
    for (var c = 0u; c < DH4; c = c + 1u) { st_o(ob, c, acc[c] * inv); }
    alse[bh * ap.n + i] = m + log(l);
}

// Backward as one dispatch (real GPUs): workgroups x < ceil(N / WG) compute dQ for a query
// block, the rest dK and dV for a key block (uniform per workgroup); grid (2 * ceil(N / WG),
// b*h). The dK/dV blocks recompute dvec, as nothing orders the dQ blocks before them.
// Software adapters run the two halves as two dispatches instead, dQ first (it writes dvec):
// LLVM takes about twice as long to compile the joint kernel, and a saved launch is worth
// nothing next to that on a CPU.
@compute @workgroup_size(WG)
fn attn_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let blocks = (ap.n + WG - 1u) / WG;
    if (wid.x < blocks) {
        bwd_dq(wid.x, wid.y, lid);
    } else {
        bwd_dkv(wid.x - blocks, wid.y, lid, true);
    }
}

@compute @workgroup_size(WG)
fn attn_bwd_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    bwd_dq(wid.x, wid.y, lid);
}

@compute @workgroup_size(WG)
fn attn_bwd_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    bwd_dkv(wid.x, wid.y, lid, false);
}

// dvec_i = rowsum(dO_i * O_i), the softmax-backward correction of query row i (clamped).
fn bwd_dvec(b: u32, i: u32, h: u32) -> f32 {
    let ob = (b * ap.n + min(i, ap.n - 1u)) * ap.d + h * ap.dh;
    var dd4 = vec4<f32>(0.0);
    for (var c = 0u; c < DH4; c = c + 1u) { dd4 = dd4 + ld_do(ob, c) * ld_o(ob, c); }
    return dd4.x + dd4.y + dd4.z + dd4.w;
}

// dQ for query block wx, and dvec (saved for the bias gradient).
// dS_ij = P_ij (dO_i . v_j - dvec_i), dQ_i = scale * sum_j dS_ij k_j.
fn bwd_dq(wx: u32, bh: u32, lid: u32) {
    let b = bh / ap.heads;
    let h = bh % ap.heads;
    let i = wx * WG + lid;
    let iv = min(i, ap.n - 1u);
    let qb = qkv_row(b, iv, h);
    let ob = (b * ap.n + iv) * ap.d + h * ap.dh;
    var q: array<vec4<f32>, 32>;
    var g: array<vec4<f32>, 32>;
    var dq: array<vec4<f32>, 32>;
    for (var c = 0u; c < DH4; c = c + 1u) {
        q[c] = ld_qkv(qb, c) * ap.scale;
        g[c] = ld_do(ob, c);
        dq[c] = vec4<f32>(0.0);
    }
    let dd = bwd_dvec(b, iv, h);
    let lse = alse[bh * ap.n + iv];
    let has_bias = ap.groups > 0u;
    var brow = 0u;
    if (has_bias) { brow = bias_row(b, h, iv); }
    for (var k0 = 0u; k0 < ap.n; k0 = k0 + BK) {
        let cnt = min(BK, ap.n - k0);
        workgroupBarrier();
        for (var e = lid; e < cnt * DH4; e = e + WG) {
            let kb = qkv_row(b, k0 + e / DH4, h) + ap.d;
            s_a[e] = ld_qkv(kb, e % DH4);
            s_b[e] = ld_qkv(kb + ap.d, e % DH4);
        }
        workgroupBarrier();
        for (var j = 0u; j < cnt; j = j + 1u) {
            var s4 = vec4<f32>(0.0);
            var p4 = vec4<f32>(0.0);
            for (var c = 0u; c < DH4; c = c + 1u) {
                s4 = s4 + q[c] * s_a[j * DH4 + c];
                p4 = p4 + g[c] * s_b[j * DH4 + c];
            }
            var sj = s4.x + s4.y + s4.z + s4.w;
            if (has_bias) { sj = sj + abias[brow + k0 + j]; }
            let p = exp(sj - lse);
            let ds = p * (p4.x + p4.y + p4.z + p4.w - dd);
            for (var c = 0u; c < DH4; c = c + 1u) { dq[c] = dq[c] + ds * s_a[j * DH4 + c]; }
        }
    }
    if (i >= ap.n) { return; }
    advec[bh * ap.n + i] = dd;
    let db = qkv_row(b, i, h);
    for (var c = 0u; c < DH4; c = c + 1u) { st_dqkv(db, c, dq[c] * ap.scale); }
}

// dK and dV for key block wx; queries, dO, lse and dvec (recomputed where `own_dvec`, read
// from bwd_dq's output otherwise) stream through workgroup memory.
// dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij q_i.
fn bwd_dkv(wx: u32, bh: u32, lid: u32, own_dvec: bool) {
    let b = bh / ap.heads;
    let h = bh % ap.heads;
    let j = wx * WG + lid;
    let jv = min(j, ap.n - 1u);
    let kb = qkv_row(b, jv, h) + ap.d;
    var k: array<vec4<f32>, 32>;
    var v: array<vec4<f32>, 32>;
    var dk: array<vec4<f32>, 32>;
    var dv: array<vec4<f32>, 32>;
    for (var c = 0u; c < DH4; c = c + 1u) {
        k[c] = ld_qkv(kb, c);
        v[c] = ld_qkv(kb + ap.d, c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    let has_bias = ap.groups > 0u;
    var bcol = 0u;
    if (has_bias) { bcol = bias_row(b, h, 0u) + jv; }
    for (var i0 = 0u; i0 < ap.n; i0 = i0 + BK) {
        let cnt = min(BK, ap.n - i0);
        workgroupBarrier();
        for (var e = lid; e < cnt * DH4; e = e + WG) {
            let t = i0 + e / DH4;
            s_a[e] = ld_qkv(qkv_row(b, t, h), e % DH4) * ap.scale;
            s_b[e] = ld_do((b * ap.n + t) * ap.d + h * ap.dh, e % DH4);
        }
        for (var e = lid; e < cnt; e = e + WG) {
            s_r0[e] = alse[bh * ap.n + i0 + e];
            if (own_dvec) {
                s_r1[e] = bwd_dvec(b, i0 + e, h);
            } else {
                s_r1[e] = advec[bh * ap.n + i0 + e];
            }
        }
        workgroupBarrier();
        for (var ii = 0u; ii < cnt; ii = ii + 1u) {
            var s4 = vec4<f32>(0.0);
            var p4 = vec4<f32>(0.0);
            for (var c = 0u; c < DH4; c = c + 1u) {
                s4 = s4 + s_a[ii * DH4 + c] * k[c];
                p4 = p4 + s_b[ii * DH4 + c] * v[c];
            }
            var sij = s4.x + s4.y + s4.z + s4.w;
            if (has_bias) { sij = sij + abias[bcol + (i0 + ii) * ap.n]; }
            let p = exp(sij - s_r0[ii]);
            let ds = p * (p4.x + p4.y + p4.z + p4.w - s_r1[ii]);
            for (var c = 0u; c < DH4; c = c + 1u) {
                dv[c] = dv[c] + p * s_b[ii * DH4 + c];
                dk[c] = dk[c] + ds * s_a[ii * DH4 + c];
            }
        }
    }
    if (j >= ap.n) { return; }
    let db = qkv_row(b, j, h) + ap.d;
    for (var c = 0u; c < DH4; c = c + 1u) {
        st_dqkv(db, c, dk[c]);
        st_dqkv(db + ap.d, c, dv[c]);
    }
}

// Gradient of the bias: dbias[g, h, i, j] = sum over batches b = g (mod G) of dS_ij, one
// invocation per bias element (no atomics: each sums its own batches).
// Bindings as above; the output is binding 6 (adqkv) with shape [G, H, N, N].
@compute @workgroup_size(64)
fn attn_dbias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg_linear(wid, nwg) * 64u + lid;
    let total = ap.groups * ap.heads * ap.n * ap.n;
    if (e >= total) { return; }
    let j = e % ap.n;
    let i = (e / ap.n) % ap.n;
    let h = (e / (ap.n * ap.n)) % ap.heads;
    let g0 = e / (ap.n * ap.n * ap.heads);
    let bv = abias[e];
    var acc = 0.0;
    for (var b = g0; b < ap.batch; b = b + ap.groups) {
        let qb = qkv_row(b, i, h);
        let kb = qkv_row(b, j, h) + ap.d;
        let ob = (b * ap.n + i) * ap.d + h * ap.dh;
        var s4 = vec4<f32>(0.0);
        var p4 = vec4<f32>(0.0);
        for (var c = 0u; c < DH4; c = c + 1u) {
            s4 = s4 + ld_qkv(qb, c) * ld_qkv(kb, c);
            p4 = p4 + ld_do(ob, c) * ld_qkv(kb + ap.d, c);
        }
        let r = (b * ap.heads + h) * ap.n + i;
        let p = exp((s4.x + s4.y + s4.z + s4.w) * ap.scale + bv - alse[r]);
        acc = acc + p * (p4.x + p4.y + p4.z + p4.w - advec[r]);
    }
    adqkv[e] = acc;
}
