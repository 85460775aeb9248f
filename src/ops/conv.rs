//! 2-D convolution over NCHW maps with PyTorch's weight layout [Cout, Cin/groups, KH, KW]:
//! any kernel size, stride, zero padding and group count, with or without bias. Forward,
//! input gradient and weight gradient are implicit GEMMs (kernels in `shaders/conv_*.wgsl`:
//! `conv_direct`, `conv_depthwise`, `conv_tiled`, sharing `conv_common.wgsl`):
//! register-blocked kernels on software adapters, shared-memory tiles on real GPUs, direct
//! kernels for depthwise convolutions, a pointwise weight-gradient kernel, and the
//! foundation's matmul for 1x1 stride-1 convolutions over maps of 64+ pixels.

use super::matmul::MatmulOp;
use crate::error::{Error, Result};
use crate::gpu::{KernelKey, MatmulVariant};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, TensorDesc, Var};
use std::sync::Arc;

/// Stride, zero padding and groups of a convolution (or of a pooling window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub groups: usize,
}

impl Conv2dSpec {
    pub fn new(stride: usize, padding: usize, groups: usize) -> Self {
        Conv2dSpec { stride: [stride, stride], padding: [padding, padding], groups }
    }
}

/// Every size of one convolution, derived from the input and weight shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub spec: Conv2dSpec,
}

