// Batched matrix multiply C[b] = op(A[b]) @ op(B[b]) (+ bias[n]).
// Element (m, k) of A is at b*sab + m*ars + k*acs, so transposes are just strides.
// Two variants, chosen per adapter (src/gpu/mod.rs, KernelProfile):
//   mm_register_v4 / mm_register: each thread owns a block of outputs in registers; no
//                shared memory, no barriers. Best on software adapters, where barriers are
//                very expensive. The v4 form needs 4-aligned shapes; mm_register is the
//                general fallback (4x4 scalar loads).
//   mm_tiled:    64x64 workgroup tiles staged through workgroup memory, 4x4 per thread.
//                The usual shape for real GPUs.

struct MmP {
    m: u32, n: u32, k: u32, batch: u32,
    sab: u32, sbb: u32, scb: u32, flags: u32,
    ars: u32, acs: u32, brs: u32, bcs: u32,
}
@group(0) @binding(0) var<uniform> mp: MmP;
@group(0) @binding(1) var<storage, read_write> ma: array<f32>;
@group(0) @binding(2) var<storage, read_write> mb: array<f32>;
@group(0) @binding(3) var<storage, read_write> mc: array<f32>;
@group(0) @binding(4) var<storage, read_write> mbias: array<f32>;

// flags bit 0: add bias[n]; bit 1: accumulate into C (C += A@B).
fn mm_store(b: u32, m: u32, n: u32, v: f32) {
    if (m < mp.m && n < mp.n) {
        var r = v;
        if ((mp.flags & 1u) != 0u) { r = r + mbias[n]; }
        let idx = b * mp.scb + m * mp.n + n;
        if ((mp.flags & 2u) != 0u) { r = r + mc[idx]; }
        mc[idx] = r;
    }
}

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
    for (var k = 0u; k < mp.k; k = k + 1u) {
        let bv = vec4<f32>(mb[bc[0] + kb], mb[bc[1] + kb], mb[bc[2] + kb], mb[bc[3] + kb]);
        acc[0] = acc[0] + ma[ar[0] + ka] * bv;
        acc[1] = acc[1] + ma[ar[1] + ka] * bv;
        acc[2] = acc[2] + ma[ar[2] + ka] * bv;
        acc[3] = acc[3] + ma[ar[3] + ka] * bv;
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
}

const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> ta: array<array<f32, 64>, 16>;
var<workgroup> tb: array<array<f32, 64>, 16>;

// 16x16 threads, 4x4 outputs each: a 64x64 tile per workgroup, K in steps of 16.
@compute @workgroup_size(16, 16, 1)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let b = wid.z;
    let mt = wid.y * TILE;
    let nt = wid.x * TILE;
    let abase = b * mp.sab;
    let bbase = b * mp.sbb;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = 0u; k0 < mp.k; k0 = k0 + BK) {
        // 1024 elements of each tile, 4 per thread.
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = li + e * 256u;
            let kk = idx / 64u;
            let rr = idx % 64u;
            let k = k0 + kk;
            let m = mt + rr;
            let n = nt + rr;
            var av = 0.0;
            var bv = 0.0;
            if (k < mp.k && m < mp.m) { av = ma[abase + m * mp.ars + k * mp.acs]; }
            if (k < mp.k && n < mp.n) { bv = mb[bbase + k * mp.brs + n * mp.bcs]; }
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
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = mt + lid.y + i * 16u;
        mm_store(b, m, nt + lid.x, acc[i].x);
        mm_store(b, m, nt + lid.x + 16u, acc[i].y);
        mm_store(b, m, nt + lid.x + 32u, acc[i].z);
        mm_store(b, m, nt + lid.x + 48u, acc[i].w);
    }
}

// mm_register_v4: the register variant with vec4 loads. 4x4 blocks of A and B are loaded as
// four vec4 each and multiplied as mat4x4; each thread owns 8x8 outputs (four mat4x4). Needs
// K % 4 == 0 and the layouts noted at load_a4/load_b4 (checked on the host). On software
// adapters every storage load is a per-lane gather, so fewer, wider loads is what pays.
@group(0) @binding(1) var<storage, read_write> ma4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> mb4: array<vec4<f32>>;

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
    for (var k = 0u; k < mp.k; k = k + 4u) {
        let a0 = load_a4(abase, m0, k);
        let a1 = load_a4(abase, m0 + 4u, k);
        let b0 = load_b4(bbase, k, n0);
        let b1 = load_b4(bbase, k, n0 + 4u);
        c00 = c00 + a0 * b0;
        c01 = c01 + a0 * b1;
        c10 = c10 + a1 * b0;
        c11 = c11 + a1 * b1;
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
