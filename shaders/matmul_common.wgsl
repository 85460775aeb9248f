// Shared by the matmul families (src/gpu/kernels.rs): the uniform block, the bindings and the
// store epilogue. Element (m, k) of A is at b*sab + m*ars + k*acs, so transposes are just
// strides; flags bits 6 and 7 say A / B are transposed (which axis of each is contiguous).

struct MmP {
    m: u32, n: u32, k: u32, batch: u32,
    sab: u32, sbb: u32, scb: u32, flags: u32,
    ars: u32, acs: u32, brs: u32, bcs: u32,
    act: u32, dact: u32, _e0: u32, _e1: u32,
}
@group(0) @binding(0) var<uniform> mp: MmP;
@group(0) @binding(1) var<storage, read_write> ma: array<f32>;
@group(0) @binding(2) var<storage, read_write> mb: array<f32>;
@group(0) @binding(3) var<storage, read_write> mc: array<f32>;
@group(0) @binding(4) var<storage, read_write> mbias: array<f32>;
// Epilogue tensors (src/ops/matmul.rs, Epilogue); placeholders when a flag is off.
@group(0) @binding(5) var<storage, read_write> maux: array<f32>;
@group(0) @binding(6) var<storage, read_write> madd: array<f32>;
@group(0) @binding(7) var<storage, read_write> mact: array<f32>;
@group(0) @binding(8) var<storage, read_write> mrows: array<f32>;
// A and B as vec4s, for the vec4 kernels (an entry point uses one view or the other: WebGPU
// forbids two variables on one binding within an entry point).
@group(0) @binding(1) var<storage, read_write> ma4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> mb4: array<vec4<f32>>;

const MM_INV_SQRT2: f32 = 0.70710678118654752;
const MM_INV_SQRT_2PI: f32 = 0.39894228040143268;

// The unary maps of the epilogue, codes as `Unary` in src/ops/elementwise.rs (1 relu, 3 gelu).
fn mm_act(op: u32, x: f32) -> f32 {
    if (op == 1u) { return max(x, 0.0); }
    return 0.5 * x * (1.0 + erf_f(x * MM_INV_SQRT2));
}

fn mm_dact(op: u32, x: f32) -> f32 {
    if (op == 1u) { return select(0.0, 1.0, x > 0.0); }
    return 0.5 * (1.0 + erf_f(x * MM_INV_SQRT2)) + x * MM_INV_SQRT_2PI * exp(-0.5 * x * x);
}

// flags bit 0: add bias[n]; bit 1: accumulate into C (C += A@B); bit 2: times
// dact'(aux[idx]) (a fused unary gradient); bit 3: plus addend[idx] (residuals, gradient
// sums); bit 4: also write act(c) (a fused activation); bit 5: row sums of op(A) to mrows
// (see mm_rows).
fn mm_store(b: u32, m: u32, n: u32, v: f32) {
    if (m < mp.m && n < mp.n) {
        var r = v;
        if ((mp.flags & 1u) != 0u) { r = r + mbias[n]; }
        let idx = b * mp.scb + m * mp.n + n;
        if ((mp.flags & 2u) != 0u) { r = r + mc[idx]; }
        if ((mp.flags & 4u) != 0u) { r = r * mm_dact(mp.dact, maux[idx]); }
        if ((mp.flags & 8u) != 0u) { r = r + madd[idx]; }
        mc[idx] = r;
        if ((mp.flags & 16u) != 0u) { mact[idx] = mm_act(mp.act, r); }
    }
}

// Row sums of op(A) (a 2-D matmul): the threads of the first column block own whole rows,
// so they sum A's elements as they load them and store here.
fn mm_rows(m: u32, v: f32) {
    if (m < mp.m) { mrows[m] = v; }
}
