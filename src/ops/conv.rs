//! 2-D convolution over NCHW maps with PyTorch's weight layout [Cout, Cin/groups, KH, KW]:
//! any kernel size, stride, zero padding and group count, with or without bias. Forward,
//! input gradient and weight gradient are implicit GEMMs (kernels in `shaders/conv_*.wgsl`:
//! `conv_direct`, `conv_depthwise`, `conv_tiled`, sharing `conv_common.wgsl`):
//! register-blocked kernels on software adapters, shared-memory tiles on real GPUs, direct
//! kernels for depthwise convolutions, a pointwise weight-gradient kernel, and the
//! foundation's matmul for 1x1 stride-1 convolutions over maps of 64+ pixels.
//!
//! Few dispatches per layer: the register kernels' weight layouts of a network's
//! convolutions are written by a few `conv2d_weights` dispatches (up to 7 weights each, both
//! passes' layouts) instead of a re-layout before every forward and input-gradient kernel;
//! the backward of a convolution whose input comes from the network is one `conv2d_backward`
//! node (the weight gradient, then the input gradient, whose extra workgroups add the weight
//! gradient's split partial sums); and an input gradient can add a gradient sum's other term
//! in its store (`Op::with_addend`).

use super::matmul::MatmulOp;
use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::lower::grid_for;
use crate::graph::{BatchSplit, Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Source, TensorDesc, Var};
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
            .u(0)
            .u(0)
            .u(0)
            .u(0)
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
}

/// Pixels per thread along a row in the register kernels (TP in the shader).
const TP: usize = 4;
/// Channels per thread in the register kernels.
const TC: usize = 8;

/// Words of `CvP` (shaders/conv_common.wgsl) that [`ConvGeom::params`] leaves to the caller.
const P_WO: usize = 22;
const P_WI: usize = 23;
const P_WOFF: usize = 24;
const P_TZ: usize = 25;
const P_TLEN: usize = 26;
const P_TSPLIT: usize = 27;

fn tiled(l: &Lowering) -> bool {
    l.profile().matmul.tiled()
}

/// How a GEMM of the register kernels wants a weight re-laid out by `conv_wt`: groups, the
/// GEMM's input and output channels per group, taps, flipped taps, and the strides of
/// (output channel, input channel) in the stored weight (see `conv_wt` in the shader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayoutSpec {
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    ksz: usize,
    flip: bool,
    wo: usize,
    wi: usize,
}

impl LayoutSpec {
    /// Floats of the layout: [groups][cin_g * taps][cout_g padded to 8].
    fn len(&self) -> usize {
        self.groups * self.cin_g * self.ksz * self.cout_g.div_ceil(TC) * TC
    }

    /// The forward convolution's layout when its register kernel is `conv_fwd_win`.
    fn forward(geom: &ConvGeom, bias: bool) -> Option<Self> {
        // Not the matmul route (bias-free 1x1 over large maps), not depthwise, and the window fits.
        let win = (bias || !geom.matmul_route()) && !geom.depthwise() && fwd_fits_win(geom);
        let ksz = geom.kh * geom.kw;
        win.then_some(LayoutSpec {
            groups: geom.spec.groups,
            cin_g: geom.cin_g(),
            cout_g: geom.cout_g(),
            ksz,
            flip: false,
            wo: geom.cin_g() * ksz,
            wi: ksz,
        })
    }

    /// The input gradient's layout (`conv_fwd_win` on dy with the flipped, transposed weight,
    /// or `conv_dx_reg` with the transposed one), unless it runs as a matmul or depthwise.
    fn input_grad(geom: &ConvGeom) -> Option<Self> {
        let ksz = geom.kh * geom.kw;
        (!geom.matmul_route() && !geom.depthwise()).then_some(LayoutSpec {
            groups: geom.spec.groups,
            cin_g: geom.cout_g(),
            cout_g: geom.cin_g(),
            ksz,
            flip: dx_fits_win(geom),
            wo: ksz,
            wi: geom.cin_g() * ksz,
        })
    }

    fn words(&self, input: usize, offset: usize) -> [u32; LAYOUT_WORDS] {
        let v = [offset, self.len(), input, self.flip as usize, self.groups, self.cin_g, self.cout_g, self.ksz, self.wo, self.wi];
        v.map(|x| u32::try_from(x).expect("layout entry exceeds u32"))
    }