impl ConvGeom {
    /// Check the shapes of input `x` and weight `w` against `spec` (errors name the shapes).
    pub fn new(x: &[usize], w: &[usize], spec: Conv2dSpec) -> Result<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::shape("conv2d", format!("input {x:?} must be [N, C, H, W] and weight {w:?} [Cout, Cin/groups, KH, KW]")));
        }
        let g = spec.groups;
        if g == 0 || spec.stride.contains(&0) {
            return Err(Error::shape("conv2d", format!("groups {g} and stride {:?} must be positive", spec.stride)));
        }
        if x[1] % g != 0 || w[0] % g != 0 || w[1] * g != x[1] {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input {x:?} and weight {w:?} do not fit {g} group(s): Cin and Cout must divide by groups and weight dim 1 must be Cin/groups"
                ),
            ));
        }
        let (ph, pw) = (x[2] + 2 * spec.padding[0], x[3] + 2 * spec.padding[1]);
        if w[2] > ph || w[3] > pw {
            return Err(Error::shape(
                "conv2d",
                format!("kernel {}x{} is larger than the padded input {ph}x{pw} (input {x:?}, padding {:?})", w[2], w[3], spec.padding),
            ));
        }
        Ok(ConvGeom {
            n: x[0],
            cin: x[1],
            h: x[2],
            w: x[3],
            cout: w[0],
            oh: (ph - w[2]) / spec.stride[0] + 1,
            ow: (pw - w[3]) / spec.stride[1] + 1,
            kh: w[2],
            kw: w[3],
            spec,
        })
    }

    pub fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.cin, self.h, self.w]
    }
    pub fn w_shape(&self) -> Vec<usize> {
        vec![self.cout, self.cin_g(), self.kh, self.kw]
    }
    pub fn y_shape(&self) -> Vec<usize> {
        vec![self.n, self.cout, self.oh, self.ow]
    }
    pub fn cin_g(&self) -> usize {
        self.cin / self.spec.groups
    }
    pub fn cout_g(&self) -> usize {
        self.cout / self.spec.groups
    }
    /// Multiply-adds of the forward pass (the input and weight gradients cost the same).
    pub fn macs(&self) -> u64 {
        (self.n * self.cout * self.oh * self.ow * self.cin_g() * self.kh * self.kw) as u64
    }
    pub fn depthwise(&self) -> bool {
        self.spec.groups == self.cin && self.cin == self.cout && self.spec.groups > 1
    }
    /// 1x1, stride 1, no padding, one group: a batched matmul W @ x[n].
    pub fn pointwise(&self) -> bool {
        self.pointwise_any_groups() && self.spec.groups == 1
    }

    /// The kernels' uniform block (see `CvP` in shaders/conv_common.wgsl).
    fn params(&self, flags: usize, blocks: usize, split: usize, rows: usize, qh: usize, mode: usize) -> Params {
        let s = &self.spec;
        Params::new()
            .u(self.n)
            .u(self.cin)
            .u(self.h)
            .u(self.w)
            .u(self.cout)
            .u(self.oh)
            .u(self.ow)
            .u(s.groups)
            .u(self.kh)
            .u(self.kw)
            .u(s.stride[0])
            .u(s.stride[1])
            .u(s.padding[0])
            .u(s.padding[1])
            .u(self.cin_g())
            .u(self.cout_g())
            .u(flags)
            .u(blocks)
            .u(split)
            .u(rows)
            .u(qh)
            .u(mode)
            .u(self.cin_g() * self.kh * self.kw)
            .u(self.kh * self.kw)
    }

    /// The convolution whose forward pass is the input gradient of this stride-1 one: dy
    /// convolved with the flipped, transposed weight and padding K-1-p, as `conv_fwd_win` runs it.
    fn transposed(&self) -> ConvGeom {
        let s = &self.spec;
        ConvGeom {
            n: self.n,
            cin: self.cout,
            h: self.oh,
            w: self.ow,
            cout: self.cin,
            oh: self.h,
            ow: self.w,
            kh: self.kh,
            kw: self.kw,
            spec: Conv2dSpec { stride: [1, 1], padding: [self.kh - 1 - s.padding[0], self.kw - 1 - s.padding[1]], groups: s.groups },
        }
    }

    /// 1x1 stride-1 convolutions are batched matmuls W @ x[n]; the foundation's matmul tiles
    /// 64 columns of H*W at a time, so it only pays for maps of 64 pixels or more (measured:
    /// 1.7x faster than the conv kernels at 8x8, 2-4x slower at 4x4 and 2x2 on lavapipe).
    fn matmul_route(&self) -> bool {
        let hw = self.h * self.w;
        self.pointwise() && hw >= 64 && hw % 4 == 0 && self.cin % 4 == 0 && self.cout % 4 == 0
    }

    fn pointwise_any_groups(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.spec.stride == [1, 1] && self.spec.padding == [0, 0]
    }

    /// The vec4 depthwise kernels apply: stride 1, width kept, W % 4 == 0, KW <= 8.
    fn dwc_v4(&self) -> bool {
        self.depthwise() && self.dw_v4() && self.kw <= 8
    }

    /// The vec4 weight-gradient kernel applies: stride 1, width kept, W % 4 == 0.
    fn dw_v4(&self) -> bool {
        self.spec.stride == [1, 1] && self.ow == self.w && self.w % 4 == 0 && self.kw <= 9
    }

    /// Chunks of (n, oh) rows the weight gradient's reduction is split into, so that about
    /// `target` threads work at once (partial sums are then added by `conv_sum_split`).
    fn split(&self, base_threads: usize, target: usize) -> (usize, usize) {
        let rows = self.n * self.oh;
        let want = target.div_ceil(base_threads.max(1)).clamp(1, rows);
        let per = rows.div_ceil(want);
        (rows.div_ceil(per), per)
    }
}

/// Pixels per thread along a row in the register kernels (TP in the shader).
const TP: usize = 4;
/// Channels per thread in the register kernels.
const TC: usize = 8;

fn tiled(l: &Lowering) -> bool {
    l.profile().matmul == MatmulVariant::Tiled
}

