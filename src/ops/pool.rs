//! 2-D max and average pooling over NCHW maps (PyTorch semantics, `ceil_mode=False`), and
//! global average pooling. Kernels in `shaders/pool.wgsl`.

use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

/// Window, stride and zero padding of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    /// Average pooling only: divide by the full window, padding included (PyTorch's default).
    pub count_include_pad: bool,
}

impl PoolSpec {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        PoolSpec { kernel: [kernel, kernel], stride: [stride, stride], padding: [padding, padding], count_include_pad: true }
    }

    /// Output height and width for an input of `h` x `w`.
    fn out(&self, op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
        if shape.len() != 4 {
            return Err(Error::shape(op, format!("input {shape:?} must be [N, C, H, W]")));
        }
        let (h, w) = (shape[2], shape[3]);
        let [kh, kw] = self.kernel;
        if kh == 0 || kw == 0 || self.stride.contains(&0) {
            return Err(Error::shape(op, format!("kernel {:?} and stride {:?} must be positive", self.kernel, self.stride)));
        }
        if 2 * self.padding[0] > kh || 2 * self.padding[1] > kw {
            return Err(Error::shape(op, format!("padding {:?} must be at most half the kernel {:?}", self.padding, self.kernel)));
        }
        if h + 2 * self.padding[0] < kh || w + 2 * self.padding[1] < kw {
            return Err(Error::shape(op, format!("kernel {:?} is larger than the padded input {shape:?}", self.kernel)));
        }
        Ok(((h + 2 * self.padding[0] - kh) / self.stride[0] + 1, (w + 2 * self.padding[1] - kw) / self.stride[1] + 1))
    }

    fn params(&self, x: &[usize], oh: usize, ow: usize) -> Params {
        Params::new()
            .u(x[0] * x[1])
            .u(x[2])
            .u(x[3])
            .u(oh)
            .u(ow)
            .u(self.kernel[0])
            .u(self.kernel[1])
            .u(self.stride[0])
            .u(self.stride[1])
            .u(self.padding[0])
            .u(self.padding[1])
            .u(self.count_include_pad as usize)
    }

    /// Visit the in-range input pixels of window (oh, ow) of a plane: f(ih * w + iw).
    fn window(&self, h: usize, w: usize, oh: usize, ow: usize, mut f: impl FnMut(usize)) {
        for ky in 0..self.kernel[0] {
            let ih = (oh * self.stride[0] + ky) as isize - self.padding[0] as isize;
            if ih < 0 || ih >= h as isize {
                continue;
            }
            for kx in 0..self.kernel[1] {
                let iw = (ow * self.stride[1] + kx) as isize - self.padding[1] as isize;
                if iw >= 0 && iw < w as isize {
                    f(ih as usize * w + iw as usize);
                }
            }
        }
    }
}

#[derive(Debug)]
struct MaxPoolOp(PoolSpec);

impl Op for MaxPoolOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        (n.outputs[0].numel() * self.0.kernel[0] * self.0.kernel[1]) as u64
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None]) };
        let dx = g.push(MaxPoolGradOp(self.0), &[dy, n.outputs[1].var], n.inputs[0].shape.clone(), DType::F32)?;
        Ok(vec![Some(dx)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (oh, ow) = self.0.out("max_pool2d", &n.inputs[0].shape)?;
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var)];
        l.dispatch("pool", "maxpool_fwd", self.0.params(&n.inputs[0].shape, oh, ow), &binds, grid_for(n.outputs[0].numel(), 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let s = &x[0].shape;
        let (oh, ow) = self.0.out("max_pool2d", s)?;
        let (h, w) = (s[2], s[3]);
        let mut y = CpuTensor::zeros(&n.outputs[0].shape);
        let mut idx = CpuTensor::zeros(&n.outputs[1].shape);
        for p in 0..s[0] * s[1] {
            for i in 0..oh * ow {
                let (mut best, mut bi) = (f64::NEG_INFINITY, 0);
                self.0.window(h, w, i / ow, i % ow, |at| {
                    if x[0].data[p * h * w + at] > best {
                        best = x[0].data[p * h * w + at];
                        bi = at;
                    }
                });
                y.data[p * oh * ow + i] = best;
                idx.data[p * oh * ow + i] = bi as f64;
            }
        }
        Ok(vec![y, idx])
    }
}

