// 2-D convolution (NCHW, weights [Cout, Cin/groups, KH, KW], as PyTorch) as implicit GEMM:
// nothing is materialised, every operand element is gathered where it is used.
//
//   forward  y  : rows = output pixels (N*OH*OW), cols = Cout/groups, K = Cin/groups*KH*KW
//   input    dx : rows = input pixels  (N*H*W),   cols = Cin/groups,  K = Cout/groups*KH*KW
//                 (a transposed convolution; for stride s only kernel taps of the right
//                 phase contribute, so pixels are grouped by phase)
//   weight   dw : rows = Cout/groups, cols = Cin/groups*KH*KW, K = N*OH*OW, split over
//                 `split` chunks of (n, oh) rows whose partial sums `conv_sum_split` adds
//
// Two families, chosen per adapter (src/ops/conv.rs):
//   *_reg   register blocking without shared memory or barriers: each thread owns a block of
//           outputs (TP pixels of one row x TC channels). Lanes of a workgroup differ in pixels
//           and share channels, so weight reads are the same address across lanes. Software
//           adapters (lavapipe) turn every storage load into a per-lane gather and pay dearly
//           for barriers, so this is what runs there.
//   conv_tiled  the usual shared-memory GEMM tiling of shaders/matmul.wgsl (64x64 tiles, K in
//           steps of 16, 4x4 outputs per thread) with the operand tiles gathered from the
//           convolution's tensors: the shape for real GPUs. One entry point, three modes.
// Depthwise convolutions (groups == Cin == Cout) have direct kernels (dwc_*): there is no
// reduction over channels to tile.

struct CvP {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, groups: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, cin_g: u32, cout_g: u32,
    // bit 0: add bias; bit 1: accumulate into the output.
    flags: u32,
    // Pixel blocks per row (reg kernels), or columns of the GEMM (tiled).
    blocks: u32,
    // dw: number of (n, oh) row chunks and rows per chunk.
    split: u32,
    rows: u32,
    // dx: rows per phase (ceil(H / sh)); tiled: mode (0 fwd, 1 dx, 2 dw).
    qh: u32,
    mode: u32,
    // conv_wt: weight strides per output channel and per input channel of a group.
    wo: u32,
    wi: u32,
}
@group(0) @binding(0) var<uniform> cp: CvP;
// fwd: x, w, y, bias. dx: dy, w, dx. dw: x, dy, dw (or the split partial sums).
@group(0) @binding(1) var<storage, read_write> c1: array<f32>;
@group(0) @binding(2) var<storage, read_write> c2: array<f32>;
@group(0) @binding(3) var<storage, read_write> c3: array<f32>;
@group(0) @binding(4) var<storage, read_write> c4: array<f32>;

const TP: u32 = 4u;

// c1[row + iw] if the row is valid and 0 <= iw < width, else 0. The index is clamped so the
// load stays in range whatever the mask says (bounds checks are off on Vulkan).
fn ld1(row: u32, iw: i32, ok: bool, width: u32) -> f32 {
    let inb = ok && iw >= 0 && iw < i32(width);
    return select(0.0, c1[row + u32(clamp(iw, 0, i32(width) - 1))], inb);
}

fn ld2(row: u32, iw: i32, ok: bool, width: u32) -> f32 {
    let inb = ok && iw >= 0 && iw < i32(width);
    return select(0.0, c2[row + u32(clamp(iw, 0, i32(width) - 1))], inb);
}

fn out_store(i: u32, v: f32, bias: f32) {
    var r = v + bias;
    if ((cp.flags & 2u) != 0u) { r = r + c3[i]; }
    c3[i] = r;
}

// ---------------------------------------------------------------------------------------
// Forward, register blocked: TP consecutive output pixels of one row x 8 output channels.
// Grid: x = pixel blocks / 64, y = groups * ceil(cout_g / 8).
@compute @workgroup_size(64)
fn conv_fwd_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let total = cp.n * cp.oh * cp.blocks;
    let pb = wid.x * 64u + lid;
    // Threads past the last pixel block leave at once (no barriers here): with small maps
    // most of a workgroup may be idle, and idle SIMD batches then skip the loop.
    if (pb >= total) { return; }
    let p = pb;
    let owb = p % cp.blocks;
    let t = p / cp.blocks;
    let oh = t % cp.oh;
    let n = t / cp.oh;
    let cbs = (cp.cout_g + 7u) / 8u;
    let g = wid.y / cbs;
    let co0 = g * cp.cout_g + (wid.y % cbs) * 8u;
    let colast = g * cp.cout_g + cp.cout_g - 1u;
    let ksz = cp.kh * cp.kw;
    let kg = cp.cin_g * ksz;
    // Weight rows of the 8 channels, clamped inside the group (extra rows are not stored).
    let w0 = min(co0, colast) * kg;
    let w1 = min(co0 + 1u, colast) * kg;
    let w2 = min(co0 + 2u, colast) * kg;
    let w3 = min(co0 + 3u, colast) * kg;
    let w4 = min(co0 + 4u, colast) * kg;
    let w5 = min(co0 + 5u, colast) * kg;
    let w6 = min(co0 + 6u, colast) * kg;
    let w7 = min(co0 + 7u, colast) * kg;
    let ow0 = owb * TP;
    let iw0 = i32(ow0 * cp.sw) - i32(cp.pw);
    let s = i32(cp.sw);
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    for (var ci = 0u; ci < cp.cin_g; ci = ci + 1u) {
        let plane = (n * cp.cin + g * cp.cin_g + ci) * cp.h;
        for (var ky = 0u; ky < cp.kh; ky = ky + 1u) {
            let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
            let rok = ih >= 0 && ih < i32(cp.h);
            let row = (plane + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
            var k = ci * ksz + ky * cp.kw;
            for (var kx = 0u; kx < cp.kw; kx = kx + 1u) {
                let iw = iw0 + i32(kx);
                let xv = vec4<f32>(ld1(row, iw, rok, cp.w), ld1(row, iw + s, rok, cp.w),
                                   ld1(row, iw + 2 * s, rok, cp.w), ld1(row, iw + 3 * s, rok, cp.w));
                a0 = a0 + c2[w0 + k] * xv;
                a1 = a1 + c2[w1 + k] * xv;
                a2 = a2 + c2[w2 + k] * xv;
                a3 = a3 + c2[w3 + k] * xv;
                a4 = a4 + c2[w4 + k] * xv;
                a5 = a5 + c2[w5 + k] * xv;
                a6 = a6 + c2[w6 + k] * xv;
                a7 = a7 + c2[w7 + k] * xv;
                k = k + 1u;
            }
        }
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    let plane_out = cp.oh * cp.ow;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let co = co0 + i;
        if (co > colast) { break; }
        var b = 0.0;
        if ((cp.flags & 1u) != 0u) { b = c4[co]; }
        let base = (n * cp.cout + co) * plane_out + oh * cp.ow;
        for (var j = 0u; j < TP; j = j + 1u) {
            if (ow0 + j < cp.ow) { out_store(base + ow0 + j, acc[i][j], b); }
        }
    }
}