/// Run `geom` (a forward convolution, or the transposed one of an input gradient) with the
/// row-window kernel: first the weight into `conv_wt`'s layout (scratch), then the kernel.
/// `wo`/`wi`/`flip` say where weight (out channel, in channel, tap) is in the stored weight.
#[allow(clippy::too_many_arguments)]
fn dispatch_win(l: &mut Lowering, geom: &ConvGeom, x: Var, w: Var, y: Var, bias: Bind, flags: usize, wo: usize, wi: usize) {
    let wt = transpose_weight(l, geom, w, flags & 4, wo, wi);
    let blocks = geom.ow.div_ceil(TP);
    let pix = geom.n * geom.oh * blocks;
    let p = geom.params(flags & 1, blocks, 1, 1, 1, 0);
    let cb = geom.spec.groups * geom.cout_g().div_ceil(TC);
    let key = KernelKey::new("conv_direct", "conv_fwd_win").constant("KW", geom.kw as u32).constant("SW", geom.spec.stride[1] as u32);
    l.dispatch_key(key, p, &[Bind::T(x), wt, Bind::T(y), bias], [pix.div_ceil(64) as u32, cb as u32, 1]);
}

/// `conv_wt`: the weight of the GEMM `geom` runs as [groups][cin_g*KH*KW][cout_g padded to 8]
/// in scratch. Weight (out channel, in channel, tap) is at out * wo + in * wi + tap of each
/// group's block of the stored weight, taps reversed with `flip` = 4.
fn transpose_weight(l: &mut Lowering, geom: &ConvGeom, w: Var, flip: usize, wo: usize, wi: usize) -> Bind {
    let cp8 = geom.cout_g().div_ceil(TC) * TC;
    let len = geom.spec.groups * geom.cin_g() * geom.kh * geom.kw * cp8;
    let wt = l.scratch(len, "conv2d weight, transposed");
    let mut p = geom.params(flip, 0, 1, 1, 1, 0);
    let n = p.0.len();
    p.0[n - 2] = wo as u32;
    p.0[n - 1] = wi as u32;
    let unused = l.unused();
    l.dispatch("conv_direct", "conv_wt", p, &[Bind::T(w), unused, wt], grid_for(len, 256));
    wt
}

/// The vec4 depthwise kernel: the weight padded (flipped with `flip` = 4) to [C][KH][8] in
/// scratch, then 8 pixels per thread.
fn dispatch_dwc_v4(l: &mut Lowering, geom: &ConvGeom, x: Var, w: Var, y: Var, bias: Bind, flags: usize) {
    let len = geom.cout * geom.kh * 8;
    let wt = l.scratch(len, "depthwise weight, padded");
    l.dispatch("conv_depthwise", "dwc_wt", geom.params(flags & 4, 0, 1, 1, 1, 0), &[Bind::T(w), Bind::T(w), wt], grid_for(len, 256));
    let blocks = geom.ow.div_ceil(8);
    let p = geom.params(flags & 1, blocks, 1, 1, 1, 0);
    let key = KernelKey::new("conv_depthwise", "dwc_fwd_v4").constant("KW", geom.kw as u32);
    l.dispatch_key(key, p, &[Bind::T(x), wt, Bind::T(y), bias], grid_for(geom.n * geom.cout * geom.oh * blocks, 64));
}

/// Threads the weight-gradient reduction should keep busy.
fn dw_target(l: &Lowering) -> usize {
    if tiled(l) { 1 << 16 } else { 2048 }
}

fn desc(var: Var, shape: Vec<usize>) -> TensorDesc {
    TensorDesc { var, shape, dtype: DType::F32 }
}

/// y = conv(x, w) (+ bias).
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    spec: Conv2dSpec,
    bias: bool,
}