/// Inputs: dy, argmax indices. Output: dx.
#[derive(Debug)]
struct MaxPoolGradOp(PoolSpec);

impl Op for MaxPoolGradOp {
    fn name(&self) -> &'static str {
        "max_pool2d_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let x = &n.outputs[0].shape;
        let (oh, ow) = self.0.out("max_pool2d", x)?;
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.inputs[1].var)];
        l.dispatch("pool", "maxpool_bwd", self.0.params(x, oh, ow), &binds, grid_for(n.outputs[0].numel(), 256));
        Ok(())
    }
}

#[derive(Debug)]
struct AvgPoolOp(PoolSpec);

impl AvgPoolOp {
    fn divisor(&self, h: usize, w: usize, oh: usize, ow: usize) -> f64 {
        if self.0.count_include_pad {
            return (self.0.kernel[0] * self.0.kernel[1]) as f64;
        }
        let mut n = 0;
        self.0.window(h, w, oh, ow, |_| n += 1);
        n.max(1) as f64
    }
}

impl Op for AvgPoolOp {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        (n.outputs[0].numel() * self.0.kernel[0] * self.0.kernel[1]) as u64
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None]) };
        Ok(vec![Some(g.push(AvgPoolGradOp(self.0), &[dy], n.inputs[0].shape.clone(), DType::F32)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (oh, ow) = self.0.out("avg_pool2d", &n.inputs[0].shape)?;
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)];
        l.dispatch("pool", "avgpool_fwd", self.0.params(&n.inputs[0].shape, oh, ow), &binds, grid_for(n.outputs[0].numel(), 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let s = &x[0].shape;
        let (oh, ow) = self.0.out("avg_pool2d", s)?;
        let (h, w) = (s[2], s[3]);
        let mut y = CpuTensor::zeros(&n.outputs[0].shape);
        for p in 0..s[0] * s[1] {
            for i in 0..oh * ow {
                let mut acc = 0.0;
                self.0.window(h, w, i / ow, i % ow, |at| acc += x[0].data[p * h * w + at]);
                y.data[p * oh * ow + i] = acc / self.divisor(h, w, i / ow, i % ow);
            }
        }
        Ok(vec![y])
    }
}

/// Input: dy. Output: dx.
#[derive(Debug)]
struct AvgPoolGradOp(PoolSpec);

impl Op for AvgPoolGradOp {
    fn name(&self) -> &'static str {
        "avg_pool2d_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let x = &n.outputs[0].shape;
        let (oh, ow) = self.0.out("avg_pool2d", x)?;
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)];
        l.dispatch("pool", "avgpool_bwd", self.0.params(x, oh, ow), &binds, grid_for(n.outputs[0].numel(), 256));
        Ok(())
    }
}

impl Graph {
    /// `torch.nn.functional.max_pool2d` (padding counts as -inf).
    pub fn max_pool2d(&mut self, x: Var, spec: PoolSpec) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        let (oh, ow) = spec.out("max_pool2d", &xs)?;
        let out = vec![xs[0], xs[1], oh, ow];
        Ok(self.add_node(Arc::new(MaxPoolOp(spec)), &[x], &[(out.clone(), DType::F32), (out, DType::U32)])?[0])
    }

    /// `torch.nn.functional.avg_pool2d` (`count_include_pad` from the spec).
    pub fn avg_pool2d(&mut self, x: Var, spec: PoolSpec) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        let (oh, ow) = spec.out("avg_pool2d", &xs)?;
        self.push(AvgPoolOp(spec), &[x], vec![xs[0], xs[1], oh, ow], DType::F32)
    }

    /// Global average pooling: [N, C, H, W] -> [N, C].
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let xs = self.shape(x);
        if xs.len() != 4 {
            return Err(Error::shape("global_avg_pool", format!("input {xs:?} must be [N, C, H, W]")));
        }
        self.mean(x, &[2, 3], false)
    }
}
