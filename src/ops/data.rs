//! Data ops: sample a batch from a dataset stored on the GPU as packed bytes, gather it, and
//! augment it, with kernels in `shaders/data.wgsl`. Each op has an exact Rust twin (`cpu`)
//! that draws the same random numbers: the RNG is a pure integer hash ([`rng`]), so the
//! references match bit for bit on integers and to float rounding on pixels.
//!
//! Random streams: every draw is `hash(seed, step, salt, item, draw)`, where `step` is a U32
//! counter tensor read on the GPU (the optimizer's step in training), `salt` separates the
//! streams of different views, and `item` is the sample. Nothing is written by the host per
//! step, so a compiled plan replays with a fresh batch each time.
//!
//! These are the primitives; `data::gpu` composes them into `Graph::batch` and
//! `Graph::multicrop`. The counter that advances `step` in evaluation graphs is
//! [`Graph::data_tick`] (`ops::counter`).

use crate::data::augment::{Augment, Crop, Mix, Patches};
use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

/// Floats per sample in a view parameter record (layout documented in `shaders/data.wgsl`).
pub const REC: usize = 24;

/// The counter-based RNG of `shaders/common.wgsl` and `shaders/data.wgsl`, in Rust.
pub mod rng {
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
    use std::f32::consts::PI;

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
}

use rng::*;

/// Grid of the per-element kernels: x over the 256-element chunks of one plane, y (and z past
/// 65535) over the planes (see `plane_of` in the shader).
fn plane_grid(planes: usize, per_plane: usize) -> [u32; 3] {
    let x = per_plane.div_ceil(256).max(1) as u32;
    if planes <= 65535 { [x, planes.max(1) as u32, 1] } else { [x, 65535, planes.div_ceil(65535) as u32] }
}

fn u32_of(x: f64) -> u32 {
    x as u32
}

fn check_u32_scalar(g: &Graph, v: Var, what: &str) -> Result<()> {
    if g.dtype(v) != DType::U32 || g.numel(v) != 1 {
        return Err(Error::shape("data", format!("{what} must be a U32 tensor of one element (a step counter)")));
    }
    Ok(())
}

/// How rows of a batch are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Row b of step s is position t = s*B + b of an endless stream cut into epochs of n
    /// samples; epoch e = t / n visits every sample once, in the order of a Feistel permutation
    /// keyed by (seed, e). A batch may straddle two epochs.
    Train,
    /// Batch i = s mod ceil(n/B) of the data in order (s = the counter). The last batch of a
    /// pass is partial when B does not divide n: its missing rows repeat samples from the
    /// start and get `valid = 0`.
    Eval,
}

// ---- sample -----------------------------------------------------------------------------

#[derive(Debug)]
struct SampleOp {
    n: usize,
    batch: usize,
    sampling: Sampling,
    seed: u32,
}

impl Op for SampleOp {
    fn name(&self) -> &'static str {
        "data_sample"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let hb = feistel_half_bits(self.n as u32) as usize;
        let p = Params::new()
            .u(self.n)
            .u(self.batch)
            .u((self.sampling == Sampling::Eval) as usize)
            .u(self.seed as usize)
            .u(hb)
            .u(self.n.div_ceil(self.batch))
            .u(0)
            .u(0);
        let b: Vec<Bind> = n.inputs.iter().chain(&n.outputs).map(|t| Bind::T(t.var)).collect();
        l.dispatch("data", "sample", p, &b, grid_for(self.batch, 256));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let step = u32_of(x[1].data[0]);
        let (mut idx, mut lab, mut valid) = (vec![], vec![], vec![]);
        for b in 0..self.batch as u32 {
            let (i, v) = match self.sampling {
                Sampling::Train => (train_index(self.n as u32, self.batch as u32, self.seed, step, b), true),
                Sampling::Eval => eval_index(self.n as u32, self.batch as u32, step, b),
            };
            idx.push(i as f64);
            lab.push(x[0].data[i as usize]);
            valid.push(if v { 1.0 } else { 0.0 });
        }
        let s = [self.batch];
        Ok(vec![CpuTensor::new(&s, idx), CpuTensor::new(&s, lab), CpuTensor::new(&s, valid)])
    }
}

// ---- gather -----------------------------------------------------------------------------

#[derive(Debug)]
struct GatherOp {
    batch: usize,
    stride: usize,
    per_page: usize,
}