// Forward, register blocked with a row window: the (TP-1)*SW + KW input values a thread's
// TP pixels touch in one kernel row are loaded once and reused by every tap, instead of
// TP loads per tap. KW and SW are pipeline constants so the tap loops unroll and the window
// stays in registers. The weight comes transposed by conv_wt: [groups][cin_g*KH*KW][cp8]
// with the output channels of a group contiguous (padded with zeros to a multiple of 8), so
// the 8 channels of a tap are two vec4 loads. Same grid as conv_fwd_reg.
override KW: u32 = 3u;
override SW: u32 = 1u;

@group(0) @binding(2) var<storage, read_write> c2v: array<vec4<f32>>;

@compute @workgroup_size(64)
fn conv_fwd_win(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let total = cp.n * cp.oh * cp.blocks;
    let pb = wid.x * 64u + lid;
    if (pb >= total) { return; }
    let owb = pb % cp.blocks;
    let t = pb / cp.blocks;
    let oh = t % cp.oh;
    let n = t / cp.oh;
    let cbs = (cp.cout_g + 7u) / 8u;
    let g = wid.y / cbs;
    let j0 = (wid.y % cbs) * 8u;
    let co0 = g * cp.cout_g + j0;
    let colast = g * cp.cout_g + cp.cout_g - 1u;
    let ksz = cp.kh * KW;
    let cp8 = cbs * 8u;
    // vec4 index of tap 0 of this thread's 8 channels; each tap is cp8 / 4 vec4s further.
    var wv = (g * cp.cin_g * ksz * cp8 + j0) / 4u;
    let wstep = cp8 / 4u;
    let ow0 = owb * TP;
    let iw0 = i32(ow0 * SW) - i32(cp.pw);
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    var xr: array<f32, 16>;
    for (var ci = 0u; ci < cp.cin_g; ci = ci + 1u) {
        let plane = (n * cp.cin + g * cp.cin_g + ci) * cp.h;
        for (var ky = 0u; ky < cp.kh; ky = ky + 1u) {
            let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
            let rok = ih >= 0 && ih < i32(cp.h);
            let row = (plane + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
            for (var e = 0u; e < (TP - 1u) * SW + KW; e = e + 1u) { xr[e] = ld1(row, iw0 + i32(e), rok, cp.w); }
            for (var kx = 0u; kx < KW; kx = kx + 1u) {
                let xv = vec4<f32>(xr[kx], xr[kx + SW], xr[kx + 2u * SW], xr[kx + 3u * SW]);
                let wa = c2v[wv];
                let wb = c2v[wv + 1u];
                a0 = a0 + wa.x * xv;
                a1 = a1 + wa.y * xv;
                a2 = a2 + wa.z * xv;
                a3 = a3 + wa.w * xv;
                a4 = a4 + wb.x * xv;
                a5 = a5 + wb.y * xv;
                a6 = a6 + wb.z * xv;
                a7 = a7 + wb.w * xv;
                wv = wv + wstep;
            }
        }
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    let plane_out = cp.oh * cp.ow;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let co = co0 + i;
        if (co > colast) { break; }
        var b = 0.0;
        if ((cp.flags & 1u) != 0u) { b = c4[co]; }
        let base = (n * cp.cout + co) * plane_out + oh * cp.ow;
        for (var j = 0u; j < TP; j = j + 1u) {
            if (ow0 + j < cp.ow) { out_store(base + ow0 + j, acc[i][j], b); }
        }
    }
}

// The weight as conv_fwd_win reads it: wt[g][k][j] for k = (i, ky, kx) over cin_g*KH*KW and j
// over the output channels padded to cp8 = 8 * ceil(cout_g / 8). The source value of output
// channel j, input channel i, tap t of group g is w[g * cout_g * cin_g * KH*KW + j * wo + i * wi
// + t], or tap KH*KW-1-t with flags bit 2. Forward: wo = cin_g*KH*KW, wi = KH*KW. Input gradient
// (run as a forward convolution of dy): wo = KH*KW, wi = cin_g(original)*KH*KW, flipped.
// Bindings: w (1), wt (3). One thread per element of wt.
@compute @workgroup_size(256)
fn conv_wt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    let ksz = cp.kh * cp.kw;
    let kg = cp.cin_g * ksz;
    let cp8 = ((cp.cout_g + 7u) / 8u) * 8u;
    if (e >= cp.groups * kg * cp8) { return; }
    let j = e % cp8;
    let k = (e / cp8) % kg;
    let g = e / (cp8 * kg);
    var v = 0.0;
    if (j < cp.cout_g) {
        let t = k % ksz;
        let tt = select(t, ksz - 1u - t, (cp.flags & 4u) != 0u);
        v = c1[g * cp.cout_g * kg + j * cp.wo + (k / ksz) * cp.wi + tt];
    }
    c3[e] = v;
}

