// Shared header of the convolution kernels (shaders/conv_*.wgsl; src/gpu/kernels.rs prepends it
// after common.wgsl): the uniform block, the bindings, and the loads and stores every family uses.
//
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
// Three families, chosen per op and adapter (src/ops/conv.rs):
//   conv_direct.wgsl     *_reg, *_win, *_v4, *_pw: register blocking without shared memory or
//           barriers: each thread owns a block of outputs (TP pixels of one row x 8 channels).
//           Lanes of a workgroup differ in pixels and share channels, so weight reads are the
//           same address across lanes. Software adapters (lavapipe) turn every storage load
//           into a per-lane gather and pay dearly for barriers, so this is what runs there.
//           The weight re-layouts (conv_wt for one weight, conv_layouts for several at
//           once) and conv_sum_split (which adds the partial sums of every family's split
//           weight gradient) live there too.
//   conv_tiled.wgsl      conv_tiled: the usual shared-memory GEMM tiling of shaders/matmul.wgsl
//           (64x64 tiles, K in steps of 16, 4x4 outputs per thread) with the operand tiles
//           gathered from the convolution's tensors: the shape for real GPUs. One entry point,
//           three modes.
//   conv_depthwise.wgsl  dwc_*: depthwise convolutions (groups == Cin == Cout) have direct
//           kernels: there is no reduction over channels to tile.

struct CvP {
    n: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, groups: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, cin_g: u32, cout_g: u32,
    // bit 0: add bias; bit 1: accumulate into the output; bit 2: taps flipped (the input
    // gradient run as a forward convolution); bit 3: input gradients add the addend of binding 4
    // (dx = conv_dx(dy, w) + addend: a gradient sum folded into the store).
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
    // conv_fwd_win, conv_dx_reg: where the re-laid-out weight starts in binding 2 (vec4s).
    woff: u32,
    // Input-gradient dispatches that also finish a split weight gradient: workgroups with
    // wid.z >= tz (> 0) add the tsplit partial sums of tlen elements (binding 5) into the
    // weight gradient (binding 6). tz = 0: none.
    tz: u32,
    tlen: u32,
    tsplit: u32,
}
@group(0) @binding(0) var<uniform> cp: CvP;
// fwd: x, w, y, bias. dx: dy, w, dx, addend, [partials, dw]. dw: x, dy, dw (or the split
// partial sums).
@group(0) @binding(1) var<storage, read_write> c1: array<f32>;
@group(0) @binding(2) var<storage, read_write> c2: array<f32>;
@group(0) @binding(3) var<storage, read_write> c3: array<f32>;
@group(0) @binding(4) var<storage, read_write> c4: array<f32>;
@group(0) @binding(5) var<storage, read_write> c5: array<f32>;
@group(0) @binding(6) var<storage, read_write> c6: array<f32>;
// vec4 views of bindings 1 and 2 (the *_v4 and *_win kernels; never both views in one entry).
@group(0) @binding(1) var<storage, read_write> c1v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c2v: array<vec4<f32>>;

// Kernel width as a pipeline constant, so tap loops unroll (conv_fwd_win, conv_dw_v4, dwc_*_v4).
override KW: u32 = 3u;

const TP: u32 = 4u;

// c1[row + iw] if the row is valid and 0 <= iw < width, else 0. The index is clamped so the
// load stays in range whatever the mask says (bounds checks are off on Vulkan).
fn ld1(row: u32, iw: i32, ok: bool, width: u32) -> f32 {
    let inb = ok && iw >= 0 && iw < i32(width);
    return select(0.0, c1[row + u32(clamp(iw, 0, i32(width) - 1))], inb);
}

fn out_store(i: u32, v: f32, bias: f32) {
    var r = v + bias;
    if ((cp.flags & 2u) != 0u) { r = r + c3[i]; }
    c3[i] = r;
}

// An input gradient's store: plus the addend of binding 4 with flags bit 3.
fn dx_store(i: u32, v: f32) {
    var a = 0.0;
    if ((cp.flags & 8u) != 0u) { a = c4[i]; }
    out_store(i, v, a);
}

// Whether this workgroup is one of the split_tail workgroups of an input-gradient dispatch.
fn in_tail(wid: vec3<u32>) -> bool {
    return cp.tz != 0u && wid.z >= cp.tz;
}

// The tail of an input-gradient dispatch that also finishes its layer's weight gradient (the
// layer's conv2d_backward): dw[i] = sum over s of part[s * tlen + i] (bindings 5, 6), strided
// over the tail workgroups (z >= tz) of `wg` threads. The partial sums come from the
// dispatch before (the weight-gradient kernel), so no second pass is needed.
fn split_tail(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) {
    let f = ((wid.z - cp.tz) * nwg.y + wid.y) * nwg.x + wid.x;
    let stride = (nwg.z - cp.tz) * nwg.y * nwg.x * wg;
    for (var i = f * wg + lid; i < cp.tlen; i = i + stride) {
        var acc = 0.0;
        for (var s = 0u; s < cp.tsplit; s = s + 1u) { acc = acc + c5[s * cp.tlen + i]; }
        c6[i] = acc;
    }
}