impl Op for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let (x, w) = (&n.inputs[0], &n.inputs[1]);
        let geom = ConvGeom::new(&x.shape, &w.shape, self.spec)?;
        let dx = g.push(ConvDxOp { geom }, &[dy, w.var], x.shape.clone(), DType::F32)?;
        let dw = g.push(ConvDwOp { geom }, &[x.var, dy], w.shape.clone(), DType::F32)?;
        let mut out = vec![Some(dx), Some(dw)];
        if self.bias {
            out.push(Some(g.sum(dy, &[0, 2, 3], false)?));
        }
        Ok(out)
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        let geom = ConvGeom::new(&n.inputs[0].shape, &n.inputs[1].shape, self.spec).expect("checked when built");
        2 * geom.macs() + if self.bias { n.outputs[0].numel() as u64 } else { 0 }
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let geom = ConvGeom::new(&n.inputs[0].shape, &n.inputs[1].shape, self.spec)?;
        let (x, w, y) = (n.inputs[0].var, n.inputs[1].var, n.outputs[0].var);
        // Without a bias the kernel ignores binding 4: a placeholder, never another tensor of
        // the dispatch (WebGPU rejects overlapping writable bindings).
        let bias = if self.bias { Bind::T(n.inputs[2].var) } else { l.unused() };
        let binds = [Bind::T(x), Bind::T(w), Bind::T(y), bias];
        if geom.matmul_route() && !self.bias {
            // y[n] = W [Cout, Cin] @ x[n] [Cin, H*W]: the tuned matmul, with W broadcast.
            let hw = geom.h * geom.w;
            let mm = NodeRef {
                index: n.index,
                inputs: vec![desc(w, vec![geom.cout, geom.cin]), desc(x, vec![geom.n, geom.cin, hw])],
                outputs: vec![desc(y, vec![geom.n, geom.cout, hw])],
            };
            return MatmulOp { ta: false, tb: false, bias: false }.lower(&mm, l);
        }
        let flags = self.bias as usize;
        if geom.dwc_v4() {
            dispatch_dwc_v4(l, &geom, x, w, y, bias, flags);
        } else if geom.depthwise() {
            let blocks = geom.ow.div_ceil(TP);
            let p = geom.params(flags, blocks, 1, 1, 1, 0);
            l.dispatch("conv_depthwise", "dwc_fwd", p, &binds, grid_for(geom.n * geom.cout * geom.oh * blocks, 64));
        } else if tiled(l) {
            let (rows, cols) = (geom.n * geom.oh * geom.ow, geom.cout_g());
            let p = geom.params(flags, cols, 1, 1, 1, 0);
            l.dispatch(
                "conv_tiled",
                "conv_tiled",
                p,
                &binds,
                [cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, geom.spec.groups as u32],
            );
        } else {
            let blocks = geom.ow.div_ceil(TP);
            let pix = geom.n * geom.oh * blocks;
            let p = geom.params(flags, blocks, 1, 1, 1, 0);
            let cb = geom.spec.groups * geom.cout_g().div_ceil(TC);
            let g = [pix.div_ceil(64) as u32, cb as u32, 1];
            // The row-window kernel holds (TP-1)*SW + KW inputs in a 16-entry window.
            if (TP - 1) * geom.spec.stride[1] + geom.kw <= 16 {
                let kg = geom.cin_g() * geom.kh * geom.kw;
                dispatch_win(l, &geom, x, w, y, bias, flags, kg, geom.kh * geom.kw);
            } else {
                l.dispatch("conv_direct", "conv_fwd_reg", p, &binds, g);
            }
        }
        Ok(())
    }

    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let geom = ConvGeom::new(&x[0].shape, &x[1].shape, self.spec)?;
        let mut y = conv2d_cpu(x[0], x[1], &geom);
        if self.bias {
            let plane = geom.oh * geom.ow;
            for (i, v) in y.data.iter_mut().enumerate() {
                *v += x[2].data[(i / plane) % geom.cout];
            }
        }
        debug_assert_eq!(y.shape, n.outputs[0].shape);
        Ok(vec![y])
    }
}

/// dx = conv_transpose(dy, w): inputs dy, w.
#[derive(Debug, Clone, Copy)]
struct ConvDxOp {
    geom: ConvGeom,
}

