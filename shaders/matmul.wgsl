// Batched matrix multiply C[b] = op(A[b]) @ op(B[b]) (+ bias[n]); uniform block, bindings
// and store epilogue in matmul_common.wgsl. Variants, chosen per adapter (src/gpu/mod.rs,
// KernelProfile) and, for the tiled ones, per problem (src/ops/matmul.rs):
//   mm_register_v4 / mm_register: each thread owns a block of outputs in registers; no
//                shared memory, no barriers. Best on software adapters, where barriers are
//                very expensive. The v4 form needs 4-aligned shapes; mm_register is the
//                general fallback (4x4 scalar loads).
//   mm_tiled_pair: a linear layer's backward (two problems, one dispatch) on real GPUs: 64x64
//                workgroup tiles staged through workgroup memory, 4x4 per thread. Single
//                matmuls on real GPUs are in matmul_wide.wgsl.

// 8x8 threads, 4x4 outputs each: a 32x32 tile per workgroup. Rows and columns are
// interleaved (thread tx owns columns tx, tx+8, tx+16, tx+24) so neighbouring invocations
// read neighbouring addresses of B. Loads are clamped in range; only stores are masked.
@compute @workgroup_size(8, 8, 1)
fn mm_register(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let m0 = wid.y * 32u + lid.y;
    let n0 = wid.x * 32u + lid.x;
    let abase = b * mp.sab;
    let bbase = b * mp.sbb;
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        ar[i] = abase + min(m0 + i * 8u, mp.m - 1u) * mp.ars;
        bc[i] = bbase + min(n0 + i * 8u, mp.n - 1u) * mp.bcs;
    }
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    var ka = 0u;
    var kb = 0u;
    // Row sums only in the first column block (uniform per workgroup).
    let rows = (mp.flags & 32u) != 0u && wid.x == 0u;
    var rs = vec4<f32>(0.0);
    for (var k = 0u; k < mp.k; k = k + 1u) {
        let bv = vec4<f32>(mb[bc[0] + kb], mb[bc[1] + kb], mb[bc[2] + kb], mb[bc[3] + kb]);
        let av = vec4<f32>(ma[ar[0] + ka], ma[ar[1] + ka], ma[ar[2] + ka], ma[ar[3] + ka]);
        acc[0] = acc[0] + av.x * bv;
        acc[1] = acc[1] + av.y * bv;
        acc[2] = acc[2] + av.z * bv;
        acc[3] = acc[3] + av.w * bv;
        if (rows) { rs = rs + av; }
        ka = ka + mp.acs;
        kb = kb + mp.brs;
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = m0 + i * 8u;
        mm_store(b, m, n0, acc[i].x);
        mm_store(b, m, n0 + 8u, acc[i].y);
        mm_store(b, m, n0 + 16u, acc[i].z);
        mm_store(b, m, n0 + 24u, acc[i].w);
    }
    if (rows && lid.x == 0u) {
        mm_rows(m0, rs.x);
        mm_rows(m0 + 8u, rs.y);
        mm_rows(m0 + 16u, rs.z);
        mm_rows(m0 + 24u, rs.w);
    }
}

const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> ta: array<array<f32, 64>, 16>;
var<workgroup> tb: array<array<f32, 64>, 16>;

// mm_register_v4: the register variant with vec4 loads. 4x4 blocks of A and B are loaded as
// four vec4 each and multiplied as mat4x4; each thread owns 8x8 outputs (four mat4x4). Needs
// K % 4 == 0 and the layouts noted at load_a4/load_b4 (checked on the host). On software
// adapters every storage load is a per-lane gather, so fewer, wider loads is what pays.