impl Op for GatherOp {
    fn name(&self) -> &'static str {
        "data_gather"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let idx = Bind::T(n.inputs[0].var);
        let out = Bind::T(n.outputs[0].var);
        for (p, page) in n.inputs[1..].iter().enumerate() {
            let params = Params::new().u(self.batch).u(self.stride).u(self.per_page).u(p);
            l.dispatch("data", "gather", params, &[idx, Bind::T(page.var), out], plane_grid(self.batch, self.stride));
        }
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut out = vec![0.0; self.batch * self.stride];
        for b in 0..self.batch {
            let img = x[0].data[b] as usize;
            let page = x[1 + img / self.per_page];
            let src = (img % self.per_page) * self.stride;
            out[b * self.stride..(b + 1) * self.stride].copy_from_slice(&page.data[src..src + self.stride]);
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- view parameters --------------------------------------------------------------------

/// The uniform block of `view_params`, and its Rust twin.
#[derive(Debug, Clone, Copy)]
struct ViewOp {
    m: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    crop: u32,
    seed: u32,
    salt: u32,
    a: [f32; 4],
    flip_p: f32,
    jit_p: f32,
    bri: f32,
    con: f32,
    sat: f32,
    hue: f32,
    gray_p: f32,
    blur_p: f32,
    sig: (f32, f32),
    ratio: (f32, f32),
}

fn jit_factor(key: u32, item: u32, draw: u32, v: f32) -> f32 {
    if v <= 0.0 { 1.0 } else { duni(key, item, draw, (1.0 - v).max(0.0), 1.0 + v) }
}

fn flag(b: bool) -> f32 {
    if b { 1.0 } else { 0.0 }
}

impl ViewOp {
    /// The record of output sample `i` at `step` (f32 arithmetic, as the kernel).
    fn record(&self, step: u32, i: u32) -> [f32; REC] {
        let key = dkey(self.seed, step, self.salt);
        let (hf, wf, ohf, owf) = (self.h as f32, self.w as f32, self.oh as f32, self.ow as f32);
        let (mut top, mut left, mut ch, mut cw) = (0.0f32, 0.0f32, hf, wf);
        let (mut ax, mut ay) = (wf / owf, hf / ohf);
        let (mut bx, mut by) = (0.5 * ax - 0.5, 0.5 * ay - 0.5);
        let (mut lox, mut hix, mut loy, mut hiy) = (0.0f32, wf - 1.0, 0.0f32, hf - 1.0);
        match self.crop {
            1 => {
                let pad = self.a[0] as u32;
                top = (dint(key, i, 20, self.h + 2 * pad - self.oh + 1) as i32 - pad as i32) as f32;
                left = (dint(key, i, 21, self.w + 2 * pad - self.ow + 1) as i32 - pad as i32) as f32;
                ch = ohf;
                cw = owf;
            }
            2 => {
                let area = hf * wf;
                let mut found = false;
                for a in 0..10u32 {
                    let target_area = area * duni(key, i, 2 * a, self.a[0], self.a[1]);
                    let ratio = duni(key, i, 2 * a + 1, self.a[2], self.a[3]).exp();
                    let cwi = (target_area * ratio).sqrt().round_ties_even();
                    let chi = (target_area / ratio).sqrt().round_ties_even();
                    if cwi > 0.0 && cwi <= wf && chi > 0.0 && chi <= hf {
                        cw = cwi;
                        ch = chi;
                        top = dint(key, i, 20, (hf - chi) as u32 + 1) as f32;
                        left = dint(key, i, 21, (wf - cwi) as u32 + 1) as f32;
                        found = true;
                        break;
                    }
                }
                if !found {
                    let in_ratio = wf / hf;
                    if in_ratio < self.ratio.0 {
                        cw = wf;
                        ch = (cw / self.ratio.0).round_ties_even();
                    } else if in_ratio > self.ratio.1 {
                        ch = hf;
                        cw = (ch * self.ratio.1).round_ties_even();
                    } else {
                        cw = wf;
                        ch = hf;
                    }
                    top = ((hf - ch) / 2.0).floor();
                    left = ((wf - cw) / 2.0).floor();
                }
            }
            3 => {
                let (rh, rw) = (self.a[0], self.a[1]);
                let ct = ((rh - ohf) / 2.0).round_ties_even();
                let cl = ((rw - owf) / 2.0).round_ties_even();
                ay = hf / rh;
                ax = wf / rw;
                by = (ct + 0.5) * ay - 0.5;
                bx = (cl + 0.5) * ax - 0.5;
                top = ct * ay;
                left = cl * ax;
                ch = ohf * ay;
                cw = owf * ax;
            }
            _ => {}
        }
        if self.crop == 1 || self.crop == 2 {
            ax = cw / owf;
            ay = ch / ohf;
            bx = left + 0.5 * ax - 0.5;
            by = top + 0.5 * ay - 0.5;
            lox = left;
            hix = left + cw - 1.0;
            loy = top;
            hiy = top + ch - 1.0;
        }
        let mut r = [0.0f32; REC];
        r[..8].copy_from_slice(&[ax, bx, lox, hix, ay, by, loy, hiy]);
        r[8] = flag(du01(key, i, 22) < self.flip_p);
        r[9] = flag(du01(key, i, 23) < self.jit_p);
        r[10] = jit_factor(key, i, 24, self.bri);
        r[11] = jit_factor(key, i, 25, self.con);
        r[12] = jit_factor(key, i, 26, self.sat);
        r[13] = if self.hue > 0.0 { duni(key, i, 27, -self.hue, self.hue) } else { 0.0 };
        let mut perm = [0u32, 1, 2, 3];
        for j in (1..=3u32).rev() {
            let k = dint(key, i, 31 - j, j + 1) as usize;
            perm.swap(j as usize, k);
        }
        for j in 0..4 {
            r[14 + j] = perm[j] as f32;
        }
        r[18] = flag(du01(key, i, 31) < self.gray_p);
        r[19] = if du01(key, i, 32) < self.blur_p { duni(key, i, 33, self.sig.0, self.sig.1) } else { 0.0 };
        r[20..24].copy_from_slice(&[top, left, ch, cw]);
        r
    }
}

impl Op for ViewOp {
    fn name(&self) -> &'static str {
        "data_view_params"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let mut p = Params::new();
        for v in [self.m, self.h, self.w, self.oh, self.ow, self.crop, self.seed, self.salt] {
            p = p.u(v as usize);
        }
        for v in [
            self.a[0],
            self.a[1],
            self.a[2],
            self.a[3],
            self.flip_p,
            self.jit_p,
            self.bri,
            self.con,
            self.sat,
            self.hue,
            self.gray_p,
            self.blur_p,
            self.sig.0,
            self.sig.1,
            self.ratio.0,
            self.ratio.1,
        ] {
            p = p.f(v);
        }
        l.dispatch("data", "view_params", p, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)], grid_for(self.m as usize, 256));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let step = u32_of(x[0].data[0]);
        let data = (0..self.m).flat_map(|i| self.record(step, i)).map(|v| v as f64).collect();
        Ok(vec![CpuTensor::new(&[self.m as usize, REC], data)])
    }
}