impl Op for ConvDxOp {
    fn name(&self) -> &'static str {
        "conv2d_dx"
    }
    fn flops(&self, _n: &NodeRef) -> u64 {
        2 * self.geom.macs()
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let geom = &self.geom;
        let (dy, w, dx) = (n.inputs[0].var, n.inputs[1].var, n.outputs[0].var);
        let binds = [Bind::T(dy), Bind::T(w), Bind::T(dx)];
        let (sh, sw) = (geom.spec.stride[0], geom.spec.stride[1]);
        if geom.matmul_route() {
            // dx[n] = W^T [Cin, Cout] @ dy[n] [Cout, H*W].
            let hw = geom.h * geom.w;
            let mm = NodeRef {
                index: n.index,
                inputs: vec![desc(w, vec![geom.cout, geom.cin]), desc(dy, vec![geom.n, geom.cout, hw])],
                outputs: vec![desc(dx, vec![geom.n, geom.cin, hw])],
            };
            return MatmulOp { ta: true, tb: false, bias: false }.lower(&mm, l);
        }
        // Input pixels grouped by stride phase: qh rows per phase, blocks of TP per row.
        let qh = geom.h.div_ceil(sh);
        let blocks = geom.w.div_ceil(sw).div_ceil(TP);
        if geom.dwc_v4() {
            // A stride-1 depthwise input gradient is the depthwise convolution of dy with the
            // flipped kernel and padding K-1-p.
            let unused = l.unused();
            dispatch_dwc_v4(l, &geom.transposed(), dy, w, dx, unused, 4);
        } else if geom.depthwise() {
            let p = geom.params(0, blocks, 1, 1, qh, 0);
            l.dispatch("conv_depthwise", "dwc_dx", p, &binds, grid_for(sh * sw * geom.n * geom.cin * qh * blocks, 64));
        } else if tiled(l) {
            let (rows, cols) = (geom.n * geom.h * geom.w, geom.cin_g());
            let p = geom.params(0, cols, 1, 1, qh, 1);
            // conv_tiled declares the bias binding for every mode.
            let binds = [Bind::T(dy), Bind::T(w), Bind::T(dx), l.unused()];
            l.dispatch(
                "conv_tiled",
                "conv_tiled",
                p,
                &binds,
                [cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, geom.spec.groups as u32],
            );
        } else if geom.spec.stride == [1, 1] && geom.kh > geom.spec.padding[0] && geom.kw > geom.spec.padding[1] && TP - 1 + geom.kw <= 16 {
            // A stride-1 input gradient is a forward convolution of dy with the flipped,
            // transposed weight: weight (out = ci, in = co, tap) of the stored [Cout, Cin_g, KH, KW].
            let ksz = geom.kh * geom.kw;
            let unused = l.unused();
            dispatch_win(l, &geom.transposed(), dy, w, dx, unused, 4, ksz, geom.cin_g() * ksz);
        } else {
            // The weight transposed to [groups][(co, ky, kx)][ci padded to 8] (taps not flipped).
            let ksz = geom.kh * geom.kw;
            let wt = transpose_weight(l, &geom.transposed(), w, 0, ksz, geom.cin_g() * ksz);
            let p = geom.params(0, blocks, 1, 1, qh, 0);
            let pix = sh * sw * geom.n * qh * blocks;
            let cb = geom.spec.groups * geom.cin_g().div_ceil(TC);
            l.dispatch("conv_direct", "conv_dx_reg", p, &[Bind::T(dy), wt, Bind::T(dx)], [pix.div_ceil(64) as u32, cb as u32, 1]);
        }
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![conv2d_dx_cpu(x[0], x[1], &self.geom)])
    }
}

/// dw = correlation of x with dy over the batch and pixels: inputs x, dy.
#[derive(Debug, Clone, Copy)]
struct ConvDwOp {
    geom: ConvGeom,
}