// ---------------------------------------------------------------------------------------
// Input gradient, register blocked: TP input pixels of one row spaced by the stride (so they
// share a phase, and their output columns are consecutive) x 8 input channels. Pixels are
// numbered phase-major so the lanes of a SIMD batch skip the same kernel taps.
// Grid: x = (sh*sw phases * N * qh * blocks) / 64, y = groups * ceil(cin_g / 8).
@compute @workgroup_size(64)
fn conv_dx_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let per_phase = cp.n * cp.qh * cp.blocks;
    let total = cp.sh * cp.sw * per_phase;
    let pb = wid.x * 64u + lid;
    if (pb >= total) { return; }
    let p = pb;
    let phase = p / per_phase;
    var r = p % per_phase;
    let b = r % cp.blocks;
    r = r / cp.blocks;
    let q = r % cp.qh;
    let n = r / cp.qh;
    let rh = phase / cp.sw;
    let rw = phase % cp.sw;
    let ih = rh + q * cp.sh;
    let iw0 = rw + b * TP * cp.sw;
    let cbs = (cp.cin_g + 7u) / 8u;
    let g = wid.y / cbs;
    let ci0 = (wid.y % cbs) * 8u;
    let cilast = cp.cin_g - 1u;
    let ksz = cp.kh * cp.kw;
    // The weight comes from conv_wt as [groups][(co, ky, kx)][ci padded to 8]: the 8 input
    // channels of a tap are two vec4 loads.
    let cp8 = cbs * 8u;
    let wbase = (g * cp.cout_g * ksz * cp8 + ci0) / 4u;
    let wstep = cp8 / 4u;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    // Taps of this phase: ky = (ih + ph) mod sh, + sh, ...; likewise kx.
    let ky0 = (ih + cp.ph) % cp.sh;
    let kx0 = (iw0 + cp.pw) % cp.sw;
    // Output row and column of the first tap of this phase; each further tap (ky + sh,
    // kx + sw) moves one row / column back. No divisions in the loops (llvmpipe scalarises
    // integer division per lane).
    let oh0 = (i32(ih + cp.ph) - i32(ky0)) / i32(cp.sh);
    let ow00 = (i32(iw0 + cp.pw) - i32(kx0)) / i32(cp.sw);
    for (var co = 0u; co < cp.cout_g; co = co + 1u) {
        let coa = g * cp.cout_g + co;
        let plane = (n * cp.cout + coa) * cp.oh;
        let wrow = wbase + co * ksz * wstep;
        var oh = oh0;
        for (var ky = ky0; ky < cp.kh; ky = ky + cp.sh) {
            let rok = oh >= 0 && oh < i32(cp.oh);
            let row = (plane + u32(clamp(oh, 0, i32(cp.oh) - 1))) * cp.ow;
            oh = oh - 1;
            var ows = ow00;
            for (var kx = kx0; kx < cp.kw; kx = kx + cp.sw) {
                let dv = vec4<f32>(ld1(row, ows, rok, cp.ow), ld1(row, ows + 1, rok, cp.ow),
                                   ld1(row, ows + 2, rok, cp.ow), ld1(row, ows + 3, rok, cp.ow));
                let k = wrow + (ky * cp.kw + kx) * wstep;
                let wa = c2v[k];
                let wb = c2v[k + 1u];
                a0 = a0 + wa.x * dv;
                a1 = a1 + wa.y * dv;
                a2 = a2 + wa.z * dv;
                a3 = a3 + wa.w * dv;
                a4 = a4 + wb.x * dv;
                a5 = a5 + wb.y * dv;
                a6 = a6 + wb.z * dv;
                a7 = a7 + wb.w * dv;
                ows = ows - 1;
            }
        }
    }
    if (ih >= cp.h) { return; }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var i = 0u; i < 8u; i = i + 1u) {
        let ci = ci0 + i;
        if (ci > cilast) { break; }
        let base = ((n * cp.cin + g * cp.cin_g + ci) * cp.h + ih) * cp.w;
        for (var j = 0u; j < TP; j = j + 1u) {
            let iw = iw0 + j * cp.sw;
            if (iw < cp.w) { out_store(base + iw, acc[i][j], 0.0); }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Weight gradient, register blocked: one kernel tap k = (ci, ky, kx) per thread x 8 output
// channels, reducing over the (n, oh) rows of chunk wid.z, TP output columns at a time.
// Bindings: x (1), dy (2), out (3): dw [Cout, K] or partial sums [split, Cout, K].
// Grid: x = ceil(cin_g*KH*KW / 64), y = groups * ceil(cout_g / 8), z = split.
@compute @workgroup_size(64)
fn conv_dw_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ksz = cp.kh * cp.kw;
    let kg = cp.cin_g * ksz;
    let kk = wid.x * 64u + lid;
    if (kk >= kg) { return; }
    let k = kk;
    let ci = k / ksz;
    let ky = (k % ksz) / cp.kw;
    let kx = k % cp.kw;
    let cbs = (cp.cout_g + 7u) / 8u;
    let g = wid.y / cbs;
    let co0 = g * cp.cout_g + (wid.y % cbs) * 8u;
    let colast = g * cp.cout_g + cp.cout_g - 1u;
    let opl = cp.oh * cp.ow;
    let d0 = min(co0, colast) * opl;
    let d1 = min(co0 + 1u, colast) * opl;
    let d2 = min(co0 + 2u, colast) * opl;
    let d3 = min(co0 + 3u, colast) * opl;
    let d4 = min(co0 + 4u, colast) * opl;
    let d5 = min(co0 + 5u, colast) * opl;
    let d6 = min(co0 + 6u, colast) * opl;
    let d7 = min(co0 + 7u, colast) * opl;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    let r0 = wid.z * cp.rows;
    let r1 = min(r0 + cp.rows, cp.n * cp.oh);
    let s = i32(cp.sw);
    // (n, oh) of row r, stepped without a division per row.
    var n = r0 / cp.oh;
    var oh = r0 % cp.oh;
    for (var r = r0; r < r1; r = r + 1u) {
        let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let xrow = ((n * cp.cin + g * cp.cin_g + ci) * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
        let dyrow = n * cp.cout * opl + oh * cp.ow;
        for (var ow = 0u; ow < cp.ow; ow = ow + TP) {
            let iw = i32(ow * cp.sw + kx) - i32(cp.pw);
            // Columns past OW read a clamped x value times a zero dy: mask x instead.
            let m1 = ow + 1u < cp.ow;
            let m2 = ow + 2u < cp.ow;
            let m3 = ow + 3u < cp.ow;
            let xv = vec4<f32>(ld1(xrow, iw, rok, cp.w), ld1(xrow, iw + s, rok && m1, cp.w),
                               ld1(xrow, iw + 2 * s, rok && m2, cp.w), ld1(xrow, iw + 3 * s, rok && m3, cp.w));
            let e = dyrow + ow;
            let o1 = min(ow + 1u, cp.ow - 1u) - ow;
            let o2 = min(ow + 2u, cp.ow - 1u) - ow;
            let o3 = min(ow + 3u, cp.ow - 1u) - ow;
            a0 = a0 + xv * vec4<f32>(c2[d0 + e], c2[d0 + e + o1], c2[d0 + e + o2], c2[d0 + e + o3]);
            a1 = a1 + xv * vec4<f32>(c2[d1 + e], c2[d1 + e + o1], c2[d1 + e + o2], c2[d1 + e + o3]);
            a2 = a2 + xv * vec4<f32>(c2[d2 + e], c2[d2 + e + o1], c2[d2 + e + o2], c2[d2 + e + o3]);
            a3 = a3 + xv * vec4<f32>(c2[d3 + e], c2[d3 + e + o1], c2[d3 + e + o2], c2[d3 + e + o3]);
            a4 = a4 + xv * vec4<f32>(c2[d4 + e], c2[d4 + e + o1], c2[d4 + e + o2], c2[d4 + e + o3]);
            a5 = a5 + xv * vec4<f32>(c2[d5 + e], c2[d5 + e + o1], c2[d5 + e + o2], c2[d5 + e + o3]);
            a6 = a6 + xv * vec4<f32>(c2[d6 + e], c2[d6 + e + o1], c2[d6 + e + o2], c2[d6 + e + o3]);
            a7 = a7 + xv * vec4<f32>(c2[d7 + e], c2[d7 + e + o1], c2[d7 + e + o2], c2[d7 + e + o3]);
        }
        oh = oh + 1u;
        if (oh == cp.oh) { oh = 0u; n = n + 1u; }
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    let part = wid.z * cp.cout * kg;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let co = co0 + i;
        if (co > colast) { break; }
        let v = acc[i];
        out_store(part + co * kg + k, v.x + v.y + v.z + v.w, 0.0);
    }
}

// conv_dw_reg for OW % 4 == 0: dy read as vec4s.
@compute @workgroup_size(64)
fn conv_dw_reg4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ksz = cp.kh * cp.kw;
    let kg = cp.cin_g * ksz;
    let kk = wid.x * 64u + lid;
    if (kk >= kg) { return; }
    let k = kk;
    let ci = k / ksz;
    let ky = (k % ksz) / cp.kw;
    let kx = k % cp.kw;
    let cbs = (cp.cout_g + 7u) / 8u;
    let g = wid.y / cbs;
    let co0 = g * cp.cout_g + (wid.y % cbs) * 8u;
    let colast = g * cp.cout_g + cp.cout_g - 1u;
    let opl = cp.oh * cp.ow;
    let d0 = min(co0, colast) * opl;
    let d1 = min(co0 + 1u, colast) * opl;
    let d2 = min(co0 + 2u, colast) * opl;
    let d3 = min(co0 + 3u, colast) * opl;
    let d4 = min(co0 + 4u, colast) * opl;
    let d5 = min(co0 + 5u, colast) * opl;
    let d6 = min(co0 + 6u, colast) * opl;
    let d7 = min(co0 + 7u, colast) * opl;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    let r0 = wid.z * cp.rows;
    let r1 = min(r0 + cp.rows, cp.n * cp.oh);
    let s = i32(cp.sw);
    // (n, oh) of row r, stepped without a division per row.
    var n = r0 / cp.oh;
    var oh = r0 % cp.oh;
    for (var r = r0; r < r1; r = r + 1u) {
        let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let xrow = ((n * cp.cin + g * cp.cin_g + ci) * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
        let dyrow = n * cp.cout * opl + oh * cp.ow;
        for (var ow = 0u; ow < cp.ow; ow = ow + TP) {
            let iw = i32(ow * cp.sw + kx) - i32(cp.pw);
            // Columns past OW read a clamped x value times a zero dy: mask x instead.
            let m1 = ow + 1u < cp.ow;
            let m2 = ow + 2u < cp.ow;
            let m3 = ow + 3u < cp.ow;
            let xv = vec4<f32>(ld1(xrow, iw, rok, cp.w), ld1(xrow, iw + s, rok && m1, cp.w),
                               ld1(xrow, iw + 2 * s, rok && m2, cp.w), ld1(xrow, iw + 3 * s, rok && m3, cp.w));
            // OW % 4 == 0: the 4 dy columns of a channel are one aligned vec4.
            let e = (dyrow + ow) / 4u;
            a0 = a0 + xv * c2v[d0 / 4u + e];
            a1 = a1 + xv * c2v[d1 / 4u + e];
            a2 = a2 + xv * c2v[d2 / 4u + e];
            a3 = a3 + xv * c2v[d3 / 4u + e];
            a4 = a4 + xv * c2v[d4 / 4u + e];
            a5 = a5 + xv * c2v[d5 / 4u + e];
            a6 = a6 + xv * c2v[d6 / 4u + e];
            a7 = a7 + xv * c2v[d7 / 4u + e];
        }
        oh = oh + 1u;
        if (oh == cp.oh) { oh = 0u; n = n + 1u; }
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    let part = wid.z * cp.cout * kg;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let co = co0 + i;
        if (co > colast) { break; }
        let v = acc[i];
        out_store(part + co * kg + k, v.x + v.y + v.z + v.w, 0.0);
    }
}

// Weight gradient for stride-1 convolutions that keep the width (OW == W, W % 4 == 0), with
// vec4 loads: one thread per (ci, ky) and 4 output channels, all KW taps. Along a row the x
// values arrive as aligned vec4s in a sliding window (previous, current, next), so each step
// of 4 columns loads one x vec4 and 4 dy vec4s (the same for all lanes) for 4*KW vec4 FMAs.
// Bindings as conv_dw_reg. Grid: x = ceil(cin_g*KH / 64), y = groups * ceil(cout_g / 4),
// z = split.
@group(0) @binding(1) var<storage, read_write> c1v: array<vec4<f32>>;

@compute @workgroup_size(64)
fn conv_dw_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lanes = cp.cin_g * cp.kh;
    let li = wid.x * 64u + lid;
    if (li >= lanes) { return; }
    let ci = li / cp.kh;
    let ky = li % cp.kh;
    let cbs = (cp.cout_g + 3u) / 4u;
    let g = wid.y / cbs;
    let j0 = (wid.y % cbs) * 4u;
    let jl = cp.cout_g - 1u;
    let opl = cp.oh * cp.ow;
    let d0 = (g * cp.cout_g + min(j0, jl)) * opl;
    let d1 = (g * cp.cout_g + min(j0 + 1u, jl)) * opl;
    let d2 = (g * cp.cout_g + min(j0 + 2u, jl)) * opl;
    let d3 = (g * cp.cout_g + min(j0 + 3u, jl)) * opl;
    let q4 = cp.w / 4u;
    var acc: array<vec4<f32>, 36>;
    for (var i = 0u; i < 4u * KW; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    let r0 = wid.z * cp.rows;
    let r1 = min(r0 + cp.rows, cp.n * cp.oh);
    var n = r0 / cp.oh;
    var oh = r0 % cp.oh;
    for (var r = r0; r < r1; r = r + 1u) {
        let ih = i32(oh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let xrow = (((n * cp.cin + g * cp.cin_g + ci) * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w) / 4u;
        let drow = (n * cp.cout * opl + oh * cp.ow) / 4u;
        var prev = vec4<f32>(0.0);
        var cur = select(vec4<f32>(0.0), c1v[xrow], rok);
        for (var q = 0u; q < q4; q = q + 1u) {
            let nok = rok && q + 1u < q4;
            let next = select(vec4<f32>(0.0), c1v[xrow + min(q + 1u, q4 - 1u)], nok);
            var win = array<f32, 12>(prev.x, prev.y, prev.z, prev.w, cur.x, cur.y, cur.z, cur.w,
                                     next.x, next.y, next.z, next.w);
            let dy0 = c2v[d0 / 4u + drow + q];
            let dy1 = c2v[d1 / 4u + drow + q];
            let dy2 = c2v[d2 / 4u + drow + q];
            let dy3 = c2v[d3 / 4u + drow + q];
            for (var kx = 0u; kx < KW; kx = kx + 1u) {
                // Columns ow..ow+3 of tap kx read x at ow + kx - pw: window offset 4 + kx - pw.
                // OW == W means pw = (KW - 1) / 2, a constant: the window stays in registers
                // (a private array indexed by a non-constant is a per-lane gather on llvmpipe).
                let s = 4u + kx - (KW - 1u) / 2u;
                let xs = vec4<f32>(win[s], win[s + 1u], win[s + 2u], win[s + 3u]);
                acc[kx * 4u] = acc[kx * 4u] + dy0 * xs;
                acc[kx * 4u + 1u] = acc[kx * 4u + 1u] + dy1 * xs;
                acc[kx * 4u + 2u] = acc[kx * 4u + 2u] + dy2 * xs;
                acc[kx * 4u + 3u] = acc[kx * 4u + 3u] + dy3 * xs;
            }
            prev = cur;
            cur = next;
        }
        oh = oh + 1u;
        if (oh == cp.oh) { oh = 0u; n = n + 1u; }
    }
    let kg = cp.cin_g * cp.kh * KW;
    let part = wid.z * cp.cout * kg;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (j0 + j > jl) { break; }
        let co = g * cp.cout_g + j0 + j;
        for (var kx = 0u; kx < KW; kx = kx + 1u) {
            let v = acc[kx * 4u + j];
            out_store(part + co * kg + (ci * cp.kh + ky) * KW + kx, v.x + v.y + v.z + v.w, 0.0);
        }
    }
}

// Weight gradient of a 1x1 stride-1 convolution: dw[co, ci] = sum over (n, pixel) of
// dy[n, co, p] * x[n, ci, p], pixels taken 4 at a time as vec4s (H*W % 4 == 0). One thread
// per 4 input channels (lanes) x 4 output channels (wid.y), reducing over the pixel quads
// of chunk wid.z (cp.rows quads per chunk). Bindings: x (1), dy (2), out (3).
@compute @workgroup_size(64)
fn conv_dw_pw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ib = wid.x * 64u + lid;
    if (ib * 4u >= cp.cin_g) { return; }
    let i0 = ib * 4u;
    let cbs = (cp.cout_g + 3u) / 4u;
    let g = wid.y / cbs;
    let j0 = (wid.y % cbs) * 4u;
    let il = cp.cin_g - 1u;
    let jl = cp.cout_g - 1u;
    let hw4 = cp.h * cp.w / 4u;
    // vec4 offsets of the 4 input and 4 output channel planes of sample 0.
    let x0 = (g * cp.cin_g + min(i0, il)) * hw4;
    let x1 = (g * cp.cin_g + min(i0 + 1u, il)) * hw4;
    let x2 = (g * cp.cin_g + min(i0 + 2u, il)) * hw4;
    let x3 = (g * cp.cin_g + min(i0 + 3u, il)) * hw4;
    let d0 = (g * cp.cout_g + min(j0, jl)) * hw4;
    let d1 = (g * cp.cout_g + min(j0 + 1u, jl)) * hw4;
    let d2 = (g * cp.cout_g + min(j0 + 2u, jl)) * hw4;
    let d3 = (g * cp.cout_g + min(j0 + 3u, jl)) * hw4;
    var acc: array<vec4<f32>, 16>;
    for (var k = 0u; k < 16u; k = k + 1u) { acc[k] = vec4<f32>(0.0); }
    let u0 = wid.z * cp.rows;
    let u1 = min(u0 + cp.rows, cp.n * hw4);
    var n = u0 / hw4;
    var q = u0 % hw4;
    for (var u = u0; u < u1; u = u + 1u) {
        let xs = n * cp.cin * hw4 + q;
        let ds = n * cp.cout * hw4 + q;
        let xa = c1v[xs + x0];
        let xb = c1v[xs + x1];
        let xc = c1v[xs + x2];
        let xd = c1v[xs + x3];
        let da = c2v[ds + d0];
        let db = c2v[ds + d1];
        let dc = c2v[ds + d2];
        let dd = c2v[ds + d3];
        acc[0] = acc[0] + da * xa; acc[1] = acc[1] + da * xb; acc[2] = acc[2] + da * xc; acc[3] = acc[3] + da * xd;
        acc[4] = acc[4] + db * xa; acc[5] = acc[5] + db * xb; acc[6] = acc[6] + db * xc; acc[7] = acc[7] + db * xd;
        acc[8] = acc[8] + dc * xa; acc[9] = acc[9] + dc * xb; acc[10] = acc[10] + dc * xc; acc[11] = acc[11] + dc * xd;
        acc[12] = acc[12] + dd * xa; acc[13] = acc[13] + dd * xb; acc[14] = acc[14] + dd * xc; acc[15] = acc[15] + dd * xd;
        q = q + 1u;
        if (q == hw4) { q = 0u; n = n + 1u; }
    }
    let part = wid.z * cp.cout * cp.cin_g;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (j0 + j > jl) { break; }
        for (var i = 0u; i < 4u; i = i + 1u) {
            if (i0 + i > il) { break; }
            let v = acc[j * 4u + i];
            out_store(part + (g * cp.cout_g + j0 + j) * cp.cin_g + i0 + i, v.x + v.y + v.z + v.w, 0.0);
        }
    }
}

// out[i] (+)= sum over s of part[s * len + i]; bindings: part (1), out (3). len = cp.rows.
@compute @workgroup_size(256)
fn conv_sum_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    let len = cp.rows;
    if (i >= len) { return; }
    var acc = 0.0;
    for (var s = 0u; s < cp.split; s = s + 1u) { acc = acc + c1[s * len + i]; }
    out_store(i, acc, 0.0);
}