    fn from_words(w: &[u32]) -> (usize, usize, LayoutSpec) {
        let u = |i: usize| w[i] as usize;
        (u(0), u(2), LayoutSpec { flip: w[3] != 0, groups: u(4), cin_g: u(5), cout_g: u(6), ksz: u(7), wo: u(8), wi: u(9) })
    }

    /// f64 reference of `conv_wt`: the layout of `w` (the stored weight) into `out`.
    fn apply(&self, w: &[f64], out: &mut [f64]) {
        let cp8 = self.cout_g.div_ceil(TC) * TC;
        let kg = self.cin_g * self.ksz;
        for (e, o) in out.iter_mut().enumerate().take(self.len()) {
            let (j, k, g) = (e % cp8, (e / cp8) % kg, e / (cp8 * kg));
            *o = if j < self.cout_g {
                let t = k % self.ksz;
                let tt = if self.flip { self.ksz - 1 - t } else { t };
                w[g * self.cout_g * kg + j * self.wo + (k / self.ksz) * self.wi + tt]
            } else {
                0.0
            };
        }
    }
}

/// The row-window kernel holds (TP-1)*SW + KW inputs in a 16-entry window.
fn fwd_fits_win(geom: &ConvGeom) -> bool {
    (TP - 1) * geom.spec.stride[1] + geom.kw <= 16
}

/// A stride-1 input gradient runs as the forward row-window kernel on dy (padding K-1-p).
fn dx_fits_win(geom: &ConvGeom) -> bool {
    geom.spec.stride == [1, 1] && geom.kh > geom.spec.padding[0] && geom.kw > geom.spec.padding[1] && TP - 1 + geom.kw <= 16
}

/// u32 words per entry of a `conv2d_weights` table.
const LAYOUT_WORDS: usize = 10;
/// Weights one `conv_layouts` dispatch reads (bindings 3..=9).
const LAYOUT_WEIGHTS: usize = 7;

/// The register kernels' weights of several convolutions in `conv_wt`'s layouts, in one
/// dispatch (`conv_layouts`) instead of one `conv_wt` per convolution and pass. Inputs: a
/// constant table of entries (offset, floats, weight input, then [`LayoutSpec`]), the weights.
/// Output: the layouts one after the other. Convolutions read their layout from it at an
/// offset ([`Wt`]). [`layout_of`] adds entries to the graph's last such node while it has room
/// (the node, its table and its output grow), so a network's weights take a few dispatches.
/// Real GPUs' tiled kernels read the stored weights: there it lowers to nothing.
#[derive(Debug)]
struct ConvLayoutsOp;

impl Op for ConvLayoutsOp {
    fn name(&self) -> &'static str {
        "conv2d_weights"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        if tiled(l) {
            return Ok(());
        }
        let total = n.outputs[0].numel();
        let entries = n.inputs[0].numel() / LAYOUT_WORDS;
        let mut binds = vec![Bind::T(n.outputs[0].var), Bind::T(n.inputs[0].var)];
        binds.extend(n.inputs[1..].iter().map(|t| Bind::T(t.var)));
        while binds.len() < 2 + LAYOUT_WEIGHTS {
            let u = l.unused();
            binds.push(u);
        }
        let mut p = Params::new().u(entries).u(total);
        p.0.resize(P_TSPLIT + 1, 0);
        l.dispatch("conv_direct", "conv_layouts", p, &binds, grid_for(total, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let table: Vec<u32> = x[0].data.iter().map(|&v| v as u32).collect();
        let mut out = CpuTensor::zeros(&n.outputs[0].shape);
        for e in table.chunks(LAYOUT_WORDS) {
            let (offset, input, spec) = LayoutSpec::from_words(e);
            spec.apply(&x[1 + input].data, &mut out.data[offset..offset + spec.len()]);
        }
        Ok(vec![out])
    }
}

/// Where a node's register kernel finds its weight in `conv_wt`'s layout: input `input` (a
/// `conv2d_weights` tensor) from float `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wt {
    input: usize,
    offset: usize,
}

