// 2-D max and average pooling over NCHW maps (planes = N*C), as PyTorch with ceil_mode=False.
// Backward passes are gathers (one thread per input pixel visits the windows covering it), so
// overlapping windows need no atomics.

struct PoolP {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, sh: u32,
    sw: u32, ph: u32, pw: u32, flags: u32,
}
@group(0) @binding(0) var<uniform> pp: PoolP;
// maxpool_fwd: x, y, idx. maxpool_bwd: dy, dx, idx. avgpool_fwd: x, y. avgpool_bwd: dy, dx.
@group(0) @binding(1) var<storage, read_write> p1: array<f32>;
@group(0) @binding(2) var<storage, read_write> p2: array<f32>;
@group(0) @binding(3) var<storage, read_write> pidx: array<u32>;

// Max over the window; the index (ih * w + iw within the plane) of the first maximum.
// Padding never wins: PyTorch pads max pooling with -inf.
@compute @workgroup_size(256)
fn maxpool_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let o = elem_index(wid, nwg, lid);
    if (o >= pp.planes * pp.oh * pp.ow) { return; }
    let ow = o % pp.ow;
    let oh = (o / pp.ow) % pp.oh;
    let plane = o / (pp.ow * pp.oh);
    let h0 = i32(oh * pp.sh) - i32(pp.ph);
    let w0 = i32(ow * pp.sw) - i32(pp.pw);
    var best = -3.402823e38;
    var bi = 0u;
    var found = false;
    for (var ky = 0u; ky < pp.kh; ky = ky + 1u) {
        let ih = h0 + i32(ky);
        if (ih < 0 || ih >= i32(pp.h)) { continue; }
        for (var kx = 0u; kx < pp.kw; kx = kx + 1u) {
            let iw = w0 + i32(kx);
            if (iw < 0 || iw >= i32(pp.w)) { continue; }
            let at = u32(ih) * pp.w + u32(iw);
            let v = p1[plane * pp.h * pp.w + at];
            if (!found || v > best) { best = v; bi = at; found = true; }
        }
    }
    p2[o] = best;
    pidx[o] = bi;
}

// Output rows whose window covers input row i: ceil((i + p - k + 1) / s) ..= (i + p) / s.
fn pool_first(i: u32, p: u32, k: u32, s: u32) -> u32 {
    let t = i32(i + p) - i32(k) + 1;
    return u32(max(0, (t + i32(s) - 1) / i32(s)));
}

@compute @workgroup_size(256)
fn maxpool_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= pp.planes * pp.h * pp.w) { return; }
    let iw = i % pp.w;
    let ih = (i / pp.w) % pp.h;
    let plane = i / (pp.w * pp.h);
    let at = ih * pp.w + iw;
    let oh1 = min((ih + pp.ph) / pp.sh + 1u, pp.oh);
    let ow1 = min((iw + pp.pw) / pp.sw + 1u, pp.ow);
    var acc = 0.0;
    for (var oh = pool_first(ih, pp.ph, pp.kh, pp.sh); oh < oh1; oh = oh + 1u) {
        for (var ow = pool_first(iw, pp.pw, pp.kw, pp.sw); ow < ow1; ow = ow + 1u) {
            let o = (plane * pp.oh + oh) * pp.ow + ow;
            if (pidx[o] == at) { acc = acc + p1[o]; }
        }
    }
    p2[i] = acc;
}

// Divisor of window (oh, ow): k*k with count_include_pad (flags bit 0), else the number of
// real input pixels in it.
fn avg_div(oh: u32, ow: u32) -> f32 {
    if ((pp.flags & 1u) != 0u) { return f32(pp.kh * pp.kw); }
    let h0 = i32(oh * pp.sh) - i32(pp.ph);
    let w0 = i32(ow * pp.sw) - i32(pp.pw);
    let hn = min(h0 + i32(pp.kh), i32(pp.h)) - max(h0, 0);
    let wn = min(w0 + i32(pp.kw), i32(pp.w)) - max(w0, 0);
    return f32(max(hn * wn, 1));
}

@compute @workgroup_size(256)
fn avgpool_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let o = elem_index(wid, nwg, lid);
    if (o >= pp.planes * pp.oh * pp.ow) { return; }
    let ow = o % pp.ow;
    let oh = (o / pp.ow) % pp.oh;
    let plane = o / (pp.ow * pp.oh);
    let h0 = i32(oh * pp.sh) - i32(pp.ph);
    let w0 = i32(ow * pp.sw) - i32(pp.pw);
    var acc = 0.0;
    for (var ky = 0u; ky < pp.kh; ky = ky + 1u) {
        let ih = h0 + i32(ky);
        if (ih < 0 || ih >= i32(pp.h)) { continue; }
        for (var kx = 0u; kx < pp.kw; kx = kx + 1u) {
            let iw = w0 + i32(kx);
            if (iw < 0 || iw >= i32(pp.w)) { continue; }
            acc = acc + p1[(plane * pp.h + u32(ih)) * pp.w + u32(iw)];
        }
    }
    p2[o] = acc / avg_div(oh, ow);
}

@compute @workgroup_size(256)
fn avgpool_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= pp.planes * pp.h * pp.w) { return; }
    let iw = i % pp.w;
    let ih = (i / pp.w) % pp.h;
    let plane = i / (pp.w * pp.h);
    let oh1 = min((ih + pp.ph) / pp.sh + 1u, pp.oh);
    let ow1 = min((iw + pp.pw) / pp.sw + 1u, pp.ow);
    var acc = 0.0;
    for (var oh = pool_first(ih, pp.ph, pp.kh, pp.sh); oh < oh1; oh = oh + 1u) {
        for (var ow = pool_first(iw, pp.pw, pp.kw, pp.sw); ow < ow1; ow = ow + 1u) {
            acc = acc + p1[(plane * pp.oh + oh) * pp.ow + ow] / avg_div(oh, ow);
        }
    }
    p2[i] = acc;
}
