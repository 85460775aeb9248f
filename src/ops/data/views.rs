//! Views: the per-sample view records (crop box, flip, and every colour and blur draw, see
//! [`REC`]), the geometry pass that crops / resizes / pads / flips the packed bytes into float
//! images, and the OBoW patches. Kernels in `shaders/data_views.wgsl`.

use super::rng::*;
use super::spec::{Augment, Crop, Patches};
use super::{REC, check_img, check_rec, check_u32_scalar, plane_grid, prob, u32_of};
use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

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
        l.dispatch("data_views", "view_params", p, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)], grid_for(self.m as usize, 256));
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
        l.dispatch("data_views", "geom", p, &b, plane_grid(self.m * self.c, self.oh * self.ow));
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
        l.dispatch("data_views", "patches", p, &b, plane_grid(self.batch * q.keep * self.c, q.size * q.size));
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

impl Graph {
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
}