/// The layout `spec` of weight `w` in a `conv2d_weights` tensor: appended to the node that
/// already reads `w` (the input gradient's layout next to the forward one), else to the
/// graph's last `conv2d_weights` node when it can read `w` and has room, else in a new one.
/// Returns the tensor and the float offset.
fn layout_of(g: &mut Graph, w: Var, spec: LayoutSpec) -> Result<(Var, usize)> {
    let is_group = |n: &crate::graph::Node| n.op.name() == "conv2d_weights";
    let with_w = g.nodes.iter().rposition(|n| is_group(n) && n.inputs[1..].contains(&w));
    if let Some(j) = with_w.or_else(|| g.nodes.iter().rposition(is_group)) {
        let node = &g.nodes[j];
        let readable = match g.info(w).source {
            Source::Node(p) => p < j,
            _ => true,
        };
        let root = g.root(w);
        let written = g.nodes[j..].iter().any(|n| n.op.writes().iter().any(|&k| g.root(n.inputs[k]) == root));
        let input = node.inputs[1..].iter().position(|&v| v == w);
        if readable && !written && (input.is_some() || node.inputs.len() - 1 < LAYOUT_WEIGHTS) {
            let (table, out) = (node.inputs[0], node.outputs[0]);
            let input = match input {
                Some(i) => i,
                None => {
                    g.nodes[j].inputs.push(w);
                    g.nodes[j].inputs.len() - 2
                }
            };
            let offset = g.numel(out);
            let Source::Const(words) = &g.info(table).source else { unreachable!("conv2d_weights tables are constants") };
            let mut words = words.as_ref().clone();
            words.extend(spec.words(input, offset));
            let t = &mut g.tensors[table.index()];
            t.shape = vec![words.len()];
            t.source = Source::Const(Arc::new(words));
            g.tensors[out.index()].shape = vec![offset + spec.len()];
            return Ok((out, offset));
        }
    }
    let table = g.constant_u32(&[LAYOUT_WORDS], &spec.words(0, 0))?;
    let out = g.add_node(Arc::new(ConvLayoutsOp), &[table, w], &[(vec![spec.len()], DType::F32)])?[0];
    Ok((out, 0))
}

/// `conv_wt`: the weight of the GEMM `geom` runs as [groups][cin_g*KH*KW][cout_g padded to 8]
/// in scratch. Weight (out channel, in channel, tap) is at out * wo + in * wi + tap of each
/// group's block of the stored weight, taps reversed with `flip` = 4.
fn transpose_weight(l: &mut Lowering, geom: &ConvGeom, w: Var, flip: usize, wo: usize, wi: usize) -> Bind {
    let cp8 = geom.cout_g().div_ceil(TC) * TC;
    let len = geom.spec.groups * geom.cin_g() * geom.kh * geom.kw * cp8;
    let wt = l.scratch(len, "conv2d weight, transposed");
    let mut p = geom.params(flip, 0, 1, 1, 1, 0);
    p.0[P_WO] = wo as u32;
    p.0[P_WI] = wi as u32;
    let unused = l.unused();
    l.dispatch("conv_direct", "conv_wt", p, &[Bind::T(w), unused, wt], grid_for(len, 256));
    wt
}

/// The re-laid-out weight (binding, vec4 offset) of GEMM `geom` for a register kernel: from
/// the node's `conv2d_weights` input, else by a `conv_wt` dispatch into scratch now.
#[allow(clippy::too_many_arguments)]
fn weight_layout(
    l: &mut Lowering,
    n: &NodeRef,
    wt: Option<Wt>,
    geom: &ConvGeom,
    w: Var,
    flip: usize,
    wo: usize,
    wi: usize,
) -> (Bind, usize) {
    match wt {
        Some(t) => (Bind::T(n.inputs[t.input].var), t.offset / 4),
        None => (transpose_weight(l, geom, w, flip, wo, wi), 0),
    }
}

/// A split weight gradient whose partial sums an input-gradient dispatch adds up in a z layer
/// of extra workgroups (`split_tail` in the shader; conv2d_backward).
#[derive(Clone, Copy, Debug)]
struct Tail {
    parts: Bind,
    dw: Bind,
    split: usize,
    len: usize,
}