// Block of A: column c = A[m0..m0+4, k+c]. Rows past M are clamped (their results are
// never stored); a transposed A (stored [K][M]) needs M % 4 == 0.
fn load_a4(base: u32, m0: u32, k: u32) -> mat4x4<f32> {
    if (mp.ars == 1u) {
        let i = (base + k * mp.acs + min(m0, mp.m - 4u)) / 4u;
        let s = mp.acs / 4u;
        return mat4x4<f32>(ma4[i], ma4[i + s], ma4[i + 2u * s], ma4[i + 3u * s]);
    }
    let r = mp.m - 1u;
    return transpose(mat4x4<f32>(
        ma4[(base + min(m0, r) * mp.ars + k) / 4u], ma4[(base + min(m0 + 1u, r) * mp.ars + k) / 4u],
        ma4[(base + min(m0 + 2u, r) * mp.ars + k) / 4u], ma4[(base + min(m0 + 3u, r) * mp.ars + k) / 4u]));
}

// Block of B: column j = B[k..k+4, n0+j]. A row-major B needs N % 4 == 0.
fn load_b4(base: u32, k: u32, n0: u32) -> mat4x4<f32> {
    if (mp.brs == 1u) {
        let r = mp.n - 1u;
        return mat4x4<f32>(
            mb4[(base + min(n0, r) * mp.bcs + k) / 4u], mb4[(base + min(n0 + 1u, r) * mp.bcs + k) / 4u],
            mb4[(base + min(n0 + 2u, r) * mp.bcs + k) / 4u], mb4[(base + min(n0 + 3u, r) * mp.bcs + k) / 4u]);
    }
    let i = (base + k * mp.brs + min(n0, mp.n - 4u)) / 4u;
    let s = mp.brs / 4u;
    return transpose(mat4x4<f32>(mb4[i], mb4[i + s], mb4[i + 2u * s], mb4[i + 3u * s]));
}

@compute @workgroup_size(8, 8, 1)
fn mm_register_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.z;
    let m0 = (wid.y * 8u + lid.y) * 8u;
    let n0 = (wid.x * 8u + lid.x) * 8u;
    let abase = b * mp.sab;
    let bbase = b * mp.sbb;
    var c00 = mat4x4<f32>();
    var c01 = mat4x4<f32>();
    var c10 = mat4x4<f32>();
    var c11 = mat4x4<f32>();
    // Row sums only in the first column block (uniform per workgroup).
    let rows = (mp.flags & 32u) != 0u && wid.x == 0u;
    var rs0 = vec4<f32>(0.0);
    var rs1 = vec4<f32>(0.0);
    for (var k = 0u; k < mp.k; k = k + 4u) {
        let a0 = load_a4(abase, m0, k);
        let a1 = load_a4(abase, m0 + 4u, k);
        let b0 = load_b4(bbase, k, n0);
        let b1 = load_b4(bbase, k, n0 + 4u);
        c00 = c00 + a0 * b0;
        c01 = c01 + a0 * b1;
        c10 = c10 + a1 * b0;
        c11 = c11 + a1 * b1;
        if (rows) {
            rs0 = rs0 + a0[0] + a0[1] + a0[2] + a0[3];
            rs1 = rs1 + a1[0] + a1[1] + a1[2] + a1[3];
        }
    }
    if (rows && lid.x == 0u) {
        mm_rows(m0, rs0.x); mm_rows(m0 + 1u, rs0.y); mm_rows(m0 + 2u, rs0.z); mm_rows(m0 + 3u, rs0.w);
        mm_rows(m0 + 4u, rs1.x); mm_rows(m0 + 5u, rs1.y); mm_rows(m0 + 6u, rs1.z); mm_rows(m0 + 7u, rs1.w);
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        mm_store(b, m0, n0 + j, c00[j].x); mm_store(b, m0 + 1u, n0 + j, c00[j].y);
        mm_store(b, m0 + 2u, n0 + j, c00[j].z); mm_store(b, m0 + 3u, n0 + j, c00[j].w);
        mm_store(b, m0, n0 + 4u + j, c01[j].x); mm_store(b, m0 + 1u, n0 + 4u + j, c01[j].y);
        mm_store(b, m0 + 2u, n0 + 4u + j, c01[j].z); mm_store(b, m0 + 3u, n0 + 4u + j, c01[j].w);
        mm_store(b, m0 + 4u, n0 + j, c10[j].x); mm_store(b, m0 + 5u, n0 + j, c10[j].y);
        mm_store(b, m0 + 6u, n0 + j, c10[j].z); mm_store(b, m0 + 7u, n0 + j, c10[j].w);
        mm_store(b, m0 + 4u, n0 + 4u + j, c11[j].x); mm_store(b, m0 + 5u, n0 + 4u + j, c11[j].y);
        mm_store(b, m0 + 6u, n0 + 4u + j, c11[j].z); mm_store(b, m0 + 7u, n0 + 4u + j, c11[j].w);
    }
}

