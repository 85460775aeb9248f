// Convolution kernels, depthwise family (dwc_*): direct kernels for groups == Cin == Cout.
// Dispatched by src/ops/conv.rs. Prelude: common.wgsl, conv_common.wgsl.

// ld1 on binding 2.
fn ld2(row: u32, iw: i32, ok: bool, width: u32) -> f32 {
    let inb = ok && iw >= 0 && iw < i32(width);
    return select(0.0, c2[row + u32(clamp(iw, 0, i32(width) - 1))], inb);
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
// conv_dx_reg. Bindings: dy (1), w (2), dx (3), addend (4, flags bit 3), split_tail's (5, 6).
// Grid: (sh*sw * N*C * qh * blocks) / 64, plus a split_tail z layer (cp.tz).
@compute @workgroup_size(64)
fn dwc_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    if (in_tail(wid)) { split_tail(wid, nwg, lid, 64u); return; }
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
        if (iw < cp.w) { dx_store(base + iw, acc[j]); }
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
    if (in_tail(wid)) { split_tail(wid, nwg, lid, 64u); return; }
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
    // Flags bit 3 (the input gradient): binding 4 is an elementwise addend, not a bias.
    let addend = (cp.flags & 8u) != 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        var bj = b;
        if (addend) { bj = c4[base + j]; }
        out_store(base + j, acc0[j], bj);
    }
    if (q0 + 1u < q4) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            var bj = b;
            if (addend) { bj = c4[base + 4u + j]; }
            out_store(base + 4u + j, acc1[j], bj);
        }
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