// ---- geometry ---------------------------------------------------------------------------

#[derive(Debug)]
struct GeomOp {
    m: usize,
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: usize,
}

impl Op for GeomOp {
    fn name(&self) -> &'static str {
        "data_geom"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let p = Params::new().u(self.m).u(self.batch).u(self.c).u(self.h).u(self.w).u(self.oh).u(self.ow).u(self.stride);
        let b = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("data", "geom", p, &b, plane_grid(self.m * self.c, self.oh * self.ow));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (raw, rec) = (x[0], x[1]);
        let px = |b: usize, c: usize, y: i64, xx: i64| -> f64 {
            if y < 0 || xx < 0 || y >= self.h as i64 || xx >= self.w as i64 {
                return 0.0;
            }
            let q = (c * self.h + y as usize) * self.w + xx as usize;
            let word = raw.data[b * self.stride + q / 4] as u32;
            ((word >> (8 * (q % 4))) & 255) as f64
        };
        let mut out = Vec::with_capacity(self.m * self.c * self.oh * self.ow);
        for s in 0..self.m {
            let r: Vec<f32> = rec.data[s * REC..(s + 1) * REC].iter().map(|&v| v as f32).collect();
            for c in 0..self.c {
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        let ox = if r[8] > 0.5 { self.ow - 1 - ox } else { ox };
                        let sx = (r[0] * ox as f32 + r[1]).clamp(r[2], r[3]) as f64;
                        let sy = (r[4] * oy as f32 + r[5]).clamp(r[6], r[7]) as f64;
                        let (x0, y0) = (sx.floor(), sy.floor());
                        let (fx, fy) = (sx - x0, sy - y0);
                        let x1 = (x0 + 1.0).min(r[3] as f64);
                        let y1 = (y0 + 1.0).min(r[7] as f64);
                        let b = s % self.batch;
                        let (p00, p01) = (px(b, c, y0 as i64, x0 as i64), px(b, c, y0 as i64, x1 as i64));
                        let (p10, p11) = (px(b, c, y1 as i64, x0 as i64), px(b, c, y1 as i64, x1 as i64));
                        let top = (1.0 - fx) * p00 + fx * p01;
                        let bot = (1.0 - fx) * p10 + fx * p11;
                        out.push(((1.0 - fy) * top + fy * bot) / 255.0);
                    }
                }
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- colour -----------------------------------------------------------------------------

#[derive(Debug)]
struct ColorOp {
    m: usize,
    c: usize,
    hw: usize,
}

fn gray3(p: [f64; 3]) -> f64 {
    0.2989 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn rgb2hsv(p: [f64; 3]) -> [f64; 3] {
    let maxc = p[0].max(p[1]).max(p[2]);
    let minc = p[0].min(p[1]).min(p[2]);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - p[0]) / crd, (maxc - p[1]) / crd, (maxc - p[2]) / crd);
    let hr = if maxc == p[0] { bc - gc } else { 0.0 };
    let hg = if maxc == p[1] && maxc != p[0] { 2.0 + rc - bc } else { 0.0 };
    let hb = if maxc != p[1] && maxc != p[0] { 4.0 + gc - rc } else { 0.0 };
    let h = (hr + hg + hb) / 6.0 + 1.0;
    [h - h.floor(), s, maxc]
}

fn hsv2rgb(q: [f64; 3]) -> [f64; 3] {
    let [h, s, v] = q;
    let fi = (h * 6.0).floor();
    let f = h * 6.0 - fi;
    let i = (fi as i64).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let qq = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => [v, t, p],
        1 => [qq, v, p],
        2 => [p, v, t],
        3 => [p, qq, v],
        4 => [t, p, v],
        _ => [v, p, qq],
    }
}

