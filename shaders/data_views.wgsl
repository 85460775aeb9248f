// Data kernels, views: the per-sample view records (crop box, flip and every colour/blur draw),
// the geometry pass that crops / resizes / pads / flips the packed bytes into floats, and the
// OBoW patches. Rust twins in src/ops/data/views.rs. Prelude: common.wgsl, data_common.wgsl.

// ---- per-sample view parameters ---------------------------------------------------------

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
