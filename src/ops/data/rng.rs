//! The counter-based RNG of `shaders/common.wgsl` and `shaders/data_*.wgsl`, in Rust: the hash,
//! the stream draws of `data_common.wgsl`, the Feistel permutation and batch orders of
//! `data_sampling.wgsl`, and the gamma / beta draws of `data_mixing.wgsl`. Pure integer hashing,
//! so the CPU references draw exactly what the kernels draw.

use std::f32::consts::PI;

pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}
pub fn rand_u32(seed: u32, a: u32, b: u32) -> u32 {
    pcg_hash(pcg_hash(pcg_hash(seed) ^ a) ^ b)
}
/// Uniform in [0, 1).
pub fn rand01(seed: u32, a: u32, b: u32) -> f32 {
    (rand_u32(seed, a, b) >> 8) as f32 * (1.0 / 16777216.0)
}
/// Key of the stream (seed, step, salt).
pub fn dkey(seed: u32, step: u32, salt: u32) -> u32 {
    rand_u32(seed, step, salt)
}
pub fn dbits(key: u32, item: u32, draw: u32) -> u32 {
    pcg_hash(pcg_hash(key ^ item) ^ draw)
}
/// Uniform in [0, 1).
pub fn du01(key: u32, item: u32, draw: u32) -> f32 {
    (dbits(key, item, draw) >> 8) as f32 * (1.0 / 16777216.0)
}
/// Uniform in (0, 1].
pub fn dopen(key: u32, item: u32, draw: u32) -> f32 {
    ((dbits(key, item, draw) >> 8) + 1) as f32 * (1.0 / 16777216.0)
}
pub fn duni(key: u32, item: u32, draw: u32, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * du01(key, item, draw)
}
/// Integer in [0, n).
pub fn dint(key: u32, item: u32, draw: u32, n: u32) -> u32 {
    dbits(key, item, draw) % n
}
/// Gamma(alpha, 1): Marsaglia-Tsang, alpha < 1 boosted by U^(1/alpha).
pub fn gamma_draw(key: u32, item: u32, alpha: f32) -> f32 {
    let mut a = alpha;
    let mut boost = 1.0f32;
    if a < 1.0 {
        boost = dopen(key, item, 0).powf(1.0 / a);
        a += 1.0;
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    for t in 0..64u32 {
        let u1 = dopen(key, item, 1 + 3 * t);
        let u2 = du01(key, item, 2 + 3 * t);
        let u3 = dopen(key, item, 3 + 3 * t);
        let x = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2 - PI).cos();
        let v1 = 1.0 + c * x;
        if v1 <= 0.0 {
            continue;
        }
        let v = v1 * v1 * v1;
        if u3.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v * boost;
        }
    }
    d * boost
}
/// Beta(alpha, alpha) from two gamma draws (items `item` and `item + 1`).
pub fn beta_draw(key: u32, item: u32, alpha: f32) -> f32 {
    let x = gamma_draw(key, item, alpha);
    let y = gamma_draw(key, item + 1, alpha);
    if x + y <= 0.0 { 0.5 } else { x / (x + y) }
}

/// Half the bit width of the Feistel domain for `n` elements (2^(2*hb) >= n, hb >= 1).
pub fn feistel_half_bits(n: u32) -> u32 {
    let bits = 32 - (n.max(2) - 1).leading_zeros();
    bits.div_ceil(2).max(1)
}
/// Round keys of epoch `epoch`.
pub fn feistel_keys(seed: u32, epoch: u32) -> [u32; 4] {
    let ek = dkey(seed, epoch, 0x5045524d);
    [dbits(ek, 0, 0), dbits(ek, 0, 1), dbits(ek, 0, 2), dbits(ek, 0, 3)]
}
/// A bijection of [0, n): a balanced 4-round Feistel network over 2*hb bits, cycle-walked.
pub fn feistel(x: u32, n: u32, hb: u32, k: [u32; 4]) -> u32 {
    let mask = (1u32 << hb) - 1;
    let mut v = x;
    loop {
        let (mut l, mut r) = (v >> hb, v & mask);
        for ki in k {
            let t = l ^ (pcg_hash(r ^ ki) & mask);
            l = r;
            r = t;
        }
        v = (l << hb) | r;
        if v < n {
            return v;
        }
    }
}
/// Dataset index of row `b` at `step` in training order (see [`super::Sampling::Train`]).
pub fn train_index(n: u32, batch: u32, seed: u32, step: u32, b: u32) -> u32 {
    let (q, r) = (step / n, step % n);
    let t = r * batch + b;
    let epoch = q * batch + t / n;
    feistel(t % n, n, feistel_half_bits(n), feistel_keys(seed, epoch))
}
/// (dataset index, valid) of row `b` at `step` in evaluation order.
pub fn eval_index(n: u32, batch: u32, step: u32, b: u32) -> (u32, bool) {
    let nb = n.div_ceil(batch);
    let pos = (step % nb) * batch + b;
    (pos % n, pos < n)
}
