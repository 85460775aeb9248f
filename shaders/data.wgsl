// Data kernels: sample a batch from a dataset kept on the GPU as packed bytes, gather it,
// augment it and normalise it. Every random number is a counter-based hash of
// (seed, step counter, stream salt, item, draw), so a replayed plan makes a new batch each step
// with no host writes, and the same seed replays the same run. src/ops/data.rs holds the Rust
// twins of every kernel (the CPU references) and documents the per-sample parameter records.

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

const PI: f32 = 3.14159265358979;

// Gamma(alpha, 1) by Marsaglia-Tsang (alpha < 1 boosted by U^(1/alpha)); draws from `item`.
fn gamma_draw(key: u32, item: u32, alpha: f32) -> f32 {
    var a = alpha;
    var boost = 1.0;
    if (a < 1.0) {
        boost = pow(dopen(key, item, 0u), 1.0 / a);
        a = a + 1.0;
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / sqrt(9.0 * d);
    for (var t = 0u; t < 64u; t++) {
        let u1 = dopen(key, item, 1u + 3u * t);
        let u2 = du01(key, item, 2u + 3u * t);
        let u3 = dopen(key, item, 3u + 3u * t);
        // Box-Muller with the angle in [-pi, pi) (where GPU cos is most accurate).
        let x = sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2 - PI);
        let v1 = 1.0 + c * x;
        if (v1 <= 0.0) { continue; }
        let v = v1 * v1 * v1;
        if (log(u3) < 0.5 * x * x + d - d * v + d * log(v)) {
            return d * v * boost;
        }
    }
    return d * boost;
}

