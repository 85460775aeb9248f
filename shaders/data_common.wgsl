// Shared header of the data kernels (shaders/data_*.wgsl; src/gpu/kernels.rs prepends it after
// common.wgsl). Data kernels sample a batch from a dataset kept on the GPU as packed bytes,
// gather it, augment it and normalise it. Every random number is a counter-based hash of
// (seed, step counter, stream salt, item, draw), so a replayed plan makes a new batch each step
// with no host writes, and the same seed replays the same run. src/ops/data/ holds the Rust
// twins of every kernel (the CPU references); src/ops/data/rng.rs ports these hashes.

// ---- random numbers ---------------------------------------------------------------------

// Key of one random stream: (seed, step, salt).
fn dkey(seed: u32, step: u32, salt: u32) -> u32 {
    return pcg_hash(pcg_hash(pcg_hash(seed) ^ step) ^ salt);
}

fn dbits(key: u32, item: u32, draw: u32) -> u32 {
    return pcg_hash(pcg_hash(key ^ item) ^ draw);
}

// Uniform in [0, 1), 24 bits.
fn du01(key: u32, item: u32, draw: u32) -> f32 {
    return f32(dbits(key, item, draw) >> 8u) * (1.0 / 16777216.0);
}

// Uniform in (0, 1].
fn dopen(key: u32, item: u32, draw: u32) -> f32 {
    return f32((dbits(key, item, draw) >> 8u) + 1u) * (1.0 / 16777216.0);
}

fn duni(key: u32, item: u32, draw: u32, lo: f32, hi: f32) -> f32 {
    return lo + (hi - lo) * du01(key, item, draw);
}

// Integer in [0, n) (n > 0).
fn dint(key: u32, item: u32, draw: u32, n: u32) -> u32 {
    return dbits(key, item, draw) % n;
}

// ---- grids ------------------------------------------------------------------------------

// Per-element kernels run on a grid of (pixel chunks of 256, planes): x covers the elements of
// one plane, y (and z beyond 65535) the planes, so a thread needs one division, not four
// (integer division is slow on software adapters, and per-plane values stay uniform).
fn plane_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y + wid.z * nwg.y;
}

fn pix_of(wid: vec3<u32>, lid: u32) -> u32 {
    return wid.x * 256u + lid;
}

// ---- per-sample view records ------------------------------------------------------------

// Record layout (24 floats per sample), shared with src/ops/data/ (REC):
//  0 ax, 1 bx, 2 lox, 3 hix   source x = clamp(ax * ox + bx, lox, hix) for output column ox
//  4 ay, 5 by, 6 loy, 7 hiy   same for rows
//  8 flip (0/1)               mirror the output horizontally
//  9 jitter applied (0/1), 10 brightness, 11 contrast, 12 saturation, 13 hue factor
// 14..17 the order of the four jitter ops (0 b, 1 c, 2 s, 3 h)
// 18 grayscale (0/1), 19 blur sigma (0: none)
// 20 top, 21 left, 22 height, 23 width of the crop box (source pixels; informative)
const REC: u32 = 24u;