/// Bindings 5 and 6 of an input-gradient kernel and the tail's parameters (placeholders and
/// none without one); a tail adds a z layer to `groups`.
fn add_tail(l: &mut Lowering, p: &mut Params, binds: &mut Vec<Bind>, groups: &mut [u32; 3], tail: Option<Tail>) {
    match tail {
        Some(t) => {
            p.0[P_TZ] = groups[2];
            p.0[P_TLEN] = t.len as u32;
            p.0[P_TSPLIT] = t.split as u32;
            groups[2] += 1;
            binds.extend([t.parts, t.dw]);
        }
        None => {
            let (a, b) = (l.unused(), l.unused());
            binds.extend([a, b]);
        }
    }
}

/// Run `geom` (a forward convolution, or the transposed one of an input gradient) with the
/// row-window kernel on the re-laid-out weight `wt`. `extra`: the bias (flags bit 0) or the
/// addend of an input gradient (flags bit 3), else a placeholder.
#[allow(clippy::too_many_arguments)]
fn dispatch_win(l: &mut Lowering, geom: &ConvGeom, x: Var, wt: (Bind, usize), y: Var, extra: Bind, flags: usize, tail: Option<Tail>) {
    let blocks = geom.ow.div_ceil(TP);
    let pix = geom.n * geom.oh * blocks;
    // The flip (bit 2) is in the layout already.
    let mut p = geom.params(flags & (1 | 8), blocks, 1, 1, 1, 0);
    p.0[P_WOFF] = wt.1 as u32;
    let cb = geom.spec.groups * geom.cout_g().div_ceil(TC);
    let mut groups = [pix.div_ceil(64) as u32, cb as u32, 1];
    let mut binds = vec![Bind::T(x), wt.0, Bind::T(y), extra];
    add_tail(l, &mut p, &mut binds, &mut groups, tail);
    let key = KernelKey::new("conv_direct", "conv_fwd_win").constant("KW", geom.kw as u32).constant("SW", geom.spec.stride[1] as u32);
    l.dispatch_key(key, p, &binds, groups);
}

/// The vec4 depthwise kernel: the weight padded (flipped with flags bit 2) to [C][KH][8] in
/// scratch, then 8 pixels per thread. `extra`: the bias (flags bit 0) or the addend of an
/// input gradient (flags bit 3).
#[allow(clippy::too_many_arguments)]
fn dispatch_dwc_v4(l: &mut Lowering, geom: &ConvGeom, x: Var, w: Var, y: Var, extra: Bind, flags: usize, tail: Option<Tail>) {
    let len = geom.cout * geom.kh * 8;
    let wt = l.scratch(len, "depthwise weight, padded");
    let unused = l.unused();
    l.dispatch("conv_depthwise", "dwc_wt", geom.params(flags & 4, 0, 1, 1, 1, 0), &[Bind::T(w), unused, wt], grid_for(len, 256));
    let blocks = geom.ow.div_ceil(8);
    let mut p = geom.params(flags & (1 | 8), blocks, 1, 1, 1, 0);
    let mut groups = grid_for(geom.n * geom.cout * geom.oh * blocks, 64);
    let mut binds = vec![Bind::T(x), wt, Bind::T(y), extra];
    add_tail(l, &mut p, &mut binds, &mut groups, tail);
    let key = KernelKey::new("conv_depthwise", "dwc_fwd_v4").constant("KW", geom.kw as u32);
    l.dispatch_key(key, p, &binds, groups);
}

/// Threads the weight-gradient reduction should keep busy.
fn dw_target(l: &Lowering) -> usize {
    if tiled(l) { 1 << 16 } else { 2048 }
}

fn desc(var: Var, shape: Vec<usize>) -> TensorDesc {
    TensorDesc { var, shape, dtype: DType::F32 }
}

/// Whether `v` depends on a trainable parameter (then its gradient is wanted in training).
fn from_params(g: &Graph, v: Var) -> bool {
    let mut stack = vec![v];
    let mut seen = std::collections::HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        match g.info(t).source {
            Source::Param(_) => return true,
            Source::Node(p) => stack.extend(g.nodes[p].inputs.iter().copied()),
            _ => {}
        }
    }
    false
}

/// y = conv(x, w) (+ bias): inputs x, w, [bias], [conv2d_weights tensor with the register
/// kernel's layout of w at `wt`].
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    spec: Conv2dSpec,
    bias: bool,
    wt: Option<usize>,
}

