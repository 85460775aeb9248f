// The tiled matmuls for real GPUs: 64*WB x 64*WB outputs per workgroup of 16x16 threads,
// 4*WB x 4*WB per thread (WB x WB blocks of 4x4, 64 apart), K in steps of WBK. The family's
// header sets WB and WBK (src/gpu/kernels.rs): matmul_wide8/16 are the 128x128 tiles (8x8
// per thread) with a K step of 8, or 16 where the adapter's workgroup storage holds it
// (KernelProfile::wide_bk); matmul_tile64 the 64x64 tiles (4x4 per thread, K step 16) for
// problems too small to fill a GPU with 128x128 ones.
//
// Why this shape: each K step a thread reads 2*WB vec4s from workgroup memory for 16*WB*WB
// multiply-adds (mm_tiled_pair reads 8 scalars for 16); the next step's global loads are issued
// before the current step's arithmetic (register prefetch), so their latency hides behind
// it. Tiles are stored K-major, A as wa[k][m] and B as wb[k][n] in vec4s, each row padded by
// one vec4: the stores of a K-contiguous operand (a few threads per row, 4 k each) then
// spread over the banks, and the reads (wa[k][ty + 16i], wb[k][tx + 16j]) are broadcasts and
// consecutive vec4s.
//
// mm_tiles_v4 loads a vec4 per slot and needs the contiguous axis of each operand 4-aligned
// (K, or M for a transposed A, N for a plain B: MatmulOp::vec4 on the host); mm_tiles loads
// the same slots element by element and takes any shape. Both share everything but the
// global loads. flags bit 6: A is stored transposed ([K][M], M contiguous); bit 7: B is
// stored transposed ([N][K], K contiguous).

const WTILE: u32 = 64u * WB;        // outputs per workgroup along M and N
const WROW: u32 = 16u * WB + 1u;    // vec4s per tile row: WTILE floats + 4 of padding
const WE: u32 = WB * WBK / 16u;     // vec4 slots per thread per operand per K step
var<workgroup> wa: array<vec4<f32>, WBK * WROW>;
var<workgroup> wb: array<vec4<f32>, WBK * WROW>;

struct WideTile { b: u32, mt: u32, nt: u32, abase: u32, bbase: u32 }

fn wide_tile(wid: vec3<u32>) -> WideTile {
    return WideTile(wid.z, wid.y * WTILE, wid.x * WTILE, wid.z * mp.sab, wid.z * mp.sbb);
}

// Slot e of thread t in an operand tile of WTILE rows (M for A, N for B) by WBK steps of K:
// (row, k) of its first element. Along K (`kc`: the operand is K-contiguous), WBK/4 threads
// share a row and take 4 consecutive k each; otherwise WTILE/4 threads share a k and take 4
// consecutive rows each. Either way a warp's loads are contiguous runs of memory.
fn wide_slot(kc: bool, t: u32, e: u32) -> vec2<u32> {
    let s = t + e * 256u;
    if (kc) { return vec2<u32>(s / (WBK / 4u), (s % (WBK / 4u)) * 4u); }
    return vec2<u32>((s % (WTILE / 4u)) * 4u, s / (WTILE / 4u));
}

fn a_kc() -> bool { return (mp.flags & 64u) == 0u; }
fn b_kc() -> bool { return (mp.flags & 128u) != 0u; }

// Element by element, zero outside the matrix (the zeros add nothing to the sums).
fn wide_fetch_a(tl: WideTile, t: u32, k0: u32) -> array<vec4<f32>, WE> {
    var out: array<vec4<f32>, WE>;
    let kc = a_kc();
    for (var e = 0u; e < WE; e = e + 1u) {
        let s = wide_slot(kc, t, e);
        for (var i = 0u; i < 4u; i = i + 1u) {
            let m = tl.mt + s.x + select(i, 0u, kc);
            let k = k0 + s.y + select(0u, i, kc);
            if (m < mp.m && k < mp.k) { out[e][i] = ma[tl.abase + m * mp.ars + k * mp.acs]; }
        }
    }
    return out;
}

fn wide_fetch_b(tl: WideTile, t: u32, k0: u32) -> array<vec4<f32>, WE> {
    var out: array<vec4<f32>, WE>;
    let kc = b_kc();
    for (var e = 0u; e < WE; e = e + 1u) {
        let s = wide_slot(kc, t, e);
        for (var i = 0u; i < 4u; i = i + 1u) {
            let n = tl.nt + s.x + select(i, 0u, kc);
            let k = k0 + s.y + select(0u, i, kc);
            if (n < mp.n && k < mp.k) { out[e][i] = mb[tl.bbase + k * mp.brs + n * mp.bcs]; }
        }
    }
    return out;
}

// One vec4 per slot: the 4-alignment makes each vec4 wholly inside or outside the matrix.
fn wide_fetch_a4(tl: WideTile, t: u32, k0: u32) -> array<vec4<f32>, WE> {
    var out: array<vec4<f32>, WE>;
    let kc = a_kc();
    for (var e = 0u; e < WE; e = e + 1u) {
        let s = wide_slot(kc, t, e);
        let m = tl.mt + s.x;
        let k = k0 + s.y;
        if (m < mp.m && k < mp.k) { out[e] = ma4[(tl.abase + m * mp.ars + k * mp.acs) / 4u]; }
    }
    return out;
}