// ---- Linear-layer backward as one dispatch: two problems over one grid. ------------------
// Problem 0 is dX = dY W (with the epilogue of mm_store: unary gradient, addend), problem 1
// dW = dY^T X (with the row sums of dY^T: the bias gradient). Both read dY (binding 1) and
// have N = the layer's input width, so they share the grid's x; rows of workgroups
// [0, tiles of M0) do problem 0, the rest problem 1 (MmPair.split). Bindings: 1 dY, 2 W,
// 3 dX, 4 X, 5 aux, 6 addend, 7 dW, 8 row sums. The problem is uniform per workgroup.
// mm_tiled_pair may also cut problem 1 along its K (the layer's rows, thousands where dX's K
// is the output width) into `ksplit` chunks of `kper`: a few dW tiles with a long K would
// otherwise leave most of a GPU idle while dX finishes. The chunks' partial sums then go to
// binding 7 and mm_pair_sum adds them up (the register pairs never split).
struct MmPair { p0: MmP, p1: MmP, split: u32, ksplit: u32, kper: u32, _s2: u32 }
@group(0) @binding(0) var<uniform> mpp: MmPair;
@group(0) @binding(4) var<storage, read_write> mx: array<f32>;
@group(0) @binding(4) var<storage, read_write> mx4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> mc1: array<f32>;

fn pair_b(sel: u32, i: u32) -> f32 {
    if (sel == 0u) { return mb[i]; }
    return mx[i];
}

fn pair_b4(sel: u32, i: u32) -> vec4<f32> {
    if (sel == 0u) { return mb4[i]; }
    return mx4[i];
}

fn pair_store(q: MmP, sel: u32, m: u32, n: u32, v: f32) {
    if (m < q.m && n < q.n) {
        let idx = m * q.n + n;
        if (sel == 1u) {
            mc1[idx] = v;
            return;
        }
        var r = v;
        if ((q.flags & 4u) != 0u) { r = r * mm_dact(q.dact, maux[idx]); }
        if ((q.flags & 8u) != 0u) { r = r + madd[idx]; }
        mc[idx] = r;
    }
}

fn pair_rows(q: MmP, m: u32, v: f32) {
    if (m < q.m) { mrows[m] = v; }
}

// pair_store / pair_rows for mm_tiled_pair: chunk `part` of a split problem 1 leaves its
// partial dW and row sums at part * (M1 * N1 + M1) in binding 7.
fn split_store(q: MmP, sel: u32, part: u32, m: u32, n: u32, v: f32) {
    if (sel == 1u && mpp.ksplit > 1u) {
        if (m < q.m && n < q.n) { mc1[part * (q.m * q.n + q.m) + m * q.n + n] = v; }
        return;
    }
    pair_store(q, sel, m, n, v);
}

fn split_rows(q: MmP, sel: u32, part: u32, m: u32, v: f32) {
    if (sel == 1u && mpp.ksplit > 1u) {
        if (m < q.m) { mc1[part * (q.m * q.n + q.m) + q.m * q.n + m] = v; }
        return;
    }
    pair_rows(q, m, v);
}