// ---------------------------------------------------------------------------------------
// Depthwise (groups == Cin == Cout), direct. Forward: TP output pixels of one row of one
// (n, c) plane per thread. Grid: (N*C*OH*blocks) / 64.
@compute @workgroup_size(64)
fn dwc_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let total = cp.n * cp.cout * cp.oh * cp.blocks;
    let pb = wg_linear(wid, nwg) * 64u + lid;
    if (pb >= total) { return; }
    let p = pb;
    let owb = p % cp.blocks;
    let t = p / cp.blocks;
    let oh = t % cp.oh;
    let nc = t / cp.oh;
    let c = nc % cp.cout;
    let ow0 = owb * TP;
    let iw0 = i32(ow0 * cp.sw) - i32(cp.pw);
    let s = i32(cp.sw);
    let ksz = cp.kh * cp.kw;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < cp.kh; ky = ky + 1u) {
        let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let row = (nc * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
        for (var kx = 0u; kx < cp.kw; kx = kx + 1u) {
            let iw = iw0 + i32(kx);
            let xv = vec4<f32>(ld1(row, iw, rok, cp.w), ld1(row, iw + s, rok, cp.w),
                               ld1(row, iw + 2 * s, rok, cp.w), ld1(row, iw + 3 * s, rok, cp.w));
            acc = acc + c2[c * ksz + ky * cp.kw + kx] * xv;
        }
    }
    var b = 0.0;
    if ((cp.flags & 1u) != 0u) { b = c4[c]; }
    let base = (nc * cp.oh + oh) * cp.ow;
    for (var j = 0u; j < TP; j = j + 1u) {
        if (ow0 + j < cp.ow) { out_store(base + ow0 + j, acc[j], b); }
    }
}

