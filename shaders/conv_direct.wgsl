// Convolution kernels, direct family: register-blocked forward, input and weight gradients
// (see conv_common.wgsl), the weight re-layouts conv_wt and conv_layouts, and the split-sum
// conv_sum_split.
// Dispatched by src/ops/conv.rs. Prelude: common.wgsl, conv_common.wgsl.

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
// the 8 channels of a tap are two vec4 loads; it starts cp.woff vec4s into binding 2 (a
// conv_layouts tensor holds several). Same grid as conv_fwd_reg, plus a z layer of
// split_tail workgroups when the dispatch also finishes a weight gradient (cp.tz).
override SW: u32 = 1u;

@compute @workgroup_size(64)
fn conv_fwd_win(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    if (in_tail(wid)) { split_tail(wid, nwg, lid, 64u); return; }
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
    var wv = cp.woff + (g * cp.cin_g * ksz * cp8 + j0) / 4u;
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
    // Flags bit 3 (an input gradient run as this convolution): binding 4 is an elementwise
    // addend instead of a bias.
    let addend = (cp.flags & 8u) != 0u;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let co = co0 + i;
        if (co > colast) { break; }
        var b = 0.0;
        if ((cp.flags & 1u) != 0u) { b = c4[co]; }
        let base = (n * cp.cout + co) * plane_out + oh * cp.ow;
        for (var j = 0u; j < TP; j = j + 1u) {
            let o = base + ow0 + j;
            if (ow0 + j < cp.ow) {
                var bo = b;
                if (addend) { bo = c4[o]; }
                out_store(o, acc[i][j], bo);
            }
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

// Several weights in conv_wt's layouts at once (conv2d_weights in src/ops/conv.rs), one
// thread per output float. Bindings: the layouts (1), a table of cp.n entries (2, ten u32
// each: float offset, floats, weight 0..6, flip, groups, cin_g, cout_g, taps, wo, wi, in
// ascending offsets), the weights (3..9). cp.cin: floats in all. Each entry is conv_wt's
// mapping of its weight.
@group(0) @binding(2) var<storage, read_write> ctab: array<u32>;
@group(0) @binding(7) var<storage, read_write> c7: array<f32>;
@group(0) @binding(8) var<storage, read_write> c8: array<f32>;
@group(0) @binding(9) var<storage, read_write> c9: array<f32>;

fn layout_src(k: u32, i: u32) -> f32 {
    var v = 0.0;
    switch k {
        case 0u: { v = c3[i]; }
        case 1u: { v = c4[i]; }
        case 2u: { v = c5[i]; }
        case 3u: { v = c6[i]; }
        case 4u: { v = c7[i]; }
        case 5u: { v = c8[i]; }
        default: { v = c9[i]; }
    }
    return v;
}

@compute @workgroup_size(256)
fn conv_layouts(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let e = elem_index(wid, nwg, lid);
    if (e >= cp.cin) { return; }
    var q = 0u;
    for (var j = 1u; j < cp.n; j = j + 1u) {
        if (e >= ctab[10u * j]) { q = j; }
    }
    let t0 = 10u * q;
    let r = e - ctab[t0];
    let cin_g = ctab[t0 + 5u];
    let cout_g = ctab[t0 + 6u];
    let ksz = ctab[t0 + 7u];
    let kg = cin_g * ksz;
    let cp8 = ((cout_g + 7u) / 8u) * 8u;
    let j = r % cp8;
    let k = (r / cp8) % kg;
    let g = r / (cp8 * kg);
    var v = 0.0;
    if (j < cout_g && r < ctab[t0 + 1u]) {
        let t = k % ksz;
        let tt = select(t, ksz - 1u - t, ctab[t0 + 3u] != 0u);
        v = layout_src(ctab[t0 + 2u], g * cout_g * kg + j * ctab[t0 + 8u] + (k / ksz) * ctab[t0 + 9u] + tt);
    }
    c1[e] = v;
}

// ---------------------------------------------------------------------------------------
// Input gradient, register blocked: TP input pixels of one row spaced by the stride (so they
// share a phase, and their output columns are consecutive) x 8 input channels. Pixels are
// numbered phase-major so the lanes of a SIMD batch skip the same kernel taps.
// Bindings: dy (1), the weight as conv_wt lays it out (2, from vec4 cp.woff), dx (3), addend
// (4, flags bit 3). Grid: x = (sh*sw phases * N * qh * blocks) / 64, y = groups * ceil(cin_g /
// 8), plus a z layer of split_tail workgroups (cp.tz).
@compute @workgroup_size(64)
fn conv_dx_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    if (in_tail(wid)) { split_tail(wid, nwg, lid, 64u); return; }
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
    let wbase = cp.woff + (g * cp.cout_g * ksz * cp8 + ci0) / 4u;
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
            if (iw < cp.w) { dx_store(base + iw, acc[i][j]); }
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
