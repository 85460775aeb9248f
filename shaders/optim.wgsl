// Optimizers over whole parameter pages. Each workgroup takes one entry of a chunk table
// (start, len, flags, dst) and updates up to 1024 elements: 256 threads x 4. Per-step scalars
// (learning rate, gradient scale from clipping, EMA alpha) are computed on the GPU into
// `scal` by the schedule kernel, so a replayed plan needs no host writes.
//
// scal layout: [0] lr, [1] grad scale (clipping), [2] grad norm, [3] ema alpha.

struct OptP {
    momentum: f32, wd: f32, beta1: f32, beta2: f32,
    eps: f32, nesterov: u32, chunks: u32, part_base: u32,
}
@group(0) @binding(0) var<uniform> op: OptP;
@group(0) @binding(1) var<storage, read_write> otab: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> oscal: array<f32>;
@group(0) @binding(3) var<storage, read_write> ostep: array<u32>;
@group(0) @binding(4) var<storage, read_write> oparam: array<f32>;
@group(0) @binding(5) var<storage, read_write> ograd: array<f32>;
@group(0) @binding(6) var<storage, read_write> os1: array<f32>;
@group(0) @binding(7) var<storage, read_write> os2: array<f32>;

const CHUNK: u32 = 1024u;

// SGD as torch.optim.SGD (dampening 0): g += wd*p; buf = mu*buf + g; g = nesterov ? g + mu*buf : buf.
@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg_linear(wid, nwg);
    if (c >= op.chunks) { return; }
    let t = otab[c];
    let lr = oscal[0];
    let gs = oscal[1];
    let wd = select(0.0, op.wd, t.z != 0u);
    for (var e = lid; e < t.y; e = e + 256u) {
        let i = t.x + e;
        var g = ograd[i] * gs + wd * oparam[i];
        if (op.momentum != 0.0) {
            let b = op.momentum * os1[i] + g;
            os1[i] = b;
            g = select(b, g + op.momentum * b, op.nesterov != 0u);
        }
        oparam[i] = oparam[i] - lr * g;
    }
}

// AdamW as torch.optim.AdamW: decoupled decay, bias correction with t = step + 1.
@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg_linear(wid, nwg);
    if (c >= op.chunks) { return; }
    let tb = otab[c];
    let lr = oscal[0];
    let gs = oscal[1];
    let t = f32(ostep[0] + 1u);
    let bc1 = 1.0 - pow(op.beta1, t);
    let bc2 = 1.0 - pow(op.beta2, t);
    let step_size = lr / bc1;
    let decay = select(1.0, 1.0 - lr * op.wd, tb.z != 0u);
    for (var e = lid; e < tb.y; e = e + 256u) {
        let i = tb.x + e;
        let g = ograd[i] * gs;
        let m = op.beta1 * os1[i] + (1.0 - op.beta1) * g;
        let v = op.beta2 * os2[i] + (1.0 - op.beta2) * g * g;
        os1[i] = m;
        os2[i] = v;
        let denom = sqrt(v) / sqrt(bc2) + op.eps;
        oparam[i] = oparam[i] * decay - step_size * m / denom;
    }
}

var<workgroup> osh: array<f32, 256>;

// Sum of squared gradients of each chunk into partials[part_base + c] (os1 holds partials).
@compute @workgroup_size(256)
fn sumsq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg_linear(wid, nwg);
    let valid = c < op.chunks;
    let t = otab[min(c, op.chunks - 1u)];
    var acc = 0.0;
    if (valid) {
        for (var e = lid; e < t.y; e = e + 256u) { let g = ograd[t.x + e]; acc = acc + g * g; }
    }
    osh[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { osh[lid] = osh[lid] + osh[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u && valid) { os1[op.part_base + c] = osh[0]; }
}

// Global norm from `chunks` partials; scale = min(1, max_norm / (norm + 1e-6)) as PyTorch's
// clip_grad_norm_. max_norm is passed in `eps`.
@compute @workgroup_size(256)
fn clip_finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var e = lid; e < op.chunks; e = e + 256u) { acc = acc + os1[e]; }
    osh[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { osh[lid] = osh[lid] + osh[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let norm = sqrt(osh[0]);
        oscal[2] = norm;
        oscal[1] = min(1.0, op.eps / (norm + 1e-6));
    }
}

// EMA: dst = a * dst + (1 - a) * src, with a = scal[3]. Table entries: (src, len, -, dst);
// oparam = src page (student), ograd = dst page (teacher).
@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg_linear(wid, nwg);
    if (c >= op.chunks) { return; }
    let t = otab[c];
    let a = oscal[3];
    for (var e = lid; e < t.y; e = e + 256u) {
        ograd[t.w + e] = a * ograd[t.w + e] + (1.0 - a) * oparam[t.x + e];
    }
}

// EMA with source and destination in the same page (ograd), which WebGPU does not let us
// bind twice: dst = a * dst + (1 - a) * src within one buffer (disjoint ranges).
@compute @workgroup_size(256)
fn ema_same(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg_linear(wid, nwg);
    if (c >= op.chunks) { return; }
    let t = otab[c];
    let a = oscal[3];
    for (var e = lid; e < t.y; e = e + 256u) {
        ograd[t.w + e] = a * ograd[t.w + e] + (1.0 - a) * ograd[t.x + e];
    }
}

// Learning-rate and EMA schedules, evaluated at the current step on the GPU.
// kind: 0 constant, 1 cosine with linear warm-up, 2 step decay with linear warm-up.
struct SchedP {
    kind: u32, warmup: u32, total: u32, period: u32,
    base_lr: f32, min_lr: f32, warmup_from: f32, gamma: f32,
    ema_kind: u32, ema_total: u32, ema_base: f32, _p: f32,
}
@group(0) @binding(0) var<uniform> hp: SchedP;
@group(0) @binding(1) var<storage, read_write> hscal: array<f32>;
@group(0) @binding(2) var<storage, read_write> hstep: array<u32>;

const PI: f32 = 3.14159265358979;

@compute @workgroup_size(1)
fn schedule() {
    let s = hstep[0];
    var lr = hp.base_lr;
    if (s < hp.warmup) {
        lr = hp.warmup_from + (hp.base_lr - hp.warmup_from) * f32(s) / f32(hp.warmup);
    } else if (hp.kind == 1u) {
        let span = max(hp.total, hp.warmup + 1u) - hp.warmup;
        let p = min(f32(s - hp.warmup) / f32(span), 1.0);
        lr = hp.min_lr + 0.5 * (hp.base_lr - hp.min_lr) * (1.0 + cos(PI * p));
    } else if (hp.kind == 2u) {
        lr = hp.base_lr * pow(hp.gamma, f32((s - hp.warmup) / max(hp.period, 1u)));
    }
    hscal[0] = lr;
    hscal[1] = 1.0;
    // EMA alpha: 0 constant base, 1 cosine from base to 1 (OBoW's teacher momentum), 2 no
    // EMA in this update (alpha stays as an earlier schedule dispatch of the step set it).
    var a = hp.ema_base;
    if (hp.ema_kind == 1u) {
        let p = min(f32(s) / f32(max(hp.ema_total, 1u)), 1.0);
        a = 1.0 - (1.0 - hp.ema_base) * 0.5 * (1.0 + cos(PI * p));
    }
    if (hp.ema_kind != 2u) {
        hscal[3] = a;
    }
}