// Depthwise input gradient: TP input pixels of one row spaced by the stride, phase-major as
// conv_dx_reg. Bindings: dy (1), w (2), dx (3). Grid: (sh*sw * N*C * qh * blocks) / 64.
@compute @workgroup_size(64)
fn dwc_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let per_phase = cp.n * cp.cin * cp.qh * cp.blocks;
    let total = cp.sh * cp.sw * per_phase;
    let pb = wg_linear(wid, nwg) * 64u + lid;
    if (pb >= total) { return; }
    let p = pb;
    let phase = p / per_phase;
    var r = p % per_phase;
    let b = r % cp.blocks;
    r = r / cp.blocks;
    let q = r % cp.qh;
    let nc = r / cp.qh;
    let c = nc % cp.cin;
    let ih = phase / cp.sw + q * cp.sh;
    let iw0 = phase % cp.sw + b * TP * cp.sw;
    let ky0 = (ih + cp.ph) % cp.sh;
    let kx0 = (iw0 + cp.pw) % cp.sw;
    var acc = vec4<f32>(0.0);
    var oh = (i32(ih + cp.ph) - i32(ky0)) / i32(cp.sh);
    let ow00 = (i32(iw0 + cp.pw) - i32(kx0)) / i32(cp.sw);
    for (var ky = ky0; ky < cp.kh; ky = ky + cp.sh) {
        let rok = oh >= 0 && oh < i32(cp.oh);
        let row = (nc * cp.oh + u32(clamp(oh, 0, i32(cp.oh) - 1))) * cp.ow;
        oh = oh - 1;
        var ows = ow00;
        for (var kx = kx0; kx < cp.kw; kx = kx + cp.sw) {
            let dv = vec4<f32>(ld1(row, ows, rok, cp.ow), ld1(row, ows + 1, rok, cp.ow),
                               ld1(row, ows + 2, rok, cp.ow), ld1(row, ows + 3, rok, cp.ow));
            acc = acc + c2[(c * cp.kh + ky) * cp.kw + kx] * dv;
            ows = ows - 1;
        }
    }
    if (ih >= cp.h) { return; }
    let base = (nc * cp.h + ih) * cp.w;
    for (var j = 0u; j < TP; j = j + 1u) {
        let iw = iw0 + j * cp.sw;
        if (iw < cp.w) { out_store(base + iw, acc[j], 0.0); }
    }
}