fn beta_draw(key: u32, item: u32, alpha: f32) -> f32 {
    let x = gamma_draw(key, item, alpha);
    let y = gamma_draw(key, item + 1u, alpha);
    if (x + y <= 0.0) { return 0.5; }
    return x / (x + y);
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

// ---- per-sample view parameters ---------------------------------------------------------

// Record layout (24 floats per sample), shared with src/ops/data.rs:
//  0 ax, 1 bx, 2 lox, 3 hix   source x = clamp(ax * ox + bx, lox, hix) for output column ox
//  4 ay, 5 by, 6 loy, 7 hiy   same for rows
//  8 flip (0/1)               mirror the output horizontally
//  9 jitter applied (0/1), 10 brightness, 11 contrast, 12 saturation, 13 hue factor
// 14..17 the order of the four jitter ops (0 b, 1 c, 2 s, 3 h)
// 18 grayscale (0/1), 19 blur sigma (0: none)
// 20 top, 21 left, 22 height, 23 width of the crop box (source pixels; informative)
const REC: u32 = 24u;

struct ViewP {
    m: u32, h: u32, w: u32, oh: u32,
    ow: u32, crop: u32, seed: u32, salt: u32,
    // crop 1 (pad): padding in a0. crop 2 (resized crop): scale a0..a1, log ratio a2..a3.
    // crop 3 (center): resized size in a0 (height), a1 (width).
    a0: f32, a1: f32, a2: f32, a3: f32,
    flip_p: f32, jit_p: f32, bri: f32, con: f32,
    sat: f32, hue: f32, gray_p: f32, blur_p: f32,
    sig_lo: f32, sig_hi: f32, r_lo: f32, r_hi: f32,
}
@group(0) @binding(0) var<uniform> vp: ViewP;
@group(0) @binding(1) var<storage, read_write> v_step: array<u32>;
@group(0) @binding(2) var<storage, read_write> v_rec: array<f32>;

// Factor range of torchvision ColorJitter for a strength v: [max(0, 1 - v), 1 + v].
fn jit_factor(key: u32, item: u32, draw: u32, v: f32) -> f32 {
    if (v <= 0.0) { return 1.0; }
    return duni(key, item, draw, max(0.0, 1.0 - v), 1.0 + v);
}

@compute @workgroup_size(256)
fn view_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= vp.m) { return; }
    let key = dkey(vp.seed, v_step[0], vp.salt);
    let hf = f32(vp.h);
    let wf = f32(vp.w);
    let ohf = f32(vp.oh);
    let owf = f32(vp.ow);
    // Default: the whole image resized to the output (crop 0).
    var top = 0.0;
    var left = 0.0;
    var ch = hf;
    var cw = wf;
    var ax = wf / owf;
    var ay = hf / ohf;
    var bx = 0.5 * ax - 0.5;
    var by = 0.5 * ay - 0.5;
    var lox = 0.0;
    var hix = wf - 1.0;
    var loy = 0.0;
    var hiy = hf - 1.0;
    if (vp.crop == 1u) {
        // RandomCrop(out, padding): a window of the zero-padded image, copied exactly.
        let pad = u32(vp.a0);
        let t = i32(dint(key, i, 20u, vp.h + 2u * pad - vp.oh + 1u)) - i32(pad);
        let l = i32(dint(key, i, 21u, vp.w + 2u * pad - vp.ow + 1u)) - i32(pad);
        top = f32(t);
        left = f32(l);
        ch = ohf;
        cw = owf;
    } else if (vp.crop == 2u) {
        // RandomResizedCrop: torchvision's 10 attempts, then its central fallback.
        let area = hf * wf;
        var found = false;
        for (var a = 0u; a < 10u; a++) {
            let target_area = area * duni(key, i, 2u * a, vp.a0, vp.a1);
            let ratio = exp(duni(key, i, 2u * a + 1u, vp.a2, vp.a3));
            let cwi = round(sqrt(target_area * ratio));
            let chi = round(sqrt(target_area / ratio));
            if (cwi > 0.0 && cwi <= wf && chi > 0.0 && chi <= hf) {
                cw = cwi;
                ch = chi;
                top = f32(dint(key, i, 20u, u32(hf - chi) + 1u));
                left = f32(dint(key, i, 21u, u32(wf - cwi) + 1u));
                found = true;
                break;
            }
        }
        if (!found) {
            let in_ratio = wf / hf;
            let rmin = vp.r_lo;
            let rmax = vp.r_hi;
            if (in_ratio < rmin) {
                cw = wf;
                ch = round(cw / rmin);
            } else if (in_ratio > rmax) {
                ch = hf;
                cw = round(ch * rmax);
            } else {
                cw = wf;
                ch = hf;
            }
            top = floor((hf - ch) / 2.0);
            left = floor((wf - cw) / 2.0);
        }
    } else if (vp.crop == 3u) {
        // Resize to (a0, a1), then a centre crop of the output size.
        let rh = vp.a0;
        let rw = vp.a1;
        let ct = round((rh - ohf) / 2.0);
        let cl = round((rw - owf) / 2.0);
        ay = hf / rh;
        ax = wf / rw;
        by = (ct + 0.5) * ay - 0.5;
        bx = (cl + 0.5) * ax - 0.5;
        top = ct * ay;
        left = cl * ax;
        ch = ohf * ay;
        cw = owf * ax;
    }
    if (vp.crop == 1u || vp.crop == 2u) {
        ax = cw / owf;
        ay = ch / ohf;
        bx = left + 0.5 * ax - 0.5;
        by = top + 0.5 * ay - 0.5;
        lox = left;
        hix = left + cw - 1.0;
        loy = top;
        hiy = top + ch - 1.0;
    }
    let o = i * REC;
    v_rec[o + 0u] = ax;
    v_rec[o + 1u] = bx;
    v_rec[o + 2u] = lox;
    v_rec[o + 3u] = hix;
    v_rec[o + 4u] = ay;
    v_rec[o + 5u] = by;
    v_rec[o + 6u] = loy;
    v_rec[o + 7u] = hiy;
    v_rec[o + 8u] = select(0.0, 1.0, du01(key, i, 22u) < vp.flip_p);
    let jit = du01(key, i, 23u) < vp.jit_p;
    v_rec[o + 9u] = select(0.0, 1.0, jit);
    v_rec[o + 10u] = jit_factor(key, i, 24u, vp.bri);
    v_rec[o + 11u] = jit_factor(key, i, 25u, vp.con);
    v_rec[o + 12u] = jit_factor(key, i, 26u, vp.sat);
    v_rec[o + 13u] = select(0.0, duni(key, i, 27u, -vp.hue, vp.hue), vp.hue > 0.0);
    // torch.randperm(4) as a Fisher-Yates shuffle.
    var perm = array<u32, 4>(0u, 1u, 2u, 3u);
    for (var j = 3u; j >= 1u; j--) {
        let k = dint(key, i, 31u - j, j + 1u);
        let tmp = perm[j];
        perm[j] = perm[k];
        perm[k] = tmp;
    }
    for (var j = 0u; j < 4u; j++) {
        v_rec[o + 14u + j] = f32(perm[j]);
    }
    v_rec[o + 18u] = select(0.0, 1.0, du01(key, i, 31u) < vp.gray_p);
    let blur = du01(key, i, 32u) < vp.blur_p;
    v_rec[o + 19u] = select(0.0, duni(key, i, 33u, vp.sig_lo, vp.sig_hi), blur);
    v_rec[o + 20u] = top;
    v_rec[o + 21u] = left;
    v_rec[o + 22u] = ch;
    v_rec[o + 23u] = cw;
}