impl Op for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dy) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let (x, w) = (&n.inputs[0], &n.inputs[1]);
        let geom = ConvGeom::new(&x.shape, &w.shape, self.spec)?;
        // The register kernels' layout of the input gradient, next to the forward one.
        let (layout, wt) = match LayoutSpec::input_grad(&geom) {
            Some(spec) => {
                let (t, offset) = layout_of(g, w.var, spec)?;
                (Some(t), Some(offset))
            }
            None => (None, None),
        };
        let (dx, dw) = if from_params(g, x.var) {
            // Both gradients from one node: the weight gradient's split partial sums are added
            // by the input gradient's dispatch (two dispatches, not three).
            let mut ins = vec![dy, w.var, x.var];
            ins.extend(layout);
            let op = ConvBackOp { geom, wt: wt.map(|offset| Wt { input: 3, offset }), addend: false };
            let r = g.add_node(Arc::new(op), &ins, &[(x.shape.clone(), DType::F32), (w.shape.clone(), DType::F32)])?;
            (r[0], r[1])
        } else {
            // An input (a test's, or data): the input gradient on its own, so that it is not
            // run when nothing reads it.
            let mut ins = vec![dy, w.var];
            ins.extend(layout);
            let op = ConvDxOp { geom, addend: false, wt: wt.map(|offset| Wt { input: 2, offset }) };
            let dx = g.push(op, &ins, x.shape.clone(), DType::F32)?;
            (dx, g.push(ConvDwOp { geom }, &[x.var, dy], w.shape.clone(), DType::F32)?)
        };
        let mut out = vec![None; n.inputs.len()];
        out[0] = Some(dx);
        out[1] = Some(dw);
        if self.bias {
            out[2] = Some(g.sum(dy, &[0, 2, 3], false)?);
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
            dispatch_dwc_v4(l, &geom, x, w, y, bias, flags, None);
        } else if geom.depthwise() {
            let blocks = geom.ow.div_ceil(TP);
            let p = geom.params(flags, blocks, 1, 1, 1, 0);
            l.dispatch("conv_depthwise", "dwc_fwd", p, &binds, grid_for(geom.n * geom.cout * geom.oh * blocks, 64));
        } else if tiled(l) {
            let (rows, cols) = (geom.n * geom.oh * geom.ow, geom.cout_g());
            let mut p = geom.params(flags, cols, 1, 1, 1, 0);
            let mut groups = [cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, geom.spec.groups as u32];
            let mut binds = binds.to_vec();
            add_tail(l, &mut p, &mut binds, &mut groups, None);
            l.dispatch("conv_tiled", "conv_tiled", p, &binds, groups);
        } else if fwd_fits_win(&geom) {
            let kg = geom.cin_g() * geom.kh * geom.kw;
            let wt = self.wt.map(|offset| Wt { input: n.inputs.len() - 1, offset });
            let wt = weight_layout(l, n, wt, &geom, w, 0, kg, geom.kh * geom.kw);
            dispatch_win(l, &geom, x, wt, y, bias, flags, None);
        } else {
            let blocks = geom.ow.div_ceil(TP);
            let pix = geom.n * geom.oh * blocks;
            let p = geom.params(flags, blocks, 1, 1, 1, 0);
            let cb = geom.spec.groups * geom.cout_g().div_ceil(TC);
            l.dispatch("conv_direct", "conv_fwd_reg", p, &binds, [pix.div_ceil(64) as u32, cb as u32, 1]);
        }
        Ok(())
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<BatchSplit> {
        // Rows of x and y; the weight, bias and weight layouts whole (the geometry comes from
        // the shapes).
        Some(BatchSplit::rows(n).whole(&[1, 2, 3]))
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

/// The input gradient's dispatch: `dx = conv_transpose(dy, w) (+ addend)` by the kernel the
/// geometry and adapter call for, plus the tail that finishes a split weight gradient.
#[allow(clippy::too_many_arguments)]
fn lower_dx(
    l: &mut Lowering,
    n: &NodeRef,
    geom: &ConvGeom,
    (dy, w, dx): (Var, Var, Var),
    wt: Option<Wt>,
    addend: Option<Var>,
    tail: Option<Tail>,
) -> Result<()> {
    // The addend rides in binding 4 (flags bit 3); a placeholder without one.
    let add = match addend {
        Some(a) => Bind::T(a),
        None => l.unused(),
    };
    let fl = if addend.is_some() { 8 } else { 0 };
    let (sh, sw) = (geom.spec.stride[0], geom.spec.stride[1]);
    if geom.matmul_route() {
        // dx[n] = W^T [Cin, Cout] @ dy[n] [Cout, H*W] (+ addend, the matmul's own epilogue).
        let hw = geom.h * geom.w;
        let mut inputs = vec![desc(w, vec![geom.cout, geom.cin]), desc(dy, vec![geom.n, geom.cout, hw])];
        inputs.extend(addend.map(|a| desc(a, vec![geom.n, geom.cin, hw])));
        let mm = NodeRef { index: n.index, inputs, outputs: vec![desc(dx, vec![geom.n, geom.cin, hw])] };
        let op = MatmulOp { ta: true, tb: false, bias: false };
        match addend {
            None => op.lower(&mm, l)?,
            Some(_) => op.with_addend().ok_or_else(|| Error::usage("conv2d_dx: the matmul has no addend form"))?.lower(&mm, l)?,
        }
        if let Some(t) = tail {
            // No tail workgroups in a matmul: the partial sums get their own dispatch.
            let p = geom.params(0, 0, t.split, t.len, 1, 0);
            let unused = l.unused();
            l.dispatch("conv_direct", "conv_sum_split", p, &[t.parts, unused, t.dw], grid_for(t.len, 256));
        }
        return Ok(());
    }
    // Input pixels grouped by stride phase: qh rows per phase, blocks of TP per row.
    let qh = geom.h.div_ceil(sh);
    let blocks = geom.w.div_ceil(sw).div_ceil(TP);
    let mut binds = vec![Bind::T(dy), Bind::T(w), Bind::T(dx), add];
    if geom.dwc_v4() {
        // A stride-1 depthwise input gradient is the depthwise convolution of dy with the
        // flipped kernel and padding K-1-p.
        dispatch_dwc_v4(l, &geom.transposed(), dy, w, dx, add, 4 | fl, tail);
    } else if geom.depthwise() {
        let mut p = geom.params(fl, blocks, 1, 1, qh, 0);
        let mut groups = grid_for(sh * sw * geom.n * geom.cin * qh * blocks, 64);
        add_tail(l, &mut p, &mut binds, &mut groups, tail);
        l.dispatch("conv_depthwise", "dwc_dx", p, &binds, groups);
    } else if tiled(l) {
        let (rows, cols) = (geom.n * geom.h * geom.w, geom.cin_g());
        let mut p = geom.params(fl, cols, 1, 1, qh, 1);
        let mut groups = [cols.div_ceil(64) as u32, rows.div_ceil(64) as u32, geom.spec.groups as u32];
        add_tail(l, &mut p, &mut binds, &mut groups, tail);
        l.dispatch("conv_tiled", "conv_tiled", p, &binds, groups);
    } else if dx_fits_win(geom) {
        // A stride-1 input gradient is a forward convolution of dy with the flipped,
        // transposed weight: weight (out = ci, in = co, tap) of the stored [Cout, Cin_g, KH, KW].
        let ksz = geom.kh * geom.kw;
        let t = geom.transposed();
        let wl = weight_layout(l, n, wt, &t, w, 4, ksz, geom.cin_g() * ksz);
        dispatch_win(l, &t, dy, wl, dx, add, 4 | fl, tail);
    } else {
        // The weight transposed to [groups][(co, ky, kx)][ci padded to 8] (taps not flipped).
        let ksz = geom.kh * geom.kw;
        let (wl, woff) = weight_layout(l, n, wt, &geom.transposed(), w, 0, ksz, geom.cin_g() * ksz);
        let mut p = geom.params(fl, blocks, 1, 1, qh, 0);
        p.0[P_WOFF] = woff as u32;
        let pix = sh * sw * geom.n * qh * blocks;
        let cb = geom.spec.groups * geom.cin_g().div_ceil(TC);
        let mut groups = [pix.div_ceil(64) as u32, cb as u32, 1];
        binds[1] = wl;
        add_tail(l, &mut p, &mut binds, &mut groups, tail);
        l.dispatch("conv_direct", "conv_dx_reg", p, &binds, groups);
    }
    Ok(())
}

/// The weight gradient's dispatch(es) into `dw`. With `fuse_sum`, a split reduction leaves its
/// partial sums in scratch and returns them for the input gradient's dispatch to add up;
/// otherwise `conv_sum_split` adds them.
fn lower_dw(l: &mut Lowering, geom: &ConvGeom, x: Var, dy: Var, dw: Var, fuse_sum: bool) -> Option<Tail> {
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
    // The reduction runs in chunks of (n, oh) rows (of pixel quads for conv_dw_pw) so that
    // about `target` threads work at once; their partial sums must fit one storage binding
    // (a small GPU's, or the lowered limit batch splitting works under).
    let units = if kind == "conv_dw_pw" { geom.n * geom.h * geom.w / 4 } else { geom.n * geom.oh };
    let fit = (l.ctx.max_binding() / (4 * len as u64)).max(1) as usize;
    let per = units.div_ceil(target.div_ceil(base.max(1)).clamp(1, units).min(fit));
    let (split, rows) = (units.div_ceil(per), per);
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
    let mut p = geom.params(0, 0, split, rows, 1, 2);
    let mut key = KernelKey::new(shader, kind);
    if kind == "conv_dw_v4" || kind == "dwc_dw_v4" {
        key = key.constant("KW", geom.kw as u32);
    }
    // conv_tiled declares the bias and tail bindings for every mode: placeholders there.
    let unused = l.unused();
    let mut binds = vec![Bind::T(x), Bind::T(dy), out, unused];
    if kind == "conv_tiled" {
        let mut g = wg;
        add_tail(l, &mut p, &mut binds, &mut g, None);
    }
    l.dispatch_key(key, p, &binds, wg);
    if split == 1 {
        return None;
    }
    let tail = Tail { parts: out, dw: Bind::T(dw), split, len };
    if fuse_sum {
        return Some(tail);
    }
    let p = geom.params(0, 0, split, len, 1, 0);
    l.dispatch("conv_direct", "conv_sum_split", p, &[out, Bind::T(dy), Bind::T(dw)], grid_for(len, 256));
    None
}

/// dx = conv_transpose(dy, w) (+ addend): inputs dy, w, [conv2d_weights tensor at `wt`],
/// [addend with dx's elements]. With the addend the op is a gradient sum (autodiff's
/// `add_into`) folded into the store.
#[derive(Debug, Clone, Copy)]
struct ConvDxOp {
    geom: ConvGeom,
    addend: bool,
    wt: Option<Wt>,
}

impl Op for ConvDxOp {
    fn name(&self) -> &'static str {
        "conv2d_dx"
    }
    fn flops(&self, _n: &NodeRef) -> u64 {
        2 * self.geom.macs()
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        // Linear in dy and w: d(dy) = conv(ddx, w), d(w) = the correlation of ddx with dy; the
        // addend's gradient is the output's.
        let Some(ddx) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let geom = self.geom;
        let ddy = g.push(ConvOp { spec: geom.spec, bias: false, wt: None }, &[ddx, n.inputs[1].var], geom.y_shape(), DType::F32)?;
        let dw = g.push(ConvDwOp { geom }, &[ddx, n.inputs[0].var], geom.w_shape(), DType::F32)?;
        let mut out = vec![None; n.inputs.len()];
        out[0] = Some(ddy);
        out[1] = Some(dw);
        if self.addend {
            let a = &n.inputs[n.inputs.len() - 1];
            out[n.inputs.len() - 1] = Some(if a.shape == geom.x_shape() { ddx } else { g.reshape(ddx, &a.shape)? });
        }
        Ok(out)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let io = (n.inputs[0].var, n.inputs[1].var, n.outputs[0].var);
        let addend = self.addend.then(|| n.inputs[n.inputs.len() - 1].var);
        lower_dx(l, n, &self.geom, io, self.wt, addend, None)
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut dx = conv2d_dx_cpu(x[0], x[1], &self.geom);
        if self.addend {
            for (v, a) in dx.data.iter_mut().zip(&x[x.len() - 1].data) {
                *v += a;
            }
        }
        Ok(vec![dx])
    }
    fn batch_split(&self, n: &NodeRef, parts: usize) -> Option<BatchSplit> {
        // Rows of dy, dx and the addend; the weight and its layouts whole. The geometry is a
        // field: each slice runs the op for its share of the batch.
        let geom = ConvGeom { n: self.geom.n / parts, ..self.geom };
        let whole: Vec<usize> = (1..n.inputs.len() - self.addend as usize).collect();
        Some(BatchSplit::rows(n).whole(&whole).op(ConvDxOp { geom, ..*self }))
    }
    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        (!self.addend).then(|| Arc::new(ConvDxOp { addend: true, ..*self }) as Arc<dyn Op>)
    }
}