// load_a4 / load_b4 for problem `q` (batch 1).
fn pair_a4(q: MmP, m0: u32, k: u32) -> mat4x4<f32> {
    if (q.ars == 1u) {
        let i = (k * q.acs + min(m0, q.m - 4u)) / 4u;
        let s = q.acs / 4u;
        return mat4x4<f32>(ma4[i], ma4[i + s], ma4[i + 2u * s], ma4[i + 3u * s]);
    }
    let r = q.m - 1u;
    return transpose(mat4x4<f32>(
        ma4[(min(m0, r) * q.ars + k) / 4u], ma4[(min(m0 + 1u, r) * q.ars + k) / 4u],
        ma4[(min(m0 + 2u, r) * q.ars + k) / 4u], ma4[(min(m0 + 3u, r) * q.ars + k) / 4u]));
}

fn pair_b4m(q: MmP, sel: u32, k: u32, n0: u32) -> mat4x4<f32> {
    if (q.brs == 1u) {
        let r = q.n - 1u;
        return mat4x4<f32>(
            pair_b4(sel, (min(n0, r) * q.bcs + k) / 4u), pair_b4(sel, (min(n0 + 1u, r) * q.bcs + k) / 4u),
            pair_b4(sel, (min(n0 + 2u, r) * q.bcs + k) / 4u), pair_b4(sel, (min(n0 + 3u, r) * q.bcs + k) / 4u));
    }
    let i = (k * q.brs + min(n0, q.n - 4u)) / 4u;
    let s = q.brs / 4u;
    return transpose(mat4x4<f32>(pair_b4(sel, i), pair_b4(sel, i + s), pair_b4(sel, i + 2u * s), pair_b4(sel, i + 3u * s)));
}

// mm_register_v4 over the two problems (both need the vec4 layouts, checked on the host).
// The entry points branch on the problem once, uniformly, and call the body with its
// parameters straight from the uniform block and `sel` a constant: software adapters then
// see uniform values (real branches, scalar strides) as in the single-problem kernels.
@compute @workgroup_size(8, 8, 1)
fn mm_register_v4_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (wid.y < mpp.split) {
        v4_pair_body(mpp.p0, 0u, wid.x, wid.y, lid);
    } else {
        v4_pair_body(mpp.p1, 1u, wid.x, wid.y - mpp.split, lid);
    }
}

fn v4_pair_body(q: MmP, sel: u32, wx: u32, wy: u32, lid: vec3<u32>) {
    let m0 = (wy * 8u + lid.y) * 8u;
    let n0 = (wx * 8u + lid.x) * 8u;
    var c00 = mat4x4<f32>();
    var c01 = mat4x4<f32>();
    var c10 = mat4x4<f32>();
    var c11 = mat4x4<f32>();
    let rows = (q.flags & 32u) != 0u && wx == 0u;
    var rs0 = vec4<f32>(0.0);
    var rs1 = vec4<f32>(0.0);
    for (var k = 0u; k < q.k; k = k + 4u) {
        let a0 = pair_a4(q, m0, k);
        let a1 = pair_a4(q, m0 + 4u, k);
        let b0 = pair_b4m(q, sel, k, n0);
        let b1 = pair_b4m(q, sel, k, n0 + 4u);
        c00 = c00 + a0 * b0;
        c01 = c01 + a0 * b1;
        c10 = c10 + a1 * b0;
        c11 = c11 + a1 * b1;
        if (rows) {
            rs0 = rs0 + a0[0] + a0[1] + a0[2] + a0[3];
            rs1 = rs1 + a1[0] + a1[1] + a1[2] + a1[3];
        }
    }
    if (rows && lid.x == 0u) {
        pair_rows(q, m0, rs0.x); pair_rows(q, m0 + 1u, rs0.y); pair_rows(q, m0 + 2u, rs0.z); pair_rows(q, m0 + 3u, rs0.w);
        pair_rows(q, m0 + 4u, rs1.x); pair_rows(q, m0 + 5u, rs1.y); pair_rows(q, m0 + 6u, rs1.z); pair_rows(q, m0 + 7u, rs1.w);
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        pair_store(q, sel, m0, n0 + j, c00[j].x); pair_store(q, sel, m0 + 1u, n0 + j, c00[j].y);
        pair_store(q, sel, m0 + 2u, n0 + j, c00[j].z); pair_store(q, sel, m0 + 3u, n0 + j, c00[j].w);
        pair_store(q, sel, m0, n0 + 4u + j, c01[j].x); pair_store(q, sel, m0 + 1u, n0 + 4u + j, c01[j].y);
        pair_store(q, sel, m0 + 2u, n0 + 4u + j, c01[j].z); pair_store(q, sel, m0 + 3u, n0 + 4u + j, c01[j].w);
        pair_store(q, sel, m0 + 4u, n0 + j, c10[j].x); pair_store(q, sel, m0 + 5u, n0 + j, c10[j].y);
        pair_store(q, sel, m0 + 6u, n0 + j, c10[j].z); pair_store(q, sel, m0 + 7u, n0 + j, c10[j].w);
        pair_store(q, sel, m0 + 4u, n0 + 4u + j, c11[j].x); pair_store(q, sel, m0 + 5u, n0 + 4u + j, c11[j].y);
        pair_store(q, sel, m0 + 6u, n0 + 4u + j, c11[j].z); pair_store(q, sel, m0 + 7u, n0 + 4u + j, c11[j].w);
    }
}