// ---- geometry: crop / resize / pad / flip of the packed bytes --------------------------

struct GeomP { m: u32, batch: u32, c: u32, h: u32, w: u32, oh: u32, ow: u32, stride: u32 }
@group(0) @binding(0) var<uniform> gm: GeomP;
@group(0) @binding(1) var<storage, read_write> gm_raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> gm_rec: array<f32>;
@group(0) @binding(3) var<storage, read_write> gm_out: array<f32>;

// Byte (c, y, x) of image row b of the gathered batch; 0 outside the image (zero padding).
fn raw_px(b: u32, c: u32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= i32(gm.h) || x >= i32(gm.w)) { return 0.0; }
    let q = (c * gm.h + u32(y)) * gm.w + u32(x);
    let word = gm_raw[b * gm.stride + q / 4u];
    return f32((word >> (8u * (q % 4u))) & 255u);
}

// One thread per output element [m, c, oh, ow]: bilinear sampling (exact copy when the
// source position is an integer), values in [0, 1].
@compute @workgroup_size(256)
fn geom(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = plane_of(wid, nwg);
    let p = pix_of(wid, lid);
    if (plane >= gm.m * gm.c || p >= gm.oh * gm.ow) { return; }
    let i = plane * gm.oh * gm.ow + p;
    let oy = p / gm.ow;
    var ox = p - oy * gm.ow;
    let c = plane % gm.c;
    let s = plane / gm.c;
    let o = s * REC;
    if (gm_rec[o + 8u] > 0.5) { ox = gm.ow - 1u - ox; }
    let sx = clamp(gm_rec[o + 0u] * f32(ox) + gm_rec[o + 1u], gm_rec[o + 2u], gm_rec[o + 3u]);
    let sy = clamp(gm_rec[o + 4u] * f32(oy) + gm_rec[o + 5u], gm_rec[o + 6u], gm_rec[o + 7u]);
    let x0 = floor(sx);
    let y0 = floor(sy);
    let fx = sx - x0;
    let fy = sy - y0;
    let x1 = min(x0 + 1.0, gm_rec[o + 3u]);
    let y1 = min(y0 + 1.0, gm_rec[o + 7u]);
    let b = s % gm.batch;
    let p00 = raw_px(b, c, i32(y0), i32(x0));
    let p01 = raw_px(b, c, i32(y0), i32(x1));
    let p10 = raw_px(b, c, i32(y1), i32(x0));
    let p11 = raw_px(b, c, i32(y1), i32(x1));
    let top = (1.0 - fx) * p00 + fx * p01;
    let bot = (1.0 - fx) * p10 + fx * p11;
    gm_out[i] = ((1.0 - fy) * top + fy * bot) * (1.0 / 255.0);
}

// ---- colour: jitter (torchvision order and formulas) and random grayscale --------------