/// The colour kernel on one image (`img`: C x HW, C = 1 or 3) with record `r`.
pub fn color_cpu(img: &mut [f64], c: usize, hw: usize, r: &[f64]) {
    let load = |img: &[f64], p: usize| -> [f64; 3] { if c == 3 { [img[p], img[hw + p], img[2 * hw + p]] } else { [img[p]; 3] } };
    let store = |img: &mut [f64], p: usize, v: [f64; 3]| {
        img[p] = v[0];
        if c == 3 {
            img[hw + p] = v[1];
            img[2 * hw + p] = v[2];
        }
    };
    let clamp3 = |v: [f64; 3]| v.map(|x| x.clamp(0.0, 1.0));
    if r[9] as u32 == 1 {
        for k in 0..4 {
            match r[14 + k] as u32 {
                0 => {
                    let f = r[10];
                    for p in 0..hw {
                        let v = load(img, p);
                        store(img, p, clamp3(v.map(|x| f * x)));
                    }
                }
                1 => {
                    let mean = (0..hw).map(|p| if c == 3 { gray3(load(img, p)) } else { img[p] }).sum::<f64>() / hw as f64;
                    let f = r[11];
                    for p in 0..hw {
                        let v = load(img, p);
                        store(img, p, clamp3(v.map(|x| f * x + (1.0 - f) * mean)));
                    }
                }
                2 if c == 3 => {
                    let f = r[12];
                    for p in 0..hw {
                        let v = load(img, p);
                        let g = gray3(v);
                        store(img, p, clamp3(v.map(|x| f * x + (1.0 - f) * g)));
                    }
                }
                3 if c == 3 && r[13] != 0.0 => {
                    for p in 0..hw {
                        let mut q = rgb2hsv(load(img, p));
                        let h = q[0] + r[13];
                        q[0] = h - h.floor();
                        store(img, p, hsv2rgb(q));
                    }
                }
                _ => {}
            }
        }
    }
    if c == 3 && r[18] > 0.5 {
        for p in 0..hw {
            let g = gray3(load(img, p));
            store(img, p, [g; 3]);
        }
    }
}