fn wide_fetch_b4(tl: WideTile, t: u32, k0: u32) -> array<vec4<f32>, WE> {
    var out: array<vec4<f32>, WE>;
    let kc = b_kc();
    for (var e = 0u; e < WE; e = e + 1u) {
        let s = wide_slot(kc, t, e);
        let n = tl.nt + s.x;
        let k = k0 + s.y;
        if (n < mp.n && k < mp.k) { out[e] = mb4[(tl.bbase + k * mp.brs + n * mp.bcs) / 4u]; }
    }
    return out;
}

// The fetched slots into the K-major tiles: a K-contiguous slot is 4 k of one row (four
// scalar stores), the other kind 4 rows of one k (one vec4 store).
fn wide_put(fa: array<vec4<f32>, WE>, fb: array<vec4<f32>, WE>, t: u32) {
    let ka = a_kc();
    let kb = b_kc();
    for (var e = 0u; e < WE; e = e + 1u) {
        let sa = wide_slot(ka, t, e);
        let sb = wide_slot(kb, t, e);
        if (ka) {
            for (var i = 0u; i < 4u; i = i + 1u) { wa[(sa.y + i) * WROW + sa.x / 4u][sa.x % 4u] = fa[e][i]; }
        } else {
            wa[sa.y * WROW + sa.x / 4u] = fa[e];
        }
        if (kb) {
            for (var i = 0u; i < 4u; i = i + 1u) { wb[(sb.y + i) * WROW + sb.x / 4u][sb.x % 4u] = fb[e][i]; }
        } else {
            wb[sb.y * WROW + sb.x / 4u] = fb[e];
        }
    }
}

// One K step from the tiles: the thread's rows are 64i + ty*4.., its columns 64j + tx*4..
// (i, j < WB); acc[(4i + r) * WB + j] holds row block i's row r, column block j. `rows`: also
// sum the thread's A values (the row sums of op(A), flags bit 5).
fn wide_fma(acc: ptr<function, array<vec4<f32>, 4u * WB * WB>>, rs: ptr<function, array<vec4<f32>, WB>>, lid: vec3<u32>, rows: bool) {
    for (var kk = 0u; kk < WBK; kk = kk + 1u) {
        var a: array<vec4<f32>, WB>;
        var b: array<vec4<f32>, WB>;
        for (var i = 0u; i < WB; i = i + 1u) {
            a[i] = wa[kk * WROW + lid.y + 16u * i];
            b[i] = wb[kk * WROW + lid.x + 16u * i];
        }
        for (var i = 0u; i < WB; i = i + 1u) {
            for (var r = 0u; r < 4u; r = r + 1u) {
                for (var j = 0u; j < WB; j = j + 1u) {
                    let q = (4u * i + r) * WB + j;
                    (*acc)[q] = (*acc)[q] + a[i][r] * b[j];
                }
            }
            if (rows) { (*rs)[i] = (*rs)[i] + a[i]; }
        }
    }
}

fn wide_store(tl: WideTile, acc: ptr<function, array<vec4<f32>, 4u * WB * WB>>, rs: ptr<function, array<vec4<f32>, WB>>, lid: vec3<u32>, rows: bool) {
    for (var i = 0u; i < WB; i = i + 1u) {
        for (var r = 0u; r < 4u; r = r + 1u) {
            let m = tl.mt + 64u * i + lid.y * 4u + r;
            for (var j = 0u; j < WB; j = j + 1u) {
                let v = (*acc)[(4u * i + r) * WB + j];
                for (var c = 0u; c < 4u; c = c + 1u) { mm_store(tl.b, m, tl.nt + 64u * j + lid.x * 4u + c, v[c]); }
            }
            if (rows) { mm_rows(m, (*rs)[i][r]); }
        }
    }
}

// The two entry points differ only in their fetch functions (see the header).
@compute @workgroup_size(16, 16, 1)
fn mm_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let tl = wide_tile(wid);
    // Row sums by the first column of threads of the first column of workgroups.
    let rows = (mp.flags & 32u) != 0u && wid.x == 0u && lid.x == 0u;
    var acc: array<vec4<f32>, 4u * WB * WB>;
    var rs: array<vec4<f32>, WB>;
    var fa = wide_fetch_a(tl, t, 0u);
    var fb = wide_fetch_b(tl, t, 0u);
    for (var k0 = 0u; k0 < mp.k; k0 = k0 + WBK) {
        workgroupBarrier();
        wide_put(fa, fb, t);
        workgroupBarrier();
        if (k0 + WBK < mp.k) {
            fa = wide_fetch_a(tl, t, k0 + WBK);
            fb = wide_fetch_b(tl, t, k0 + WBK);
        }
        wide_fma(&acc, &rs, lid, rows);
    }
    wide_store(tl, &acc, &rs, lid, rows);
}

@compute @workgroup_size(16, 16, 1)
fn mm_tiles_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    let tl = wide_tile(wid);
    let rows = (mp.flags & 32u) != 0u && wid.x == 0u && lid.x == 0u;
    var acc: array<vec4<f32>, 4u * WB * WB>;
    var rs: array<vec4<f32>, WB>;
    var fa = wide_fetch_a4(tl, t, 0u);
    var fb = wide_fetch_b4(tl, t, 0u);
    for (var k0 = 0u; k0 < mp.k; k0 = k0 + WBK) {
        workgroupBarrier();
        wide_put(fa, fb, t);
        workgroupBarrier();
        if (k0 + WBK < mp.k) {
            fa = wide_fetch_a4(tl, t, k0 + WBK);
            fb = wide_fetch_b4(tl, t, k0 + WBK);
        }
        wide_fma(&acc, &rs, lid, rows);
    }
    wide_store(tl, &acc, &rs, lid, rows);
}