struct ColorP { m: u32, c: u32, hw: u32, _p: u32 }
@group(0) @binding(0) var<uniform> cp: ColorP;
@group(0) @binding(1) var<storage, read_write> c_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_rec: array<f32>;
@group(0) @binding(3) var<storage, read_write> c_out: array<f32>;

const CWG: u32 = 64u;
var<workgroup> c_red: array<f32, 64>;
var<workgroup> c_sel: u32;
var<workgroup> c_mean: f32;

fn gray3(p: vec3<f32>) -> f32 {
    return 0.2989 * p.x + 0.587 * p.y + 0.114 * p.z;
}

fn rgb2hsv(p: vec3<f32>) -> vec3<f32> {
    let maxc = max(p.x, max(p.y, p.z));
    let minc = min(p.x, min(p.y, p.z));
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / select(maxc, 1.0, eqc);
    let crd = select(cr, 1.0, eqc);
    let rc = (maxc - p.x) / crd;
    let gc = (maxc - p.y) / crd;
    let bc = (maxc - p.z) / crd;
    let hr = select(0.0, bc - gc, maxc == p.x);
    let hg = select(0.0, 2.0 + rc - bc, maxc == p.y && maxc != p.x);
    let hb = select(0.0, 4.0 + gc - rc, maxc != p.y && maxc != p.x);
    let h = fract((hr + hg + hb) / 6.0 + 1.0);
    return vec3<f32>(h, s, maxc);
}

fn hsv2rgb(q: vec3<f32>) -> vec3<f32> {
    let h = q.x;
    let s = q.y;
    let v = q.z;
    let fi = floor(h * 6.0);
    let f = h * 6.0 - fi;
    let i = u32(i32(fi) % 6 + 6) % 6u;
    let p = clamp(v * (1.0 - s), 0.0, 1.0);
    let qq = clamp(v * (1.0 - s * f), 0.0, 1.0);
    let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
    switch i {
        case 0u: { return vec3<f32>(v, t, p); }
        case 1u: { return vec3<f32>(qq, v, p); }
        case 2u: { return vec3<f32>(p, v, t); }
        case 3u: { return vec3<f32>(p, qq, v); }
        case 4u: { return vec3<f32>(t, p, v); }
        default: { return vec3<f32>(v, p, qq); }
    }
}

fn c_load(base: u32, p: u32) -> vec3<f32> {
    if (cp.c == 3u) {
        return vec3<f32>(c_out[base + p], c_out[base + cp.hw + p], c_out[base + 2u * cp.hw + p]);
    }
    let g = c_out[base + p];
    return vec3<f32>(g, g, g);
}

fn c_store(base: u32, p: u32, v: vec3<f32>) {
    c_out[base + p] = v.x;
    if (cp.c == 3u) {
        c_out[base + cp.hw + p] = v.y;
        c_out[base + 2u * cp.hw + p] = v.z;
    }
}

// Apply jitter op `op` (0 brightness, 1 contrast, 2 saturation, 3 hue) to one pixel.
fn c_apply(op: u32, v: vec3<f32>, o: u32, mean: f32) -> vec3<f32> {
    switch op {
        case 0u: { return clamp(c_rec[o + 10u] * v, vec3<f32>(0.0), vec3<f32>(1.0)); }
        case 1u: {
            let f = c_rec[o + 11u];
            return clamp(f * v + (1.0 - f) * mean, vec3<f32>(0.0), vec3<f32>(1.0));
        }
        case 2u: {
            if (cp.c != 3u) { return v; }
            let f = c_rec[o + 12u];
            return clamp(f * v + (1.0 - f) * gray3(v), vec3<f32>(0.0), vec3<f32>(1.0));
        }
        default: {
            let f = c_rec[o + 13u];
            if (cp.c != 3u || f == 0.0) { return v; }
            var q = rgb2hsv(v);
            q.x = fract(q.x + f);
            return hsv2rgb(q);
        }
    }
}