impl Op for ConvDwOp {
    fn name(&self) -> &'static str {
        "conv2d_dw"
    }
    fn flops(&self, _n: &NodeRef) -> u64 {
        2 * self.geom.macs()
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let geom = &self.geom;
        let (x, dy, dw) = (n.inputs[0].var, n.inputs[1].var, n.outputs[0].var);
        let kg = geom.cin_g() * geom.kh * geom.kw;
        let len = geom.cout * kg;
        let target = dw_target(l);
        let (kind, groups, base) = if geom.dwc_v4() {
            let lanes = geom.cout * geom.kh;
            ("dwc_dw_v4", [lanes.div_ceil(64) as u32, 1, 1], lanes.div_ceil(64) * 64)
        } else if geom.depthwise() {
            ("dwc_dw", [len.div_ceil(64) as u32, 1, 1], len.div_ceil(64) * 64)
        } else if tiled(l) {
            let g = [kg.div_ceil(64) as u32, geom.cout_g().div_ceil(64) as u32, geom.spec.groups as u32];
            ("conv_tiled", g, (g[0] * g[1] * g[2]) as usize * 256)
        } else if geom.pointwise_any_groups() && (geom.h * geom.w) % 4 == 0 {
            let cb = geom.spec.groups * geom.cout_g().div_ceil(4);
            let lanes = geom.cin_g().div_ceil(4);
            ("conv_dw_pw", [lanes.div_ceil(64) as u32, cb as u32, 1], lanes.div_ceil(64) * 64 * cb)
        } else if geom.dw_v4() {
            let lanes = geom.cin_g() * geom.kh;
            let cb = geom.spec.groups * geom.cout_g().div_ceil(4);
            ("conv_dw_v4", [lanes.div_ceil(64) as u32, cb as u32, 1], lanes.div_ceil(64) * 64 * cb)
        } else {
            let cb = geom.spec.groups * geom.cout_g().div_ceil(TC);
            let kind = if geom.ow % 4 == 0 { "conv_dw_reg4" } else { "conv_dw_reg" };
            (kind, [kg.div_ceil(64) as u32, cb as u32, 1], kg.div_ceil(64) * 64 * cb)
        };
        let (split, rows) = if kind == "conv_dw_pw" {
            // Chunks of pixel quads instead of (n, oh) rows.
            let quads = geom.n * geom.h * geom.w / 4;
            let want = target.div_ceil(base.max(1)).clamp(1, quads);
            let per = quads.div_ceil(want);
            (quads.div_ceil(per), per)
        } else {
            geom.split(base, target)
        };
        let out = if split > 1 { l.scratch(split * len, "conv2d_dw partial sums") } else { Bind::T(dw) };
        let mut wg = groups;
        match kind {
            "dwc_dw" | "dwc_dw_v4" => wg[1] = split as u32,
            "conv_tiled" => wg[2] *= split as u32,
            _ => wg[2] = split as u32,
        }
        let shader = match kind {
            "dwc_dw" | "dwc_dw_v4" => "conv_depthwise",
            "conv_tiled" => "conv_tiled",
            _ => "conv_direct",
        };
        let p = geom.params(0, 0, split, rows, 1, 2);
        // conv_tiled declares the bias binding for every mode: a placeholder there.
        let mut key = KernelKey::new(shader, kind);
        if kind == "conv_dw_v4" || kind == "dwc_dw_v4" {
            key = key.constant("KW", geom.kw as u32);
        }
        let unused = l.unused();
        l.dispatch_key(key, p, &[Bind::T(x), Bind::T(dy), out, unused], wg);
        if split > 1 {
            let p = geom.params(0, 0, split, len, 1, 0);
            l.dispatch("conv_direct", "conv_sum_split", p, &[out, Bind::T(dy), Bind::T(dw)], grid_for(len, 256));
        }
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![conv2d_dw_cpu(x[0], x[1], &self.geom)])
    }
}