/// Both gradients of a convolution from one node: inputs dy, w, x, [conv2d_weights tensor at
/// `wt`], [addend of dx]; outputs dx (+ addend), dw. Two dispatches: the weight gradient
/// (its split partial sums in scratch), then the input gradient, whose extra workgroups add
/// the partial sums up (no `conv_sum_split` pass).
#[derive(Debug, Clone, Copy)]
struct ConvBackOp {
    geom: ConvGeom,
    wt: Option<Wt>,
    addend: bool,
}

impl Op for ConvBackOp {
    fn name(&self) -> &'static str {
        "conv2d_backward"
    }
    fn flops(&self, _n: &NodeRef) -> u64 {
        4 * self.geom.macs()
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (dy, w, x) = (n.inputs[0].var, n.inputs[1].var, n.inputs[2].var);
        let (dx, dw) = (n.outputs[0].var, n.outputs[1].var);
        let tail = lower_dw(l, &self.geom, x, dy, dw, true);
        let addend = self.addend.then(|| n.inputs[n.inputs.len() - 1].var);
        lower_dx(l, n, &self.geom, (dy, w, dx), self.wt, addend, tail)
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut dx = conv2d_dx_cpu(x[0], x[1], &self.geom);
        if self.addend {
            for (v, a) in dx.data.iter_mut().zip(&x[x.len() - 1].data) {
                *v += a;
            }
        }
        Ok(vec![dx, conv2d_dw_cpu(x[2], x[0], &self.geom)])
    }
    fn batch_split(&self, n: &NodeRef, parts: usize) -> Option<BatchSplit> {
        // Rows of dy, x, dx and the addend; the weight and its layouts whole; dw summed.
        let geom = ConvGeom { n: self.geom.n / parts, ..self.geom };
        let mut split = BatchSplit::rows(n).whole(&[1]).sum(&[1]);
        if self.wt.is_some() {
            split = split.whole(&[3]);
        }
        Some(split.op(ConvBackOp { geom, ..*self }))
    }
    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        (!self.addend).then(|| Arc::new(ConvBackOp { addend: true, ..*self }) as Arc<dyn Op>)
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
        lower_dw(l, &self.geom, n.inputs[0].var, n.inputs[1].var, n.outputs[0].var, false);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![conv2d_dw_cpu(x[0], x[1], &self.geom)])
    }
    fn batch_split(&self, n: &NodeRef, parts: usize) -> Option<BatchSplit> {
        // Rows of x and dy; each slice's weight gradient is a partial sum.
        let geom = ConvGeom { n: self.geom.n / parts, ..self.geom };
        Some(BatchSplit::rows(n).sum(&[0]).op(ConvDwOp { geom }))
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
        // The register kernel's layout of the weight, re-laid out with other convolutions'.
        let wt = match LayoutSpec::forward(&geom, bias.is_some()) {
            Some(l) => {
                let (t, offset) = layout_of(self, w, l)?;
                inputs.push(t);
                Some(offset)
            }
            None => None,
        };
        let op = ConvOp { spec, bias: bias.is_some(), wt };
        Ok(self.add_node(Arc::new(op), &inputs, &[(geom.y_shape(), DType::F32)])?[0])
    }

    /// The input gradient of a convolution on its own: `dy` [N, Cout, OH, OW] with weight `w`
    /// back to an input of shape `x_shape` (benchmarks; autodiff adds it by itself).
    pub fn conv2d_input_grad(&mut self, dy: Var, w: Var, x_shape: &[usize], spec: Conv2dSpec) -> Result<Var> {
        let geom = ConvGeom::new(x_shape, self.shape(w), spec)?;
        if self.shape(dy) != geom.y_shape() {
            return Err(Error::shape("conv2d_dx", format!("dy has shape {:?}, expected {:?}", self.shape(dy), geom.y_shape())));
        }
        self.push(ConvDxOp { geom, addend: false, wt: None }, &[dy, w], geom.x_shape(), DType::F32)
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