// One workgroup of 64 per image; thread lid owns pixels lid, lid + 64, ... (all channels) for
// the whole kernel. Jitter applies the four ops in the drawn order; contrast blends with the
// mean of the grayscale image as it is at that point (the only step that needs the whole
// image: the ops before it run in a first sweep, those after it in a second). On 1-channel
// data saturation, hue and grayscale change nothing (as torchvision).
@compute @workgroup_size(64)
fn color(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg_linear(wid, nwg);
    if (s >= cp.m) { return; }
    let base = s * cp.c * cp.hw;
    let o = s * REC;
    let jit = c_rec[o + 9u] > 0.5;
    // Position of contrast in the order (4: not applied); made workgroup-uniform so the
    // reduction's barriers may depend on it.
    var cpos = 4u;
    for (var k = 0u; k < 4u; k++) {
        if (jit && u32(c_rec[o + 14u + k]) == 1u) { cpos = k; }
    }
    if (lid == 0u) { c_sel = cpos; }
    let kc = workgroupUniformLoad(&c_sel);
    let gray = cp.c == 3u && c_rec[o + 18u] > 0.5;
    // Sweep 1: the ops before contrast (all four when contrast is not applied).
    var part = 0.0;
    for (var p = lid; p < cp.hw; p += CWG) {
        var v = vec3<f32>(c_in[base + p], 0.0, 0.0);
        if (cp.c == 3u) {
            v = vec3<f32>(c_in[base + p], c_in[base + cp.hw + p], c_in[base + 2u * cp.hw + p]);
        } else {
            v = vec3<f32>(v.x, v.x, v.x);
        }
        if (jit) {
            for (var k = 0u; k < min(kc, 4u); k++) {
                v = c_apply(u32(c_rec[o + 14u + k]), v, o, 0.0);
            }
        }
        if (kc == 4u && gray) {
            let g = gray3(v);
            v = vec3<f32>(g, g, g);
        }
        c_store(base, p, v);
        part += select(v.x, gray3(v), cp.c == 3u);
    }
    if (kc < 4u) {
        // Contrast: the grayscale mean of the image so far, then the remaining ops.
        c_red[lid] = part;
        workgroupBarrier();
        if (lid == 0u) {
            var t = 0.0;
            for (var k = 0u; k < CWG; k++) { t += c_red[k]; }
            c_mean = t / f32(cp.hw);
        }
        let mean = workgroupUniformLoad(&c_mean);
        for (var p = lid; p < cp.hw; p += CWG) {
            var v = c_load(base, p);
            for (var k = kc; k < 4u; k++) {
                v = c_apply(u32(c_rec[o + 14u + k]), v, o, mean);
            }
            if (gray) {
                let g = gray3(v);
                v = vec3<f32>(g, g, g);
            }
            c_store(base, p, v);
        }
    }
}

// ---- Gaussian blur (torchvision GaussianBlur: fixed kernel size, reflect padding) -------