// Depthwise weight gradient: one (c, ky, kx) tap per thread, reducing over the (n, oh) rows
// of chunk wid.y. Bindings: x (1), dy (2), out (3). Grid: x = ceil(C*KH*KW / 64), y = split.
@compute @workgroup_size(64)
fn dwc_dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ksz = cp.kh * cp.kw;
    let len = cp.cout * ksz;
    let kk = wid.x * 64u + lid;
    if (kk >= len) { return; }
    let k = kk;
    let c = k / ksz;
    let ky = (k % ksz) / cp.kw;
    let kx = k % cp.kw;
    let r0 = wid.y * cp.rows;
    let r1 = min(r0 + cp.rows, cp.n * cp.oh);
    let s = i32(cp.sw);
    var acc = vec4<f32>(0.0);
    // (n, oh) of row r, stepped without a division per row.
    var n = r0 / cp.oh;
    var oh = r0 % cp.oh;
    for (var r = r0; r < r1; r = r + 1u) {
        let ih = i32(oh * cp.sh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let xrow = ((n * cp.cin + c) * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w;
        let dyrow = ((n * cp.cout + c) * cp.oh + oh) * cp.ow;
        for (var ow = 0u; ow < cp.ow; ow = ow + TP) {
            let iw = i32(ow * cp.sw + kx) - i32(cp.pw);
            let m1 = ow + 1u < cp.ow;
            let m2 = ow + 2u < cp.ow;
            let m3 = ow + 3u < cp.ow;
            let xv = vec4<f32>(ld1(xrow, iw, rok, cp.w), ld1(xrow, iw + s, rok && m1, cp.w),
                               ld1(xrow, iw + 2 * s, rok && m2, cp.w), ld1(xrow, iw + 3 * s, rok && m3, cp.w));
            let dv = vec4<f32>(ld2(dyrow, i32(ow), true, cp.ow), ld2(dyrow, i32(ow + 1u), m1, cp.ow),
                               ld2(dyrow, i32(ow + 2u), m2, cp.ow), ld2(dyrow, i32(ow + 3u), m3, cp.ow));
            acc = acc + xv * dv;
        }
        oh = oh + 1u;
        if (oh == cp.oh) { oh = 0u; n = n + 1u; }
    }
    out_store(wid.y * len + k, acc.x + acc.y + acc.z + acc.w, 0.0);
}

// Depthwise, stride 1, width kept (OW == W, pw = (KW-1)/2 <= 4), W % 4 == 0, KW <= 8.
// dwc_fwd_v4: 8 output pixels of one row per thread; the row window comes from four aligned
// vec4 loads and the KW weights of a kernel row from two vec4s of the padded copy
// [C][KH][8] that dwc_wt writes (flipped for the input gradient, which is this kernel run on
// dy). Grid: (N*C*OH*ceil(OW/8)) / 64.
@compute @workgroup_size(64)
fn dwc_fwd_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let total = cp.n * cp.cout * cp.oh * cp.blocks;
    let pb = wg_linear(wid, nwg) * 64u + lid;
    if (pb >= total) { return; }
    let owb = pb % cp.blocks;
    let t = pb / cp.blocks;
    let oh = t % cp.oh;
    let nc = t / cp.oh;
    let c = nc % cp.cout;
    let q4 = cp.w / 4u;
    let q0 = owb * 2u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    for (var ky = 0u; ky < cp.kh; ky = ky + 1u) {
        let ih = i32(oh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let r4 = ((nc * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w) / 4u;
        let v0 = select(vec4<f32>(0.0), c1v[r4 + max(q0, 1u) - 1u], rok && q0 > 0u);
        let v1 = select(vec4<f32>(0.0), c1v[r4 + min(q0, q4 - 1u)], rok && q0 < q4);
        let v2 = select(vec4<f32>(0.0), c1v[r4 + min(q0 + 1u, q4 - 1u)], rok && q0 + 1u < q4);
        let v3 = select(vec4<f32>(0.0), c1v[r4 + min(q0 + 2u, q4 - 1u)], rok && q0 + 2u < q4);
        let win = array<f32, 16>(v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w,
                                 v2.x, v2.y, v2.z, v2.w, v3.x, v3.y, v3.z, v3.w);
        let wi = (c * cp.kh + ky) * 2u;
        let wa = c2v[wi];
        let wb = c2v[wi + 1u];
        let wr = array<f32, 8>(wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w);
        for (var kx = 0u; kx < KW; kx = kx + 1u) {
            // Pixel ow0 + j reads x at ow0 + j + kx - pw: window element 4 + j + kx - pw.
            let s = 4u + kx - (KW - 1u) / 2u;
            acc0 = acc0 + wr[kx] * vec4<f32>(win[s], win[s + 1u], win[s + 2u], win[s + 3u]);
            acc1 = acc1 + wr[kx] * vec4<f32>(win[s + 4u], win[s + 5u], win[s + 6u], win[s + 7u]);
        }
    }
    var b = 0.0;
    if ((cp.flags & 1u) != 0u) { b = c4[c]; }
    let base = (nc * cp.oh + oh) * cp.ow + q0 * 4u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        out_store(base + j, acc0[j], b);
    }
    if (q0 + 1u < q4) {
        for (var j = 0u; j < 4u; j = j + 1u) { out_store(base + 4u + j, acc1[j], b); }
    }
}

// The depthwise weight [C, 1, KH, KW] as dwc_fwd_v4 reads it: [C][KH][8], zero padded, taps
// flipped (ky -> KH-1-ky, kx -> KW-1-kx) with flags bit 2. Bindings: w (1), out (3).
@compute @workgroup_size(256)
fn dwc_wt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    if (e >= cp.cout * cp.kh * 8u) { return; }
    let kx = e % 8u;
    let ky = (e / 8u) % cp.kh;
    let c = e / (8u * cp.kh);
    var v = 0.0;
    if (kx < cp.kw) {
        let flip = (cp.flags & 4u) != 0u;
        let sy = select(ky, cp.kh - 1u - ky, flip);
        let sx = select(kx, cp.kw - 1u - kx, flip);
        v = c1[(c * cp.kh + sy) * cp.kw + sx];
    }
    c3[e] = v;
}

