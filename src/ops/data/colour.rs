//! Colour: jitter (torchvision's order and formulas) and random grayscale, and Gaussian blur,
//! both driven by the per-sample view records. Kernels in `shaders/data_colour.wgsl`.

use super::{REC, check_img, check_rec, plane_grid};
use crate::error::{Error, Result};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

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
        l.dispatch("data_colour", "color", p, &b, crate::graph::lower::grid(self.m));
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
        l.dispatch("data_colour", "blur", p(0), &[x, rec, tmp], grid);
        l.dispatch("data_colour", "blur", p(1), &[tmp, rec, y], grid);
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

impl Graph {
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
}
