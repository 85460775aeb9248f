//! Mixing and finishing: the mixup / cutmix parameters of a step (timm `Mixup`, "batch" mode),
//! the finish pass (zero padding, channel replication, mixing with the flipped batch,
//! normalisation) and the soft targets (label smoothing, mixed like the images). Kernels in
//! `shaders/data_mixing.wgsl`.

use super::rng::*;
use super::spec::Mix;
use super::{check_img, check_u32_scalar, plane_grid, prob, u32_of};
use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

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
        l.dispatch("data_mixing", "mix_params", p, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)], [1, 1, 1]);
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
        l.dispatch("data_mixing", "finish", p, &b, plane_grid(self.m * self.oc, oh * ow));
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
        l.dispatch("data_mixing", "targets", p, &b, grid_for(self.batch * self.classes, 256));
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

impl Graph {
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