struct BlurP { m: u32, c: u32, h: u32, w: u32, hk: u32, dir: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> bp: BlurP;
@group(0) @binding(1) var<storage, read_write> b_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_rec: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_out: array<f32>;

fn reflect_idx(i: i32, n: i32) -> i32 {
    var j = i;
    if (j < 0) { j = -j; }
    if (j >= n) { j = 2 * (n - 1) - j; }
    return j;
}

// One pass (dir 0: along x, 1: along y); images whose sigma is 0 are copied.
@compute @workgroup_size(256)
fn blur(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = plane_of(wid, nwg);
    let p = pix_of(wid, lid);
    if (plane >= bp.m * bp.c || p >= bp.h * bp.w) { return; }
    let i = plane * bp.h * bp.w + p;
    let yu = p / bp.w;
    let x = i32(p - yu * bp.w);
    let y = i32(yu);
    let s = plane / bp.c;
    let sigma = b_rec[s * REC + 19u];
    if (sigma <= 0.0) {
        b_out[i] = b_in[i];
        return;
    }
    let hk = i32(bp.hk);
    var acc = 0.0;
    var norm = 0.0;
    for (var k = -hk; k <= hk; k++) {
        let t = f32(k) / sigma;
        let wk = exp(-0.5 * t * t);
        var j = 0u;
        if (bp.dir == 0u) {
            j = (plane * bp.h + u32(y)) * bp.w + u32(reflect_idx(x + k, i32(bp.w)));
        } else {
            j = (plane * bp.h + u32(reflect_idx(y + k, i32(bp.h)))) * bp.w + u32(x);
        }
        acc += wk * b_in[j];
        norm += wk;
    }
    b_out[i] = acc / norm;
}

// ---- patches: a 3x3 grid with jitter, some of the nine kept (OBoW CropImagePatches) -----

struct PatchP { batch: u32, c: u32, h: u32, w: u32, size: u32, jitter: u32, keep: u32, grid: u32, seed: u32, salt: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> pp: PatchP;
@group(0) @binding(1) var<storage, read_write> p_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> p_step: array<u32>;
@group(0) @binding(3) var<storage, read_write> p_out: array<f32>;

// Output [batch * keep, c, size, size], sample-major (row b * keep + k). Cell (gy, gx) starts
// at g * offset + randint(0, jitter) (inclusive); the kept cells are the first `keep` of a
// random permutation of the grid*grid cells.
@compute @workgroup_size(256)
fn patches(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = plane_of(wid, nwg);
    let p = pix_of(wid, lid);
    let ps = pp.size;
    if (plane >= pp.batch * pp.keep * pp.c || p >= ps * ps) { return; }
    let i = plane * ps * ps + p;
    let y = p / ps;
    let x = p - y * ps;
    let c = plane % pp.c;
    let row = plane / pp.c;
    let b = row / pp.keep;
    let k = row % pp.keep;
    let key = dkey(pp.seed, p_step[0], pp.salt);
    let cells = pp.grid * pp.grid;
    var perm: array<u32, 16>;
    for (var j = 0u; j < cells; j++) { perm[j] = j; }
    for (var j = cells - 1u; j >= 1u; j--) {
        let r = dint(key, b, 64u + j, j + 1u);
        let tmp = perm[j];
        perm[j] = perm[r];
        perm[r] = tmp;
    }
    let cell = perm[k];
    let gy = cell / pp.grid;
    let gx = cell % pp.grid;
    let offy = (pp.h - ps - pp.jitter) / (pp.grid - 1u);
    let offx = (pp.w - ps - pp.jitter) / (pp.grid - 1u);
    let top = gy * offy + dint(key, b, 2u * cell, pp.jitter + 1u);
    let left = gx * offx + dint(key, b, 2u * cell + 1u, pp.jitter + 1u);
    p_out[i] = p_in[((b * pp.c + c) * pp.h + top + y) * pp.w + left + x];
}

// ---- mixup / cutmix parameters (timm Mixup, mode "batch") ------------------------------

struct MixP { h: u32, w: u32, seed: u32, salt: u32, mixup: f32, cutmix: f32, prob: f32, switch_p: f32 }
@group(0) @binding(0) var<uniform> mp: MixP;
@group(0) @binding(1) var<storage, read_write> m_step: array<u32>;
@group(0) @binding(2) var<storage, read_write> m_out: array<f32>;

// m_out: [mode (0 none, 1 mixup, 2 cutmix), lambda (box-corrected), y0, y1, x0, x1, 0, 0].
@compute @workgroup_size(1)
fn mix_params() {
    let key = dkey(mp.seed, m_step[0], mp.salt);
    var mode = 0u;
    var lam = 1.0;
    var y0 = 0u;
    var y1 = 0u;
    var x0 = 0u;
    var x1 = 0u;
    if (du01(key, 0u, 0u) < mp.prob && (mp.mixup > 0.0 || mp.cutmix > 0.0)) {
        var cut = mp.mixup <= 0.0;
        if (mp.mixup > 0.0 && mp.cutmix > 0.0) {
            cut = du01(key, 0u, 1u) < mp.switch_p;
        }
        let alpha = select(mp.mixup, mp.cutmix, cut);
        lam = beta_draw(key, 1u, alpha);
        mode = 1u;
        if (cut) {
            mode = 2u;
            let ratio = sqrt(1.0 - lam);
            let cut_h = i32(f32(mp.h) * ratio);
            let cut_w = i32(f32(mp.w) * ratio);
            let cy = i32(dint(key, 0u, 2u, mp.h));
            let cx = i32(dint(key, 0u, 3u, mp.w));
            y0 = u32(clamp(cy - cut_h / 2, 0, i32(mp.h)));
            y1 = u32(clamp(cy + cut_h / 2, 0, i32(mp.h)));
            x0 = u32(clamp(cx - cut_w / 2, 0, i32(mp.w)));
            x1 = u32(clamp(cx + cut_w / 2, 0, i32(mp.w)));
            lam = 1.0 - f32((y1 - y0) * (x1 - x0)) / f32(mp.h * mp.w);
        }
    }
    m_out[0] = f32(mode);
    m_out[1] = lam;
    m_out[2] = f32(y0);
    m_out[3] = f32(y1);
    m_out[4] = f32(x0);
    m_out[5] = f32(x1);
    m_out[6] = 0.0;
    m_out[7] = 0.0;
}

// ---- finish: zero-pad, replicate channels, mix with the flipped batch, normalise --------

struct FinishP { m: u32, c: u32, h: u32, w: u32, oc: u32, oh: u32, ow: u32, pad: u32, mean: vec4<f32>, inv_std: vec4<f32> }
@group(0) @binding(0) var<uniform> fp: FinishP;
@group(0) @binding(1) var<storage, read_write> f_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_mix: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_out: array<f32>;

fn f_px(s: u32, c: u32, y: u32, x: u32) -> f32 {
    let iy = i32(y) - i32(fp.pad);
    let ix = i32(x) - i32(fp.pad);
    if (iy < 0 || ix < 0 || iy >= i32(fp.h) || ix >= i32(fp.w)) { return 0.0; }
    let ic = select(c, 0u, fp.c == 1u);
    return f_in[((s * fp.c + ic) * fp.h + u32(iy)) * fp.w + u32(ix)];
}

@compute @workgroup_size(256)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let plane = plane_of(wid, nwg);
    let p = pix_of(wid, lid);
    if (plane >= fp.m * fp.oc || p >= fp.oh * fp.ow) { return; }
    let i = plane * fp.oh * fp.ow + p;
    let y = p / fp.ow;
    let x = p - y * fp.ow;
    let c = plane % fp.oc;
    let s = plane / fp.oc;
    var v = f_px(s, c, y, x);
    let mode = u32(f_mix[0]);
    let partner = fp.m - 1u - s;
    if (mode == 1u) {
        let lam = f_mix[1];
        v = lam * v + (1.0 - lam) * f_px(partner, c, y, x);
    } else if (mode == 2u) {
        if (f32(y) >= f_mix[2] && f32(y) < f_mix[3] && f32(x) >= f_mix[4] && f32(x) < f_mix[5]) {
            v = f_px(partner, c, y, x);
        }
    }
    f_out[i] = (v - fp.mean[c]) * fp.inv_std[c];
}

// ---- soft targets: label smoothing and mixing with the flipped batch --------------------

struct TargetP { batch: u32, classes: u32, _p0: u32, _p1: u32, off: f32, on: f32, _f0: f32, _f1: f32 }
@group(0) @binding(0) var<uniform> tp: TargetP;
@group(0) @binding(1) var<storage, read_write> t_lab: array<u32>;
@group(0) @binding(2) var<storage, read_write> t_mix: array<f32>;
@group(0) @binding(3) var<storage, read_write> t_out: array<f32>;

@compute @workgroup_size(256)
fn targets(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = elem_index(wid, nwg, lid);
    if (i >= tp.batch * tp.classes) { return; }
    let k = i % tp.classes;
    let b = i / tp.classes;
    let lam = t_mix[1];
    let y1 = select(tp.off, tp.on, t_lab[b] == k);
    let y2 = select(tp.off, tp.on, t_lab[tp.batch - 1u - b] == k);
    t_out[i] = lam * y1 + (1.0 - lam) * y2;
}