// mm_register over the two problems (any shapes).
@compute @workgroup_size(8, 8, 1)
fn mm_register_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (wid.y < mpp.split) {
        reg_pair_body(mpp.p0, 0u, wid.x, wid.y, lid);
    } else {
        reg_pair_body(mpp.p1, 1u, wid.x, wid.y - mpp.split, lid);
    }
}

fn reg_pair_body(q: MmP, sel: u32, wx: u32, wy: u32, lid: vec3<u32>) {
    let m0 = wy * 32u + lid.y;
    let n0 = wx * 32u + lid.x;
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        ar[i] = min(m0 + i * 8u, q.m - 1u) * q.ars;
        bc[i] = min(n0 + i * 8u, q.n - 1u) * q.bcs;
    }
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    var ka = 0u;
    var kb = 0u;
    let rows = (q.flags & 32u) != 0u && wx == 0u;
    var rs = vec4<f32>(0.0);
    for (var k = 0u; k < q.k; k = k + 1u) {
        let bv = vec4<f32>(pair_b(sel, bc[0] + kb), pair_b(sel, bc[1] + kb), pair_b(sel, bc[2] + kb), pair_b(sel, bc[3] + kb));
        let av = vec4<f32>(ma[ar[0] + ka], ma[ar[1] + ka], ma[ar[2] + ka], ma[ar[3] + ka]);
        acc[0] = acc[0] + av.x * bv;
        acc[1] = acc[1] + av.y * bv;
        acc[2] = acc[2] + av.z * bv;
        acc[3] = acc[3] + av.w * bv;
        if (rows) { rs = rs + av; }
        ka = ka + q.acs;
        kb = kb + q.brs;
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = m0 + i * 8u;
        pair_store(q, sel, m, n0, acc[i].x);
        pair_store(q, sel, m, n0 + 8u, acc[i].y);
        pair_store(q, sel, m, n0 + 16u, acc[i].z);
        pair_store(q, sel, m, n0 + 24u, acc[i].w);
    }
    if (rows && lid.x == 0u) {
        pair_rows(q, m0, rs.x);
        pair_rows(q, m0 + 8u, rs.y);
        pair_rows(q, m0 + 16u, rs.z);
        pair_rows(q, m0 + 24u, rs.w);
    }
}

