// Data kernels, sampling: which dataset rows make this step's batch (a Feistel permutation per
// epoch, or the data in order), and the gather of their packed bytes. Rust twins in
// src/ops/data/sampling.rs. Prelude: common.wgsl, data_common.wgsl.

// ---- sampling ---------------------------------------------------------------------------

// Bijection of [0, n): a balanced 4-round Feistel network over 2*half bits, cycle-walked.
fn feistel(x: u32, n: u32, hb: u32, k: vec4<u32>) -> u32 {
    let mask = (1u << hb) - 1u;
    var v = x;
    loop {
        var l = v >> hb;
        var r = v & mask;
        for (var i = 0u; i < 4u; i++) {
            let t = l ^ (pcg_hash(r ^ k[i]) & mask);
            l = r;
            r = t;
        }
        v = (l << hb) | r;
        if (v < n) { return v; }
    }
    return v;
}

struct SampleP { n: u32, batch: u32, mode: u32, seed: u32, hb: u32, nb: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> sp: SampleP;
@group(0) @binding(1) var<storage, read_write> s_labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> s_step: array<u32>;
@group(0) @binding(3) var<storage, read_write> s_idx: array<u32>;
@group(0) @binding(4) var<storage, read_write> s_lab: array<u32>;
@group(0) @binding(5) var<storage, read_write> s_valid: array<f32>;

// One thread per batch row. Train (mode 0): row b of step s is position t = s*B + b of an
// endless stream cut into epochs of n; epoch e = t / n is a fresh permutation keyed by
// (seed, e). Eval (mode 1): batch i = s mod ceil(n/B) of the data in order; rows past the end
// wrap around and get valid = 0.
@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = elem_index(wid, nwg, lid);
    if (b >= sp.batch) { return; }
    let s = s_step[0];
    var idx = 0u;
    var valid = 1.0;
    if (sp.mode == 0u) {
        let q = s / sp.n;
        let r = s % sp.n;
        let t = r * sp.batch + b;
        let epoch = q * sp.batch + t / sp.n;
        let pos = t % sp.n;
        let ek = dkey(sp.seed, epoch, 0x5045524du);
        let k = vec4<u32>(dbits(ek, 0u, 0u), dbits(ek, 0u, 1u), dbits(ek, 0u, 2u), dbits(ek, 0u, 3u));
        idx = feistel(pos, sp.n, sp.hb, k);
    } else {
        let pos = (s % sp.nb) * sp.batch + b;
        idx = pos % sp.n;
        valid = select(0.0, 1.0, pos < sp.n);
    }
    s_idx[b] = idx;
    s_lab[b] = s_labels[idx];
    s_valid[b] = valid;
}

// ---- gather -----------------------------------------------------------------------------

struct GatherP { batch: u32, stride: u32, per_page: u32, page: u32 }
@group(0) @binding(0) var<uniform> gp: GatherP;
@group(0) @binding(1) var<storage, read_write> g_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> g_page: array<u32>;
@group(0) @binding(3) var<storage, read_write> g_raw: array<u32>;

// Copy the packed words of the batch's images that live in this page (one dispatch per page).
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = plane_of(wid, nwg);
    let w = pix_of(wid, lid);
    if (b >= gp.batch || w >= gp.stride) { return; }
    let img = g_idx[b];
    if (img / gp.per_page != gp.page) { return; }
    g_raw[b * gp.stride + w] = g_page[(img % gp.per_page) * gp.stride + w];
}
