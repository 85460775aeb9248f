// Convolution kernels, tiled family: one shared-memory implicit GEMM for real GPUs.
// Dispatched by src/ops/conv.rs. Prelude: common.wgsl, conv_common.wgsl.

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

// A thread's row of the A tile or column of the B tile, decomposed once for the whole K
// loop (a thread loads the same row and column at every K step: see conv_tiled), and the
// output pixel of a dw K index, decomposed once for both operands. Integer division is
// slow on GPUs; this leaves the K index's own decomposition per element.
//   fwd A row:  n, y = oh*sh - ph, x = ow*sw - pw (the tap's offsets are added per k)
//   dx  A row:  n, y = ih + ph, x = iw + pw (the tap's offsets are subtracted per k)
//   dw  A row:  c = output channel in group;  dw B column: c = ci, y = ky, x = kx
//   fwd / dx B column: c = the output / input channel in group
//   dw pixel:   n, y = oh, x = ow
struct ConvAt { n: u32, y: i32, x: i32, c: u32 }

fn tiled_row(m: u32) -> ConvAt {
    if (cp.mode == 0u) {
        let t = m / cp.ow;
        return ConvAt(t / cp.oh, i32((t % cp.oh) * cp.sh) - i32(cp.ph), i32((m % cp.ow) * cp.sw) - i32(cp.pw), 0u);
    } else if (cp.mode == 1u) {
        let t = m / cp.w;
        return ConvAt(t / cp.h, i32(t % cp.h + cp.ph), i32(m % cp.w + cp.pw), 0u);
    }
    return ConvAt(0u, 0, 0, m);
}

fn tiled_col(col: u32) -> ConvAt {
    if (cp.mode == 2u) {
        let ksz = cp.kh * cp.kw;
        return ConvAt(0u, i32((col % ksz) / cp.kw), i32(col % cp.kw), col / ksz);
    }
    return ConvAt(0u, 0, 0, col);
}

fn tiled_pixel(chunk: u32, k: u32) -> ConvAt {
    let r = chunk * cp.rows * cp.ow + k;
    let t = r / cp.ow;
    return ConvAt(t / cp.oh, i32(t % cp.oh), i32(r % cp.ow), 0u);
}

fn tiled_a(g: u32, a: ConvAt, k: u32, px: ConvAt) -> f32 {
    let ksz = cp.kh * cp.kw;
    if (cp.mode == 0u) {
        // x gathered for output pixel m and tap k = (ci, ky, kx)
        let t = k % ksz;
        return xat(a.n, g * cp.cin_g + k / ksz, a.y + i32(t / cp.kw), a.x + i32(t % cp.kw));
    } else if (cp.mode == 1u) {
        // dy at the output pixel that input pixel m feeds through tap k = (co, ky, kx)
        let t = k % ksz;
        let ohs = a.y - i32(t / cp.kw);
        let ows = a.x - i32(t % cp.kw);
        let oh = ohs / i32(cp.sh);
        let ow = ows / i32(cp.sw);
        let ok = ohs >= 0 && ows >= 0 && ohs % i32(cp.sh) == 0 && ows % i32(cp.sw) == 0 && oh < i32(cp.oh) && ow < i32(cp.ow);
        let co = g * cp.cout_g + k / ksz;
        let i = ((a.n * cp.cout + co) * cp.oh + u32(clamp(oh, 0, i32(cp.oh) - 1))) * cp.ow + u32(clamp(ow, 0, i32(cp.ow) - 1));
        return select(0.0, c1[i], ok);
    }
    // dw: dy[n, co = m, pixel k of the chunk]
    return c2[((px.n * cp.cout + g * cp.cout_g + a.c) * cp.oh + u32(px.y)) * cp.ow + u32(px.x)];
}

fn tiled_b(g: u32, k: u32, b: ConvAt, px: ConvAt) -> f32 {
    let ksz = cp.kh * cp.kw;
    if (cp.mode == 0u) {
        // w[co = col, k]
        return c2[(g * cp.cout_g + b.c) * cp.cin_g * ksz + k];
    } else if (cp.mode == 1u) {
        // w[co, ci = col, ky, kx] with k = (co, ky, kx)
        return c2[((g * cp.cout_g + k / ksz) * cp.cin_g + b.c) * ksz + k % ksz];
    }
    // dw: x at output pixel k of the chunk through tap col = (ci, ky, kx)
    return xat(px.n, g * cp.cin_g + b.c, px.y * i32(cp.sh) + b.y - i32(cp.ph), px.x * i32(cp.sw) + b.x - i32(cp.pw));
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
        dx_store(((n * cp.cin + g * cp.cin_g + col) * cp.h + ih) * cp.w + iw, v);
    } else {
        let kg = cp.cin_g * ksz;
        out_store(chunk * cp.cout * kg + (g * cp.cout_g + m) * kg + col, v, 0.0);
    }
}

// Bindings: as conv_common.wgsl lists them (six for every mode). Grid: x = ceil(cols / 64),
// y = ceil(rows / 64), z = groups (* split for dw; + a split_tail layer for dx with cp.tz).
@compute @workgroup_size(16, 16, 1)
fn conv_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    // Input gradients that finish their layer's weight gradient: a z layer past the groups.
    if (in_tail(wid)) { split_tail(wid, nwg, li, 256u); return; }
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
    // Element e of this thread's loads is (k0 + li/64 + 4e, row or column rr): the same row
    // of A and column of B at every step.
    let rr = li % 64u;
    let arow = tiled_row(mt + rr);
    let bcol = tiled_col(nt + rr);
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = 0u; k0 < kdim; k0 = k0 + CK) {
        for (var e = 0u; e < 4u; e = e + 1u) {
            let kk = li / 64u + e * 4u;
            let k = k0 + kk;
            var px = ConvAt(0u, 0, 0, 0u);
            if (cp.mode == 2u) { px = tiled_pixel(chunk, k); }
            var av = 0.0;
            var bv = 0.0;
            if (k < kdim && mt + rr < rows) { av = tiled_a(g, arow, k, px); }
            if (k < kdim && nt + rr < cols) { bv = tiled_b(g, k, bcol, px); }
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
