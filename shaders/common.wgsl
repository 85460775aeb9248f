// Prelude shared by every kernel family (prepended by src/gpu/kernels.rs).
//
// Conventions: binding 0 is the uniform parameter block; storage bindings follow from 1 in
// the order the op lists them, all read_write (tensors share arena buffers). Large 1-D
// launches use a 2-D grid: wg_linear() recovers the linear workgroup index.

fn wg_linear(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Element index for one-thread-per-element kernels with 256-thread workgroups.
fn elem_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return wg_linear(wid, nwg) * 256u + lid;
}

// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit); exact GELU needs it.
fn erf_f(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

// Counter-based random numbers (PCG hash): the same (seed, counter) gives the same value on
// every adapter, so seeded runs replay.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn rand_u32(seed: u32, a: u32, b: u32) -> u32 {
    return pcg_hash(pcg_hash(pcg_hash(seed) ^ a) ^ b);
}

// Uniform in [0, 1).
fn rand01(seed: u32, a: u32, b: u32) -> f32 {
    return f32(rand_u32(seed, a, b) >> 8u) * (1.0 / 16777216.0);
}