// Depthwise weight gradient, stride 1, width kept, W % 4 == 0: one thread per (c, ky) with
// all KW taps, reducing over the (n, oh) rows of chunk wid.y with a sliding vec4 window of x.
// Bindings: x (1), dy (2), out (3). Grid: x = ceil(C*KH / 64), y = split.
@compute @workgroup_size(64)
fn dwc_dw_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let li = wid.x * 64u + lid;
    if (li >= cp.cout * cp.kh) { return; }
    let c = li / cp.kh;
    let ky = li % cp.kh;
    let q4 = cp.w / 4u;
    var acc: array<vec4<f32>, 9>;
    for (var k = 0u; k < KW; k = k + 1u) { acc[k] = vec4<f32>(0.0); }
    let r0 = wid.y * cp.rows;
    let r1 = min(r0 + cp.rows, cp.n * cp.oh);
    var n = r0 / cp.oh;
    var oh = r0 % cp.oh;
    for (var r = r0; r < r1; r = r + 1u) {
        let ih = i32(oh + ky) - i32(cp.ph);
        let rok = ih >= 0 && ih < i32(cp.h);
        let nc = n * cp.cout + c;
        let xr = ((nc * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w) / 4u;
        let dr = ((nc * cp.oh + oh) * cp.ow) / 4u;
        var prev = vec4<f32>(0.0);
        var cur = select(vec4<f32>(0.0), c1v[xr], rok);
        for (var q = 0u; q < q4; q = q + 1u) {
            let next = select(vec4<f32>(0.0), c1v[xr + min(q + 1u, q4 - 1u)], rok && q + 1u < q4);
            let win = array<f32, 12>(prev.x, prev.y, prev.z, prev.w, cur.x, cur.y, cur.z, cur.w,
                                     next.x, next.y, next.z, next.w);
            let d = c2v[dr + q];
            for (var kx = 0u; kx < KW; kx = kx + 1u) {
                let s = 4u + kx - (KW - 1u) / 2u;
                acc[kx] = acc[kx] + d * vec4<f32>(win[s], win[s + 1u], win[s + 2u], win[s + 3u]);
            }
            prev = cur;
            cur = next;
        }
        oh = oh + 1u;
        if (oh == cp.oh) { oh = 0u; n = n + 1u; }
    }
    let len = cp.cout * cp.kh * KW;
    for (var kx = 0u; kx < KW; kx = kx + 1u) {
        let v = acc[kx];
        out_store(wid.y * len + (c * cp.kh + ky) * KW + kx, v.x + v.y + v.z + v.w, 0.0);
    }
}

// ---------------------------------------------------------------------------------------
// Shared-memory tiled implicit GEMM for real GPUs (cp.mode: 0 forward, 1 dx, 2 dw).
// C[m, n] = sum_k A[m, k] B[k, n] per group (wid.z = group, and for dw also the split chunk):
//   fwd: m = output pixel, n = output channel in group, k = (ci, ky, kx)
//   dx:  m = input pixel,  n = input channel in group,  k = (co, ky, kx); zero where the tap
//        does not land on an output pixel
//   dw:  m = output channel in group, n = (ci, ky, kx), k = output pixel in the chunk
// Rows/cols/K of the GEMM: fwd (N*OH*OW, cout_g, cin_g*KH*KW); dx (N*H*W, cin_g,
// cout_g*KH*KW); dw (cout_g, cin_g*KH*KW, rows*OW).
const CT: u32 = 64u;
const CK: u32 = 16u;
var<workgroup> cta: array<array<f32, 64>, 16>;
var<workgroup> ctb: array<array<f32, 64>, 16>;

// x[n, c, ih, iw] from binding 1 with zero padding.
fn xat(n: u32, c: u32, ih: i32, iw: i32) -> f32 {
    let ok = ih >= 0 && ih < i32(cp.h) && iw >= 0 && iw < i32(cp.w);
    let i = ((n * cp.cin + c) * cp.h + u32(clamp(ih, 0, i32(cp.h) - 1))) * cp.w + u32(clamp(iw, 0, i32(cp.w) - 1));
    return select(0.0, c1[i], ok);
}

