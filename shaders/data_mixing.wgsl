// Data kernels, mixing: the mixup / cutmix parameters of a step (with the gamma and beta draws
// they need), the finish pass (zero-pad, replicate channels, mix with the flipped batch,
// normalise) and the soft targets. Rust twins in src/ops/data/mixing.rs. Prelude: common.wgsl,
// data_common.wgsl.

// ---- gamma and beta draws ---------------------------------------------------------------

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