impl Op for ColorOp {
    fn name(&self) -> &'static str {
        "data_color"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let p = Params::new().u(self.m).u(self.c).u(self.hw).u(0);
        let b = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("data", "color", p, &b, crate::graph::lower::grid(self.m));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut out = x[0].data.clone();
        let sz = self.c * self.hw;
        for s in 0..self.m {
            color_cpu(&mut out[s * sz..(s + 1) * sz], self.c, self.hw, &x[1].data[s * REC..(s + 1) * REC]);
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- blur -------------------------------------------------------------------------------

#[derive(Debug)]
struct BlurOp {
    m: usize,
    c: usize,
    h: usize,
    w: usize,
    half: usize,
}

fn reflect(i: i64, n: i64) -> usize {
    let mut j = i.abs();
    if j >= n {
        j = 2 * (n - 1) - j;
    }
    j as usize
}

impl Op for BlurOp {
    fn name(&self) -> &'static str {
        "data_blur"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let total = self.m * self.c * self.h * self.w;
        let tmp = l.scratch(total, "blur rows");
        let (x, rec, y) = (Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var));
        let p = |dir: usize| Params::new().u(self.m).u(self.c).u(self.h).u(self.w).u(self.half).u(dir).u(0).u(0);
        let grid = plane_grid(self.m * self.c, self.h * self.w);
        l.dispatch("data", "blur", p(0), &[x, rec, tmp], grid);
        l.dispatch("data", "blur", p(1), &[tmp, rec, y], grid);
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (h, w, hk) = (self.h, self.w, self.half as i64);
        let mut out = x[0].data.clone();
        for s in 0..self.m {
            let sigma = x[1].data[s * REC + 19];
            if sigma <= 0.0 {
                continue;
            }
            let wts: Vec<f64> = (-hk..=hk).map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp()).collect();
            let norm: f64 = wts.iter().sum();
            for c in 0..self.c {
                let base = (s * self.c + c) * h * w;
                let src = &x[0].data[base..base + h * w];
                let mut tmp = vec![0.0; h * w];
                for y in 0..h {
                    for xx in 0..w {
                        tmp[y * w + xx] =
                            (-hk..=hk).map(|k| wts[(k + hk) as usize] * src[y * w + reflect(xx as i64 + k, w as i64)]).sum::<f64>() / norm;
                    }
                }
                for y in 0..h {
                    for xx in 0..w {
                        out[base + y * w + xx] =
                            (-hk..=hk).map(|k| wts[(k + hk) as usize] * tmp[reflect(y as i64 + k, h as i64) * w + xx]).sum::<f64>() / norm;
                    }
                }
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- patches ----------------------------------------------------------------------------

#[derive(Debug)]
struct PatchOp {
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    p: Patches,
    seed: u32,
    salt: u32,
}

impl PatchOp {
    /// (top, left) of patch `k` of sample `b`.
    fn origin(&self, step: u32, b: u32, k: usize) -> (usize, usize) {
        let key = dkey(self.seed, step, self.salt);
        let cells = (self.p.grid * self.p.grid) as u32;
        let mut perm: Vec<u32> = (0..cells).collect();
        for j in (1..cells).rev() {
            let r = dint(key, b, 64 + j, j + 1) as usize;
            perm.swap(j as usize, r);
        }
        let cell = perm[k];
        let g = self.p.grid as u32;
        let (gy, gx) = (cell / g, cell % g);
        let offy = (self.h - self.p.size - self.p.jitter) as u32 / (g - 1);
        let offx = (self.w - self.p.size - self.p.jitter) as u32 / (g - 1);
        let j1 = self.p.jitter as u32 + 1;
        ((gy * offy + dint(key, b, 2 * cell, j1)) as usize, (gx * offx + dint(key, b, 2 * cell + 1, j1)) as usize)
    }
}

impl Op for PatchOp {
    fn name(&self) -> &'static str {
        "data_patches"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let q = &self.p;
        let p = Params::new()
            .u(self.batch)
            .u(self.c)
            .u(self.h)
            .u(self.w)
            .u(q.size)
            .u(q.jitter)
            .u(q.keep)
            .u(q.grid)
            .u(self.seed as usize)
            .u(self.salt as usize)
            .u(0)
            .u(0);
        let b = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("data", "patches", p, &b, plane_grid(self.batch * q.keep * self.c, q.size * q.size));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let step = u32_of(x[1].data[0]);
        let ps = self.p.size;
        let mut out = Vec::with_capacity(n.outputs[0].numel());
        for b in 0..self.batch {
            for k in 0..self.p.keep {
                let (top, left) = self.origin(step, b as u32, k);
                for c in 0..self.c {
                    for y in 0..ps {
                        for xx in 0..ps {
                            out.push(x[0].data[((b * self.c + c) * self.h + top + y) * self.w + left + xx]);
                        }
                    }
                }
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- mixup / cutmix ---------------------------------------------------------------------

#[derive(Debug)]
struct MixOp {
    h: usize,
    w: usize,
    seed: u32,
    salt: u32,
    mix: Mix,
}

impl MixOp {
    /// [mode, lambda, y0, y1, x0, x1, 0, 0] at `step` (f32 arithmetic, as the kernel).
    fn params(&self, step: u32) -> [f32; 8] {
        let key = dkey(self.seed, step, self.salt);
        let m = &self.mix;
        let (mut mode, mut lam) = (0u32, 1.0f32);
        let (mut y0, mut y1, mut x0, mut x1) = (0u32, 0u32, 0u32, 0u32);
        if du01(key, 0, 0) < m.prob && (m.mixup_alpha > 0.0 || m.cutmix_alpha > 0.0) {
            let mut cut = m.mixup_alpha <= 0.0;
            if m.mixup_alpha > 0.0 && m.cutmix_alpha > 0.0 {
                cut = du01(key, 0, 1) < m.switch_prob;
            }
            let alpha = if cut { m.cutmix_alpha } else { m.mixup_alpha };
            lam = beta_draw(key, 1, alpha);
            mode = 1;
            if cut {
                mode = 2;
                let (h, w) = (self.h as i32, self.w as i32);
                let ratio = (1.0 - lam).sqrt();
                let cut_h = (h as f32 * ratio) as i32;
                let cut_w = (w as f32 * ratio) as i32;
                let cy = dint(key, 0, 2, h as u32) as i32;
                let cx = dint(key, 0, 3, w as u32) as i32;
                y0 = (cy - cut_h / 2).clamp(0, h) as u32;
                y1 = (cy + cut_h / 2).clamp(0, h) as u32;
                x0 = (cx - cut_w / 2).clamp(0, w) as u32;
                x1 = (cx + cut_w / 2).clamp(0, w) as u32;
                lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f32 / (h * w) as f32;
            }
        }
        [mode as f32, lam, y0 as f32, y1 as f32, x0 as f32, x1 as f32, 0.0, 0.0]
    }
}

impl Op for MixOp {
    fn name(&self) -> &'static str {
        "data_mix"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let m = &self.mix;
        let p = Params::new()
            .u(self.h)
            .u(self.w)
            .u(self.seed as usize)
            .u(self.salt as usize)
            .f(m.mixup_alpha)
            .f(m.cutmix_alpha)
            .f(m.prob)
            .f(m.switch_prob);
        l.dispatch("data", "mix_params", p, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)], [1, 1, 1]);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let p = self.params(u32_of(x[0].data[0]));
        Ok(vec![CpuTensor::new(&[8], p.iter().map(|&v| v as f64).collect())])
    }
}

// ---- finish -----------------------------------------------------------------------------

#[derive(Debug)]
struct FinishOp {
    m: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    pad: usize,
    mean: [f32; 4],
    inv_std: [f32; 4],
}

impl Op for FinishOp {
    fn name(&self) -> &'static str {
        "data_finish"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (oh, ow) = (self.h + 2 * self.pad, self.w + 2 * self.pad);
        let mut p = Params::new().u(self.m).u(self.c).u(self.h).u(self.w).u(self.oc).u(oh).u(ow).u(self.pad);
        for v in self.mean.iter().chain(&self.inv_std) {
            p = p.f(*v);
        }
        let b = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("data", "finish", p, &b, plane_grid(self.m * self.oc, oh * ow));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (img, mix) = (x[0], &x[1].data);
        let (oh, ow) = (self.h + 2 * self.pad, self.w + 2 * self.pad);
        let px = |s: usize, c: usize, y: usize, xx: usize| -> f64 {
            let (iy, ix) = (y as i64 - self.pad as i64, xx as i64 - self.pad as i64);
            if iy < 0 || ix < 0 || iy >= self.h as i64 || ix >= self.w as i64 {
                return 0.0;
            }
            let ic = if self.c == 1 { 0 } else { c };
            img.data[((s * self.c + ic) * self.h + iy as usize) * self.w + ix as usize]
        };
        let mut out = Vec::with_capacity(self.m * self.oc * oh * ow);
        for s in 0..self.m {
            let partner = self.m - 1 - s;
            for c in 0..self.oc {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut v = px(s, c, y, xx);
                        match mix[0] as u32 {
                            1 => v = mix[1] * v + (1.0 - mix[1]) * px(partner, c, y, xx),
                            2 => {
                                let (yf, xf) = (y as f64, xx as f64);
                                if yf >= mix[2] && yf < mix[3] && xf >= mix[4] && xf < mix[5] {
                                    v = px(partner, c, y, xx);
                                }
                            }
                            _ => {}
                        }
                        out.push((v - self.mean[c] as f64) * self.inv_std[c] as f64);
                    }
                }
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- soft targets -----------------------------------------------------------------------

#[derive(Debug)]
struct TargetsOp {
    batch: usize,
    classes: usize,
    smoothing: f32,
}

impl TargetsOp {
    fn off_on(&self) -> (f32, f32) {
        let off = self.smoothing / self.classes as f32;
        (off, 1.0 - self.smoothing + off)
    }
}

impl Op for TargetsOp {
    fn name(&self) -> &'static str {
        "data_targets"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (off, on) = self.off_on();
        let p = Params::new().u(self.batch).u(self.classes).u(0).u(0).f(off).f(on).f(0.0).f(0.0);
        let b = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("data", "targets", p, &b, grid_for(self.batch * self.classes, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (off, on) = self.off_on();
        let (off, on) = (off as f64, on as f64);
        let lam = x[1].data[1];
        let mut out = Vec::with_capacity(self.batch * self.classes);
        for b in 0..self.batch {
            let (y1, y2) = (x[0].data[b] as usize, x[0].data[self.batch - 1 - b] as usize);
            for k in 0..self.classes {
                out.push(lam * if k == y1 { on } else { off } + (1.0 - lam) * if k == y2 { on } else { off });
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- graph builders ---------------------------------------------------------------------

fn check_img(g: &Graph, x: Var, what: &str) -> Result<[usize; 4]> {
    let s = g.shape(x);
    if s.len() != 4 || g.dtype(x) != DType::F32 {
        return Err(Error::shape("data", format!("{what} takes F32 images [N, C, H, W], got {:?} {:?}", g.dtype(x), s)));
    }
    Ok([s[0], s[1], s[2], s[3]])
}

fn check_rec(g: &Graph, rec: Var, m: usize) -> Result<()> {
    if g.shape(rec) != [m, REC] {
        return Err(Error::shape("data", format!("a view record tensor must be [{m}, {REC}], got {:?}", g.shape(rec))));
    }
    Ok(())
}

fn prob(p: f32, what: &str) -> Result<f32> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::shape("data", format!("{what} probability {p} is not in [0, 1]")));
    }
    Ok(p)
}

impl Graph {
    /// Draw the rows of a batch from `n` samples: returns (dataset indices U32 [B], labels U32
    /// [B] read from `labels` (U32 [n]), valid F32 [B]). `step` is a U32 [1] counter.
    pub fn data_sample(
        &mut self,
        labels: Var,
        step: Var,
        n: usize,
        batch: usize,
        sampling: Sampling,
        seed: u32,
    ) -> Result<(Var, Var, Var)> {
        check_u32_scalar(self, step, "the step")?;
        if n == 0 || batch == 0 {
            return Err(Error::shape("data_sample", "the dataset and the batch must not be empty"));
        }
        if self.numel(labels) < n || self.dtype(labels) != DType::U32 {
            return Err(Error::shape("data_sample", format!("labels must be U32 with at least {n} elements")));
        }
        // Positions inside one step (r*B + b, r < n) are computed in 32 bits.
        if (n as u64) * (batch as u64) >= 1 << 32 {
            return Err(Error::shape("data_sample", format!("{n} samples x batch {batch} must stay below 2^32")));
        }
        let s = vec![batch];
        let outs = self.add_node(
            std::sync::Arc::new(SampleOp { n, batch, sampling, seed }),
            &[labels, step],
            &[(s.clone(), DType::U32), (s.clone(), DType::U32), (s, DType::F32)],
        )?;
        Ok((outs[0], outs[1], outs[2]))
    }

    /// Copy the packed images `idx` (U32 [B]) from the dataset pages into U32 [B, stride]; image
    /// i is at words `(i % per_page) * stride ..` of page `i / per_page`. One dispatch per page.
    pub fn data_gather(&mut self, idx: Var, pages: &[Var], stride: usize, per_page: usize) -> Result<Var> {
        if pages.is_empty() || stride == 0 || per_page == 0 {
            return Err(Error::shape("data_gather", "needs at least one page and a positive image stride"));
        }
        for &p in pages {
            if self.numel(p) < per_page * stride && p != pages[pages.len() - 1] {
                return Err(Error::shape(
                    "data_gather",
                    format!("a page holds {} words, fewer than {per_page} images of {stride}", self.numel(p)),
                ));
            }
        }
        let batch = self.numel(idx);
        let mut inputs = vec![idx];
        inputs.extend_from_slice(pages);
        Ok(self.add_node(std::sync::Arc::new(GatherOp { batch, stride, per_page }), &inputs, &[(vec![batch, stride], DType::U32)])?[0])
    }

    /// Per-sample parameter records F32 [m, 24] of a view of `src` = (H, W) images at output size
    /// `out` = (OH, OW), drawn from (seed, step, salt). Row i of a view with several copies
    /// reads source row i mod B in [`Graph::data_geom`].
    #[allow(clippy::too_many_arguments)]
    pub fn data_view_params(
        &mut self,
        step: Var,
        src: (usize, usize),
        out: (usize, usize),
        m: usize,
        aug: &Augment,
        seed: u32,
        salt: u32,
    ) -> Result<Var> {
        check_u32_scalar(self, step, "the step")?;
        let (h, w) = src;
        let (oh, ow) = out;
        if h == 0 || w == 0 || oh == 0 || ow == 0 || m == 0 {
            return Err(Error::shape("data_view_params", "sizes must be positive"));
        }
        let mut op = ViewOp {
            m: m as u32,
            h: h as u32,
            w: w as u32,
            oh: oh as u32,
            ow: ow as u32,
            crop: 0,
            seed,
            salt,
            a: [0.0; 4],
            flip_p: prob(aug.hflip, "flip")?,
            jit_p: 0.0,
            bri: 0.0,
            con: 0.0,
            sat: 0.0,
            hue: 0.0,
            gray_p: prob(aug.grayscale, "grayscale")?,
            blur_p: 0.0,
            sig: (0.0, 0.0),
            ratio: (1.0, 1.0),
        };
        match aug.crop {
            Crop::Full => {}
            Crop::Pad { padding } => {
                if h + 2 * padding < oh || w + 2 * padding < ow {
                    return Err(Error::shape(
                        "data_view_params",
                        format!("a {oh}x{ow} crop does not fit {h}x{w} images padded by {padding}"),
                    ));
                }
                op.crop = 1;
                op.a[0] = padding as f32;
            }
            Crop::ResizedCrop { scale, ratio } => {
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && ratio.0 > 0.0 && ratio.0 <= ratio.1) {
                    return Err(Error::shape(
                        "data_view_params",
                        format!("RandomResizedCrop scale {scale:?} / ratio {ratio:?} are not increasing positive ranges"),
                    ));
                }
                op.crop = 2;
                op.a = [scale.0, scale.1, ratio.0.ln(), ratio.1.ln()];
                op.ratio = ratio;
            }
            Crop::Center { resize } => {
                // torchvision Resize(int): the shorter side becomes `resize`, the longer one is
                // scaled and truncated.
                let (rh, rw) = if h <= w { (resize, resize * w / h) } else { (resize * h / w, resize) };
                if rh < oh || rw < ow {
                    return Err(Error::shape(
                        "data_view_params",
                        format!("CenterCrop {oh}x{ow} is larger than the resized {rh}x{rw} image"),
                    ));
                }
                op.crop = 3;
                op.a[0] = rh as f32;
                op.a[1] = rw as f32;
            }
        }
        if let Some(j) = aug.jitter {
            op.jit_p = prob(j.p, "colour jitter")?;
            if j.brightness < 0.0 || j.contrast < 0.0 || j.saturation < 0.0 || !(0.0..=0.5).contains(&j.hue) {
                return Err(Error::shape("data_view_params", format!("invalid colour jitter {j:?} (strengths >= 0, hue in [0, 0.5])")));
            }
            (op.bri, op.con, op.sat, op.hue) = (j.brightness, j.contrast, j.saturation, j.hue);
        }
        if let Some(b) = aug.blur {
            op.blur_p = prob(b.p, "blur")?;
            if !(b.sigma.0 > 0.0 && b.sigma.0 <= b.sigma.1) {
                return Err(Error::shape("data_view_params", format!("blur sigma range {:?} must be positive and increasing", b.sigma)));
            }
            op.sig = b.sigma;
        }
        self.push(op, &[step], vec![m, REC], DType::F32)
    }

    /// Crop / resize / pad / flip packed images `raw` (U32 [B, stride], C x H x W bytes each)
    /// into F32 [m, C, OH, OW] in [0, 1] following the records `rec` [m, 24].
    pub fn data_geom(&mut self, raw: Var, rec: Var, chw: (usize, usize, usize), out: (usize, usize)) -> Result<Var> {
        let s = self.shape(raw).to_vec();
        let (c, h, w) = chw;
        if s.len() != 2 || self.dtype(raw) != DType::U32 || s[1] != (c * h * w).div_ceil(4) {
            return Err(Error::shape(
                "data_geom",
                format!("raw images must be U32 [B, {}] for {c}x{h}x{w} bytes, got {s:?}", (c * h * w).div_ceil(4)),
            ));
        }
        let m = self.shape(rec)[0];
        check_rec(self, rec, m)?;
        let op = GeomOp { m, batch: s[0], c, h, w, oh: out.0, ow: out.1, stride: s[1] };
        self.push(op, &[raw, rec], vec![m, c, out.0, out.1], DType::F32)
    }

    /// Colour jitter and random grayscale of F32 images [m, C, H, W] (C = 1 or 3) per `rec`.
    pub fn data_color(&mut self, img: Var, rec: Var) -> Result<Var> {
        let [m, c, h, w] = check_img(self, img, "data_color")?;
        check_rec(self, rec, m)?;
        if c != 1 && c != 3 {
            return Err(Error::shape("data_color", format!("colour augmentation needs 1 or 3 channels, not {c}")));
        }
        self.push(ColorOp { m, c, hw: h * w }, &[img, rec], vec![m, c, h, w], DType::F32)
    }

    /// Gaussian blur of F32 images [m, C, H, W] with the per-sample sigma of `rec` (0: none)
    /// and an odd `kernel` size smaller than twice the image side.
    pub fn data_blur(&mut self, img: Var, rec: Var, kernel: usize) -> Result<Var> {
        let [m, c, h, w] = check_img(self, img, "data_blur")?;
        check_rec(self, rec, m)?;
        let half = kernel / 2;
        if kernel % 2 == 0 || half >= h || half >= w {
            return Err(Error::shape(
                "data_blur",
                format!("the blur kernel {kernel} must be odd and its half ({half}) smaller than the image ({h}x{w})"),
            ));
        }
        self.push(BlurOp { m, c, h, w, half }, &[img, rec], vec![m, c, h, w], DType::F32)
    }

    /// OBoW patches of F32 images [B, C, H, W]: F32 [B * keep, C, size, size], sample-major.
    pub fn data_patches(&mut self, img: Var, step: Var, p: &Patches, seed: u32, salt: u32) -> Result<Var> {
        let [batch, c, h, w] = check_img(self, img, "data_patches")?;
        check_u32_scalar(self, step, "the step")?;
        if p.grid < 2
            || p.grid * p.grid > 16
            || p.keep == 0
            || p.keep > p.grid * p.grid
            || p.size == 0
            || h < p.size + p.jitter
            || w < p.size + p.jitter
        {
            return Err(Error::shape(
                "data_patches",
                format!("{p:?} does not fit {h}x{w} images (grid 2..=4, keep 1..=grid^2, size + jitter <= side)"),
            ));
        }
        self.push(PatchOp { batch, c, h, w, p: *p, seed, salt }, &[img, step], vec![batch * p.keep, c, p.size, p.size], DType::F32)
    }

    /// Mixup / cutmix parameters of one step for images of `size` = (H, W): F32 [8] =
    /// [mode (0 none, 1 mixup, 2 cutmix), lambda, y0, y1, x0, x1, 0, 0].
    pub fn data_mix(&mut self, step: Var, mix: &Mix, size: (usize, usize), seed: u32, salt: u32) -> Result<Var> {
        check_u32_scalar(self, step, "the step")?;
        prob(mix.prob, "mix")?;
        prob(mix.switch_prob, "mix switch")?;
        if mix.mixup_alpha < 0.0 || mix.cutmix_alpha < 0.0 {
            return Err(Error::shape("data_mix", "mixup and cutmix alphas must be >= 0"));
        }
        self.push(MixOp { h: size.0, w: size.1, seed, salt, mix: *mix }, &[step], vec![8], DType::F32)
    }

    /// Zero-pad by `pad`, replicate 1 channel to `channels`, mix with the flipped batch per
    /// `mix` (from [`Graph::data_mix`]; the box is in padded coordinates), and normalise with
    /// per-channel `mean` / `std` (one value or one per output channel).
    pub fn data_finish(&mut self, img: Var, mix: Option<Var>, pad: usize, channels: usize, mean: &[f32], std: &[f32]) -> Result<Var> {
        let [m, c, h, w] = check_img(self, img, "data_finish")?;
        let oc = if channels == 0 { c } else { channels };
        if !(oc == c || c == 1) || oc > 4 {
            return Err(Error::shape("data_finish", format!("cannot make {oc} channels from {c} (1 -> n replicates; at most 4)")));
        }
        let per = |v: &[f32], what: &str| -> Result<[f32; 4]> {
            let mut out = [0.0; 4];
            for (k, o) in out.iter_mut().enumerate().take(oc) {
                *o = match v.len() {
                    1 => v[0],
                    n if n == oc => v[k],
                    _ => return Err(Error::shape("data_finish", format!("{what} has {} values for {oc} channels", v.len()))),
                };
            }
            Ok(out)
        };
        let mean = per(mean, "mean")?;
        let std = per(std, "std")?;
        if std[..oc].iter().any(|&s| s <= 0.0) {
            return Err(Error::shape("data_finish", "std must be positive"));
        }
        let mix = match mix {
            Some(v) if self.shape(v) == [8] => v,
            Some(_) => return Err(Error::shape("data_finish", "mix parameters must be F32 [8] (Graph::data_mix)")),
            None => self.constant(&[8], &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])?,
        };
        let op = FinishOp { m, c, h, w, oc, pad, mean, inv_std: std.map(|s| if s > 0.0 { 1.0 / s } else { 0.0 }) };
        self.push(op, &[img, mix], vec![m, oc, h + 2 * pad, w + 2 * pad], DType::F32)
    }

    /// Soft targets F32 [B, classes]: label-smoothed one-hots of `labels` (U32 [B]) mixed with
    /// those of the flipped batch by the lambda of `mix` (none: lambda 1), as timm's
    /// `mixup_target`. Rows sum to 1.
    pub fn data_targets(&mut self, labels: Var, mix: Option<Var>, classes: usize, smoothing: f32) -> Result<Var> {
        if self.dtype(labels) != DType::U32 || self.shape(labels).len() != 1 {
            return Err(Error::shape("data_targets", "labels must be U32 [B]"));
        }
        if !(0.0..1.0).contains(&smoothing) || classes == 0 {
            return Err(Error::shape("data_targets", format!("smoothing {smoothing} must be in [0, 1) and classes positive")));
        }
        let batch = self.numel(labels);
        let mix = match mix {
            Some(v) => v,
            None => self.constant(&[8], &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])?,
        };
        self.push(TargetsOp { batch, classes, smoothing }, &[labels, mix], vec![batch, classes], DType::F32)
    }
}