fn tiled_a(g: u32, chunk: u32, m: u32, k: u32) -> f32 {
    let ksz = cp.kh * cp.kw;
    if (cp.mode == 0u) {
        // x gathered for output pixel m and tap k
        let ow = m % cp.ow;
        let t = m / cp.ow;
        let oh = t % cp.oh;
        let n = t / cp.oh;
        let ci = k / ksz;
        let ky = (k % ksz) / cp.kw;
        let kx = k % cp.kw;
        return xat(n, g * cp.cin_g + ci, i32(oh * cp.sh + ky) - i32(cp.ph), i32(ow * cp.sw + kx) - i32(cp.pw));
    } else if (cp.mode == 1u) {
        // dy at the output pixel that input pixel m feeds through tap k
        let iw = m % cp.w;
        let t = m / cp.w;
        let ih = t % cp.h;
        let n = t / cp.h;
        let co = k / ksz;
        let ky = (k % ksz) / cp.kw;
        let kx = k % cp.kw;
        let ohs = i32(ih + cp.ph) - i32(ky);
        let ows = i32(iw + cp.pw) - i32(kx);
        let oh = ohs / i32(cp.sh);
        let ow = ows / i32(cp.sw);
        let ok = ohs >= 0 && ows >= 0 && ohs % i32(cp.sh) == 0 && ows % i32(cp.sw) == 0 && oh < i32(cp.oh) && ow < i32(cp.ow);
        let i = ((n * cp.cout + g * cp.cout_g + co) * cp.oh + u32(clamp(oh, 0, i32(cp.oh) - 1))) * cp.ow + u32(clamp(ow, 0, i32(cp.ow) - 1));
        return select(0.0, c1[i], ok);
    }
    // dw: dy[n, co = m, pixel k of the chunk]
    let r = chunk * cp.rows * cp.ow + k;
    let ow = r % cp.ow;
    let t = r / cp.ow;
    let oh = t % cp.oh;
    let n = t / cp.oh;
    return c2[((n * cp.cout + g * cp.cout_g + m) * cp.oh + oh) * cp.ow + ow];
}

fn tiled_b(g: u32, chunk: u32, k: u32, col: u32) -> f32 {
    let ksz = cp.kh * cp.kw;
    if (cp.mode == 0u) {
        // w[co = col, k]
        return c2[(g * cp.cout_g + col) * cp.cin_g * ksz + k];
    } else if (cp.mode == 1u) {
        // w[co, ci = col, ky, kx] with k = (co, ky, kx)
        let co = k / ksz;
        let t = k % ksz;
        return c2[((g * cp.cout_g + co) * cp.cin_g + col) * ksz + t];
    }
    // dw: x at output pixel k of the chunk through tap col = (ci, ky, kx)
    let r = chunk * cp.rows * cp.ow + k;
    let ow = r % cp.ow;
    let t = r / cp.ow;
    let oh = t % cp.oh;
    let n = t / cp.oh;
    let ci = col / ksz;
    let ky = (col % ksz) / cp.kw;
    let kx = col % cp.kw;
    return xat(n, g * cp.cin_g + ci, i32(oh * cp.sh + ky) - i32(cp.ph), i32(ow * cp.sw + kx) - i32(cp.pw));
}

fn tiled_store(g: u32, chunk: u32, m: u32, col: u32, v: f32) {
    let ksz = cp.kh * cp.kw;
    if (cp.mode == 0u) {
        let ow = m % cp.ow;
        let t = m / cp.ow;
        let oh = t % cp.oh;
        let n = t / cp.oh;
        let co = g * cp.cout_g + col;
        var b = 0.0;
        if ((cp.flags & 1u) != 0u) { b = c4[co]; }
        out_store(((n * cp.cout + co) * cp.oh + oh) * cp.ow + ow, v, b);
    } else if (cp.mode == 1u) {
        let iw = m % cp.w;
        let t = m / cp.w;
        let ih = t % cp.h;
        let n = t / cp.h;
        out_store(((n * cp.cin + g * cp.cin_g + col) * cp.h + ih) * cp.w + iw, v, 0.0);
    } else {
        let kg = cp.cin_g * ksz;
        out_store(chunk * cp.cout * kg + (g * cp.cout_g + m) * kg + col, v, 0.0);
    }
}

// Grid: x = ceil(cols / 64), y = ceil(rows / 64), z = groups (* split for dw).
@compute @workgroup_size(16, 16, 1)
fn conv_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let ksz = cp.kh * cp.kw;
    var g = wid.z;
    var chunk = 0u;
    var rows: u32;
    var cols: u32;
    var kdim: u32;
    if (cp.mode == 0u) {
        rows = cp.n * cp.oh * cp.ow; cols = cp.cout_g; kdim = cp.cin_g * ksz;
    } else if (cp.mode == 1u) {
        rows = cp.n * cp.h * cp.w; cols = cp.cin_g; kdim = cp.cout_g * ksz;
    } else {
        g = wid.z % cp.groups;
        chunk = wid.z / cp.groups;
        rows = cp.cout_g; cols = cp.cin_g * ksz;
        kdim = (min(chunk * cp.rows + cp.rows, cp.n * cp.oh) - chunk * cp.rows) * cp.ow;
    }
    let mt = wid.y * CT;
    let nt = wid.x * CT;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = 0u; k0 < kdim; k0 = k0 + CK) {
        for (var e = 0u; e < 4u; e = e + 1u) {
            let idx = li + e * 256u;
            let kk = idx / 64u;
            let rr = idx % 64u;
            let k = k0 + kk;
            var av = 0.0;
            var bv = 0.0;
            if (k < kdim && mt + rr < rows) { av = tiled_a(g, chunk, mt + rr, k); }
            if (k < kdim && nt + rr < cols) { bv = tiled_b(g, chunk, k, nt + rr); }
            cta[kk][rr] = av;
            ctb[kk][rr] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < CK; kk = kk + 1u) {
            let bv = vec4<f32>(ctb[kk][lid.x], ctb[kk][lid.x + 16u], ctb[kk][lid.x + 32u], ctb[kk][lid.x + 48u]);
            acc[0] = acc[0] + cta[kk][lid.y] * bv;
            acc[1] = acc[1] + cta[kk][lid.y + 16u] * bv;
            acc[2] = acc[2] + cta[kk][lid.y + 32u] * bv;
            acc[3] = acc[3] + cta[kk][lid.y + 48u] * bv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let m = mt + lid.y + i * 16u;
        if (m >= rows) { continue; }
        for (var j = 0u; j < 4u; j = j + 1u) {
            let col = nt + lid.x + j * 16u;
            if (col < cols) { tiled_store(g, chunk, m, col, acc[i][j]); }
        }
    }
}