/// Visit every (output element, input element, weight element) triple of a convolution.
fn for_each_tap(g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
    let (cig, cog) = (g.cin_g(), g.cout_g());
    for n in 0..g.n {
        for co in 0..g.cout {
            let grp = co / cog;
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let yi = ((n * g.cout + co) * g.oh + oh) * g.ow + ow;
                    for ci in 0..cig {
                        for ky in 0..g.kh {
                            let ih = (oh * g.spec.stride[0] + ky) as isize - g.spec.padding[0] as isize;
                            if ih < 0 || ih >= g.h as isize {
                                continue;
                            }
                            for kx in 0..g.kw {
                                let iw = (ow * g.spec.stride[1] + kx) as isize - g.spec.padding[1] as isize;
                                if iw < 0 || iw >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.cin + grp * cig + ci) * g.h + ih as usize) * g.w + iw as usize;
                                let wi = ((co * cig + ci) * g.kh + ky) * g.kw + kx;
                                f(yi, xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// f64 reference of the forward pass (no bias).
pub fn conv2d_cpu(x: &CpuTensor, w: &CpuTensor, g: &ConvGeom) -> CpuTensor {
    let mut y = CpuTensor::zeros(&g.y_shape());
    for_each_tap(g, |yi, xi, wi| y.data[yi] += x.data[xi] * w.data[wi]);
    y
}

/// f64 reference of the input gradient.
pub fn conv2d_dx_cpu(dy: &CpuTensor, w: &CpuTensor, g: &ConvGeom) -> CpuTensor {
    let mut dx = CpuTensor::zeros(&g.x_shape());
    for_each_tap(g, |yi, xi, wi| dx.data[xi] += dy.data[yi] * w.data[wi]);
    dx
}

/// f64 reference of the weight gradient.
pub fn conv2d_dw_cpu(x: &CpuTensor, dy: &CpuTensor, g: &ConvGeom) -> CpuTensor {
    let mut dw = CpuTensor::zeros(&g.w_shape());
    for_each_tap(g, |yi, xi, wi| dw.data[wi] += dy.data[yi] * x.data[xi]);
    dw
}

impl Graph {
    /// 2-D convolution of `x` [N, Cin, H, W] with `w` [Cout, Cin/groups, KH, KW] and an
    /// optional `bias` [Cout], as `torch.nn.functional.conv2d`.
    pub fn conv2d(&mut self, x: Var, w: Var, bias: Option<Var>, spec: Conv2dSpec) -> Result<Var> {
        for v in [Some(x), Some(w), bias].into_iter().flatten() {
            if self.dtype(v) != DType::F32 {
                return Err(Error::shape("conv2d", format!("'{}' is not F32", self.info(v).name)));
            }
        }
        let geom = ConvGeom::new(self.shape(x), self.shape(w), spec)?;
        let mut inputs = vec![x, w];
        if let Some(b) = bias {
            if self.shape(b) != [geom.cout] {
                return Err(Error::shape("conv2d", format!("bias has shape {:?}, expected [{}]", self.shape(b), geom.cout)));
            }
            inputs.push(b);
        }
        let op = ConvOp { spec, bias: bias.is_some() };
        Ok(self.add_node(Arc::new(op), &inputs, &[(geom.y_shape(), DType::F32)])?[0])
    }

    /// The input gradient of a convolution on its own: `dy` [N, Cout, OH, OW] with weight `w`
    /// back to an input of shape `x_shape` (benchmarks; autodiff adds it by itself).
    pub fn conv2d_input_grad(&mut self, dy: Var, w: Var, x_shape: &[usize], spec: Conv2dSpec) -> Result<Var> {
        let geom = ConvGeom::new(x_shape, self.shape(w), spec)?;
        if self.shape(dy) != geom.y_shape() {
            return Err(Error::shape("conv2d_dx", format!("dy has shape {:?}, expected {:?}", self.shape(dy), geom.y_shape())));
        }
        self.push(ConvDxOp { geom }, &[dy, w], geom.x_shape(), DType::F32)
    }

    /// The weight gradient of a convolution on its own (benchmarks; autodiff adds it by itself).
    pub fn conv2d_weight_grad(&mut self, x: Var, dy: Var, w_shape: &[usize], spec: Conv2dSpec) -> Result<Var> {
        let geom = ConvGeom::new(self.shape(x), w_shape, spec)?;
        if self.shape(dy) != geom.y_shape() {
            return Err(Error::shape("conv2d_dw", format!("dy has shape {:?}, expected {:?}", self.shape(dy), geom.y_shape())));
        }
        self.push(ConvDwOp { geom }, &[x, dy], geom.w_shape(), DType::F32)
    }
}
