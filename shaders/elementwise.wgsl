// Elementwise kernels: unary maps and their gradients, broadcasting binary ops, fill.

struct UnaryP { n: u32, op: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> up: UnaryP;
@group(0) @binding(1) var<storage, read_write> ux: array<f32>;
@group(0) @binding(2) var<storage, read_write> uy: array<f32>;
@group(0) @binding(3) var<storage, read_write> udx: array<f32>;

const INV_SQRT2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

// Op codes shared with src/ops/elementwise.rs (Unary).
fn unary_f(op: u32, x: f32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return x; }
        case 1u: { return max(x, 0.0); }
        case 2u: { return clamp(x, 0.0, 6.0); }
        case 3u: { return 0.5 * x * (1.0 + erf_f(x * INV_SQRT2)); }
        case 4u: { return tanh(x); }
        case 5u: { return exp(x); }
        case 6u: { return log(x); }
        case 7u: { return sqrt(x); }
        case 8u: { return a * x + b; }
        case 9u: { return pow(x, a); }
        case 10u: { return 1.0 / (1.0 + exp(-x)); }
        case 11u: { return abs(x); }
        case 12u: { return x * x; }
        case 13u: { return 1.0 / x; }
        case 14u: { return pow(x + b, a); }
        default: { return x; }
    }
}

// d unary_f / dx at x.
fn unary_df(op: u32, x: f32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return 1.0; }
        case 1u: { return select(0.0, 1.0, x > 0.0); }
        case 2u: { return select(0.0, 1.0, x > 0.0 && x < 6.0); }
        case 3u: { return 0.5 * (1.0 + erf_f(x * INV_SQRT2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x); }
        case 4u: { let t = tanh(x); return 1.0 - t * t; }
        case 5u: { return exp(x); }
        case 6u: { return 1.0 / x; }
        case 7u: { return 0.5 / sqrt(x); }
        case 8u: { return a; }
        case 9u: { return a * pow(x, a - 1.0); }
        case 10u: { let s = 1.0 / (1.0 + exp(-x)); return s * (1.0 - s); }
        case 11u: { return sign(x); }
        case 12u: { return 2.0 * x; }
        case 13u: { return -1.0 / (x * x); }
        case 14u: { return a * pow(x + b, a - 1.0); }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= up.n) { return; }
    uy[i] = unary_f(up.op, ux[i], up.alpha, up.beta);
}

// dx = dy * f'(x); bindings: x (1), dy (2), dx (3).
@compute @workgroup_size(256)
fn unary_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= up.n) { return; }
    udx[i] = uy[i] * unary_df(up.op, ux[i], up.alpha, up.beta);
}

struct FillP { n: u32, value: f32 }
@group(0) @binding(0) var<uniform> fp: FillP;
@group(0) @binding(1) var<storage, read_write> fy: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= fp.n) { return; }
    fy[i] = fp.value;
}

// Broadcasting binary op. Strides are 0 along broadcast dimensions. flags: bit 0 = a has the
// output's layout, bit 1 = b has it (skips the index arithmetic).
struct BinP {
    n: u32, op: u32, rank: u32, flags: u32,
    shape: array<vec4<u32>, 2>,
    sa: array<vec4<u32>, 2>,
    sb: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<uniform> bp: BinP;
@group(0) @binding(1) var<storage, read_write> ba: array<f32>;
@group(0) @binding(2) var<storage, read_write> bb: array<f32>;
@group(0) @binding(3) var<storage, read_write> bc: array<f32>;

fn binary_f(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return max(a, b); }
        case 5u: { return min(a, b); }
        default: { return a; }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= bp.n) { return; }
    var ia = i;
    var ib = i;
    if ((bp.flags & 3u) != 3u) {
        var rem = i;
        var oa = 0u;
        var ob = 0u;
        for (var d = i32(bp.rank) - 1; d >= 0; d = d - 1) {
            let k = u32(d);
            let s = bp.shape[k / 4u][k % 4u];
            let c = rem % s;
            rem = rem / s;
            oa = oa + c * bp.sa[k / 4u][k % 4u];
            ob = ob + c * bp.sb[k / 4u][k % 4u];
        }
        if ((bp.flags & 1u) == 0u) { ia = oa; }
        if ((bp.flags & 2u) == 0u) { ib = ob; }
    }
    bc[i] = binary_f(bp.op, ba[ia], bb[ib]);
}

// Dropout (group = 1) and drop path / stochastic depth (group = elements per sample):
// y = x * keep / (1 - p), keep drawn per group from (step counter, salt, group index), so
// the backward pass recomputes the same mask. Bindings: x (1), y (2), step (3).
struct DropP { n: u32, group: u32, salt: u32, seed: u32, p: f32, _q0: f32, _q1: f32, _q2: f32 }
@group(0) @binding(0) var<uniform> dp: DropP;
@group(0) @binding(1) var<storage, read_write> dx_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> dstep: array<u32>;

@compute @workgroup_size(256)
fn drop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= dp.n) { return; }
    let u = rand01(dp.seed ^ dstep[0], dp.salt, i / dp.group);
    dy_out[i] = select(0.0, dx_in[i] / (1.0 - dp.p), u >= dp.p);
}

// In-place accumulation into stored state: acc[i] += x[i] (metrics summed over steps).
struct AccP { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> ap: AccP;
@group(0) @binding(1) var<storage, read_write> acc_dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc_src: array<f32>;

@compute @workgroup_size(64)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= ap.n) { return; }
    acc_dst[gid.x] = acc_dst[gid.x] + acc_src[gid.x];
}