// 16x16 threads, 4x4 outputs each: a 64x64 tile per workgroup, K in steps of 16, over the two
// problems.
@compute @workgroup_size(16, 16, 1)
fn mm_tiled_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    if (wid.y < mpp.split) {
        tiled_pair_body(mpp.p0, 0u, wid.x, wid.y, 0u, 0u, mpp.p0.k, lid, li);
    } else {
        // Problem 1's rows of workgroups: its M tiles, once per K chunk.
        let r = wid.y - mpp.split;
        let tiles = (mpp.p1.m + TILE - 1u) / TILE;
        let part = r / tiles;
        let kbeg = part * mpp.kper;
        tiled_pair_body(mpp.p1, 1u, wid.x, r % tiles, part, kbeg, min(mpp.p1.k, kbeg + mpp.kper), lid, li);
    }
}

// One 64x64 tile of problem `q` over K in [kbeg, kend) (kbeg a multiple of BK).
fn tiled_pair_body(q: MmP, sel: u32, wx: u32, wy: u32, part: u32, kbeg: u32, kend: u32, lid: vec3<u32>, li: u32) {
    let mt = wy * TILE;
    let nt = wx * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    let rows = (q.flags & 32u) != 0u && wx == 0u && lid.x == 0u;
    var rs = vec4<f32>(0.0);
    for (var k0 = kbeg; k0 < kend; k0 = k0 + BK) {
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = li + e * 256u;
            let kk = idx / 64u;
            let rr = idx % 64u;
            let k = k0 + kk;
            let m = mt + rr;
            let n = nt + rr;
            var av = 0.0;
            var bv = 0.0;
            if (k < kend && m < q.m) { av = ma[m * q.ars + k * q.acs]; }
            if (k < kend && n < q.n) { bv = pair_b(sel, k * q.brs + n * q.bcs); }
            ta[kk][rr] = av;
            tb[kk][rr] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            let bv = vec4<f32>(tb[kk][lid.x], tb[kk][lid.x + 16u], tb[kk][lid.x + 32u], tb[kk][lid.x + 48u]);
            acc[0] = acc[0] + ta[kk][lid.y] * bv;
            acc[1] = acc[1] + ta[kk][lid.y + 16u] * bv;
            acc[2] = acc[2] + ta[kk][lid.y + 32u] * bv;
            acc[3] = acc[3] + ta[kk][lid.y + 48u] * bv;
            if (rows) { rs = rs + vec4<f32>(ta[kk][lid.y], ta[kk][lid.y + 16u], ta[kk][lid.y + 32u], ta[kk][lid.y + 48u]); }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = mt + lid.y + i * 16u;
        split_store(q, sel, part, m, nt + lid.x, acc[i].x);
        split_store(q, sel, part, m, nt + lid.x + 16u, acc[i].y);
        split_store(q, sel, part, m, nt + lid.x + 32u, acc[i].z);
        split_store(q, sel, part, m, nt + lid.x + 48u, acc[i].w);
    }
    if (rows) {
        split_rows(q, sel, part, mt + lid.y, rs.x);
        split_rows(q, sel, part, mt + lid.y + 16u, rs.y);
        split_rows(q, sel, part, mt + lid.y + 32u, rs.z);
        split_rows(q, sel, part, mt + lid.y + 48u, rs.w);
    }
}

// The split problem 1's chunks added up: dW (binding 2) and, with row sums, db (binding 3)
// from the partials (binding 1) of mm_tiled_pair, one thread per element, chunks in order.
@compute @workgroup_size(256)
fn mm_pair_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let q = mpp.p1;
    let len = q.m * q.n;
    let i = wg_linear(wid, nwg) * 256u + lid;
    if (i >= len + select(0u, q.m, (q.flags & 32u) != 0u)) { return; }
    var s = 0.0;
    for (var j = 0u; j < mpp.ksplit; j = j + 1u) { s = s + ma[j * (len + q.m) + i]; }
    if (i < len) { mb[i] = s; } else { mc[i - len] = s; }
}
