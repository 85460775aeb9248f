// Data kernels, colour: jitter and random grayscale, and Gaussian blur, both driven by the
// per-sample view records. Rust twins in src/ops/data/colour.rs. Prelude: common.wgsl,
// data_common.wgsl.

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
