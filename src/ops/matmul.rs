//! Batched matrix multiply with either operand transposed and a fused bias; the backbone of
//! linear layers, attention and (later) implicit-GEMM convolution. Kernels in
//! `shaders/matmul.wgsl`; the variant is chosen per adapter.
//!
//! Fewer, fatter dispatches: the elementwise work around a matmul runs in its store epilogue
//! (`Epilogue`: a residual or gradient sum, an activation and its gradient, the bias
//! gradient as row sums), and a linear layer's backward (dX, dW, db) is one dispatch over two
//! problems (`LinearGradOp`). The graph helpers in `elementwise.rs` (`Graph::add_into`,
//! `Graph::unary`, `Graph::unary_grad`) ask for the fused variants, so model code is unchanged.

use super::Unary;
use crate::error::{Error, Result};
use crate::gpu::MatmulVariant;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Source, Var};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulOp {
    /// A is stored [.., K, M] and used transposed.
    pub ta: bool,
    /// B is stored [.., N, K] and used transposed.
    pub tb: bool,
    /// A third input `bias[N]` is added to every row.
    pub bias: bool,
}

/// What a matmul's dispatch does to each element `r = (op(A) op(B))[i] (+ bias)` before and
/// after storing it: `c = r * u'(aux[i]) + addend[i]`, then `y = act(c)`. Extra inputs come
/// after the bias in that order (aux, addend), extra outputs after C (y, row sums).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Epilogue {
    /// Times `u'(aux[i])`: the gradient of a unary map (`Op::with_unary_grad`).
    dact: Option<Unary>,
    /// Plus `addend[i]` (`Op::with_addend`): residuals, gradient sums.
    addend: bool,
    /// Also write `act(c)` as an output (`Op::with_unary`): fc1 and its GELU.
    act: Option<Unary>,
    /// Also write the row sums of op(A) as an output: with A = dY^T, the bias gradient of the
    /// layer whose weight gradient this matmul is.
    rowsum: bool,
}

/// Unary maps the matmul epilogue implements (`mm_act`/`mm_dact` in the shader).
fn epilogue_unary(u: Unary) -> bool {
    matches!(u, Unary::Relu | Unary::Gelu)
}

impl Epilogue {
    fn plain(&self) -> bool {
        *self == Epilogue::default()
    }
    /// The variant of `mm` with this epilogue as an op.
    fn op(self, mm: MatmulOp) -> Option<Arc<dyn Op>> {
        Some(Arc::new(FusedMatmulOp { mm, epi: self }))
    }
    fn with_addend(self, mm: MatmulOp) -> Option<Arc<dyn Op>> {
        (!self.addend && self.act.is_none() && !self.rowsum).then_some(())?;
        Epilogue { addend: true, ..self }.op(mm)
    }
    fn with_unary(self, mm: MatmulOp, u: Unary) -> Option<Arc<dyn Op>> {
        (epilogue_unary(u) && self.act.is_none() && self.dact.is_none() && !self.rowsum).then_some(())?;
        Epilogue { act: Some(u), ..self }.op(mm)
    }
    fn with_unary_grad(self, mm: MatmulOp, u: Unary) -> Option<Arc<dyn Op>> {
        (epilogue_unary(u) && self.plain()).then_some(())?;
        Epilogue { dact: Some(u), ..self }.op(mm)
    }
}

/// A matmul with an epilogue (see [`Epilogue`]); one dispatch like the plain one.
#[derive(Debug, Clone, Copy)]
struct FusedMatmulOp {
    mm: MatmulOp,
    epi: Epilogue,
}

/// Sizes of one matmul node, derived from its input shapes.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    batch_a: usize,
    batch_b: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl MatmulOp {
    fn dims(&self, a: &[usize], b: &[usize]) -> Dims {
        let (ra, rb) = (a.len(), b.len());
        let (m, k) = if self.ta { (a[ra - 1], a[ra - 2]) } else { (a[ra - 2], a[ra - 1]) };
        let n = if self.tb { b[rb - 2] } else { b[rb - 1] };
        let batch_a: usize = a[..ra - 2].iter().product();
        let batch_b: usize = b[..rb - 2].iter().product();
        Dims { batch: batch_a.max(batch_b), batch_a, batch_b, m, n, k }
    }

    /// Gradients of A, B (and the bias) given dC.
    fn grads(&self, g: &mut Graph, n: &NodeRef, dc: Var) -> Result<Vec<Option<Var>>> {
        let (a, b) = (n.inputs[0].var, n.inputs[1].var);
        let (sa, sb) = (n.inputs[0].shape.clone(), n.inputs[1].shape.clone());
        // C = op(A) op(B). dA = dC op(B)^T (transposed back if A was), dB likewise. A linear
        // layer's weight gradient dC^T A also sums dC's columns: the bias gradient, from the
        // same dispatch.
        if self.tb && !self.ta && sa.len() == 2 && sb.len() == 2 {
            // A linear layer: dX, dW and the bias gradient from one dispatch.
            let mut outs = vec![(sa.clone(), DType::F32), (sb.clone(), DType::F32)];
            if self.bias {
                outs.push((n.inputs[2].shape.clone(), DType::F32));
            }
            let op = LinearGradOp { bias: self.bias, epi: Epilogue::default(), dx: true };
            let v = g.add_node(Arc::new(op), &[dc, b, a], &outs)?;
            return Ok(v.into_iter().map(Some).collect());
        }
        let fuse_bias = self.bias && self.tb && sa.len() == 2 && sb.len() == 2;
        let (db, dbias) = if fuse_bias {
            let (db, dbias) = g.matmul_rowsum(dc, a, self.ta)?;
            (db, Some(dbias))
        } else if self.tb {
            (g.matmul_ex(dc, a, true, self.ta, None)?, None)
        } else {
            (g.matmul_ex(a, dc, !self.ta, false, None)?, None)
        };
        let da = if self.ta { g.matmul_ex(b, dc, self.tb, true, None)? } else { g.matmul_ex(dc, b, false, !self.tb, None)? };
        // Broadcast batches get their gradients summed.
        let mut out = vec![Some(g.sum_to(da, &sa)?), Some(g.sum_to(db, &sb)?)];
        if self.bias {
            out.push(Some(match dbias {
                Some(v) => v,
                None => g.sum_to(dc, &n.inputs[2].shape)?,
            }));
        }
        Ok(out)
    }

    fn flops_of(&self, n: &NodeRef) -> u64 {
        let d = self.dims(&n.inputs[0].shape, &n.inputs[1].shape);
        2 * (d.batch * d.m * d.n * d.k) as u64
    }

    /// The uniform block of one matmul (`MmP` in the shader).
    fn params(&self, epi: &Epilogue, d: &Dims) -> Params {
        let (ars, acs) = if self.ta { (1, d.m) } else { (d.k, 1) };
        let (brs, bcs) = if self.tb { (1, d.k) } else { (d.n, 1) };
        let sab = if d.batch_a == 1 { 0 } else { d.m * d.k };
        let sbb = if d.batch_b == 1 { 0 } else { d.k * d.n };
        // Flags as `mm_store` reads them, then the layouts for matmul_wide.wgsl.
        let flags = self.bias as usize
            | (epi.dact.is_some() as usize) << 2
            | (epi.addend as usize) << 3
            | (epi.act.is_some() as usize) << 4
            | (epi.rowsum as usize) << 5
            | (self.ta as usize) << 6
            | (self.tb as usize) << 7;
        let code = |u: Option<Unary>| u.map_or(0, |u| u.code().0 as usize);
        Params::new()
            .u(d.m)
            .u(d.n)
            .u(d.k)
            .u(d.batch)
            .u(sab)
            .u(sbb)
            .u(d.m * d.n)
            .u(flags)
            .u(ars)
            .u(acs)
            .u(brs)
            .u(bcs)
            .u(code(epi.act))
            .u(code(epi.dact))
            .u(0)
            .u(0)
    }

    /// Whether the vec4 kernel can run this matmul: 4-element vectors along K, along M when
    /// A is transposed, and along N when B is not.
    fn vec4(&self, d: &Dims) -> bool {
        d.k % 4 == 0 && (!self.ta || d.m % 4 == 0) && (self.tb || d.n % 4 == 0) && d.m >= 4 && d.n >= 4
    }

    fn lower_with(&self, epi: &Epilogue, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (sa, sb) = (&n.inputs[0].shape, &n.inputs[1].shape);
        let d = self.dims(sa, sb);
        let p = self.params(epi, &d);
        let mut input = 2;
        let mut take = |on: bool, l: &mut Lowering| {
            if on {
                input += 1;
                Bind::T(n.inputs[input - 1].var)
            } else {
                l.unused()
            }
        };
        let bias = take(self.bias, l);
        let aux = take(epi.dact.is_some(), l);
        let addend = take(epi.addend, l);
        let mut output = 1;
        let mut put = |on: bool, l: &mut Lowering| {
            if on {
                output += 1;
                Bind::T(n.outputs[output - 1].var)
            } else {
                l.unused()
            }
        };
        let act = put(epi.act.is_some(), l);
        let rowsum = put(epi.rowsum, l);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var), bias, aux, addend, act, rowsum];
        let tiles = if self.vec4(&d) { "mm_tiles_v4" } else { "mm_tiles" };
        let (shader, entry, tile) = match l.profile().matmul {
            MatmulVariant::Register if self.vec4(&d) => ("matmul", "mm_register_v4", 64),
            MatmulVariant::Register | MatmulVariant::RegisterScalar => ("matmul", "mm_register", 32),
            v if self.wide(v, &d) => (if l.profile().wide_bk == 16 { "matmul_wide16" } else { "matmul_wide8" }, tiles, 128),
            _ => ("matmul_tile64", tiles, 64),
        };
        let groups = [d.n.div_ceil(tile) as u32, d.m.div_ceil(tile) as u32, d.batch as u32];
        l.dispatch(shader, entry, p, &binds, groups);
        Ok(())
    }

    /// Whether a tiled variant takes the 128x128 tiles (`shaders/matmul_wide.wgsl`) for this
    /// matmul: always or never when forced, else when they are enough to fill a GPU.
    fn wide(&self, v: MatmulVariant, d: &Dims) -> bool {
        match v {
            MatmulVariant::TiledWide => true,
            MatmulVariant::Tiled => d.n.div_ceil(128) * d.m.div_ceil(128) * d.batch >= crate::gpu::WIDE_MIN_GROUPS,
            _ => false,
        }
    }

    fn cpu_with(&self, epi: &Epilogue, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let d = self.dims(&x[0].shape, &x[1].shape);
        let mut out = CpuTensor::zeros(&n.outputs[0].shape);
        for bt in 0..d.batch {
            let ab = if d.batch_a == 1 { 0 } else { bt * d.m * d.k };
            let bb = if d.batch_b == 1 { 0 } else { bt * d.k * d.n };
            for i in 0..d.m {
                for j in 0..d.n {
                    let mut acc = 0.0;
                    for kk in 0..d.k {
                        let av = if self.ta { x[0].data[ab + kk * d.m + i] } else { x[0].data[ab + i * d.k + kk] };
                        let bv = if self.tb { x[1].data[bb + j * d.k + kk] } else { x[1].data[bb + kk * d.n + j] };
                        acc += av * bv;
                    }
                    if self.bias {
                        acc += x[2].data[j];
                    }
                    out.data[bt * d.m * d.n + i * d.n + j] = acc;
                }
            }
        }
        let mut input = 2 + self.bias as usize;
        if let Some(u) = epi.dact {
            let aux = x[input];
            input += 1;
            for (o, &h) in out.data.iter_mut().zip(&aux.data) {
                *o *= unary_grad_cpu(u, h);
            }
        }
        if epi.addend {
            for (o, &v) in out.data.iter_mut().zip(&x[input].data) {
                *o += v;
            }
        }
        let mut outs = vec![];
        if let Some(u) = epi.act {
            outs.push(out.map(|v| u.eval(v)));
        }
        if epi.rowsum {
            let mut rs = CpuTensor::zeros(&[d.m]);
            for i in 0..d.m {
                rs.data[i] = (0..d.k).map(|kk| if self.ta { x[0].data[kk * d.m + i] } else { x[0].data[i * d.k + kk] }).sum();
            }
            outs.push(rs);
        }
        outs.insert(0, out);
        Ok(outs)
    }
}

/// f64 derivative of the unary maps the epilogue implements.
fn unary_grad_cpu(u: Unary, x: f64) -> f64 {
    match u {
        Unary::Relu => (x > 0.0) as u8 as f64,
        Unary::Gelu => {
            let cdf = 0.5 * (1.0 + super::elementwise::erf64(x / std::f64::consts::SQRT_2));
            cdf + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        _ => f64::NAN,
    }
}

impl Op for MatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dc) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        self.grads(g, n, dc)
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        self.flops_of(n)
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        self.lower_with(&Epilogue::default(), n, l)
    }

    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        self.cpu_with(&Epilogue::default(), n, x)
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        self.split_roles(n, &Epilogue::default())
    }

    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        Epilogue::default().with_addend(*self)
    }

    fn with_unary(&self, u: Unary) -> Option<Arc<dyn Op>> {
        Epilogue::default().with_unary(*self, u)
    }

    fn with_unary_grad(&self, u: Unary) -> Option<Arc<dyn Op>> {
        Epilogue::default().with_unary_grad(*self, u)
    }
}

impl MatmulOp {
    /// A batch of matrices: its batch axis is cut in C and in each operand that has it (an
    /// operand broadcast over the batch is shared). 2-D: the rows of A and C are cut (B is
    /// shared), or, for A^T B, the K rows both operands share, with C a sum over the slices.
    /// Epilogue tensors follow C: cut like it (aux, addend, the activation), or, for the row
    /// sums of A^T, summed like it; an epilogue that does not commute with summing slices of C
    /// refuses the split.
    fn split_roles(&self, n: &NodeRef, epi: &Epilogue) -> Option<crate::graph::BatchSplit> {
        use crate::graph::lower::SplitRole;
        let (a, b, c) = (&n.inputs[0].shape, &n.inputs[1].shape, &n.outputs[0].shape);
        let d = self.dims(a, b);
        let mut split = crate::graph::BatchSplit::rows(n);
        if self.bias {
            split.inputs[2] = SplitRole::Whole;
        }
        if c.len() > 2 {
            let cut = |s: &[usize], batch: usize| batch == 1 || (s.len() == c.len() && s[0] == c[0]);
            if !cut(a, d.batch_a) || !cut(b, d.batch_b) || epi.rowsum {
                return None;
            }
            for (i, bt) in [d.batch_a, d.batch_b].into_iter().enumerate() {
                if bt == 1 {
                    split.inputs[i] = SplitRole::Whole;
                }
            }
            return Some(split);
        }
        match (self.ta, self.tb) {
            (false, _) => {
                split.inputs[1] = SplitRole::Whole;
                Some(split)
            }
            (true, false) if !self.bias && epi.dact.is_none() && !epi.addend && epi.act.is_none() => {
                split.outputs.iter_mut().for_each(|r| *r = SplitRole::Sum);
                Some(split)
            }
            _ => None,
        }
    }
}

impl Op for FusedMatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        if self.epi.dact.is_some() || self.epi.rowsum {
            return Err(Error::usage("matmul: a gradient epilogue (unary gradient, row sums) has no gradient of its own"));
        }
        let c = n.outputs[0].var;
        // dC: the output's own gradient plus the activation's, through act'(c).
        let through_act = match (self.epi.act, gy.get(1).copied().flatten()) {
            (Some(u), Some(dy)) => Some(g.unary_grad(c, dy, u)?),
            _ => None,
        };
        let dc = match (gy[0], through_act) {
            (Some(a), Some(b)) => g.add_into(a, b)?,
            (a, b) => match a.or(b) {
                Some(v) => v,
                None => return Ok(vec![None; n.inputs.len()]),
            },
        };
        let mut out = self.mm.grads(g, n, dc)?;
        if self.epi.addend {
            let shape = n.inputs.last().expect("addend").shape.clone();
            out.push(Some(if g.shape(dc) == shape.as_slice() { dc } else { g.reshape(dc, &shape)? }));
        }
        Ok(out)
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        self.mm.flops_of(n)
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        self.mm.lower_with(&self.epi, n, l)
    }

    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        self.mm.cpu_with(&self.epi, n, x)
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        self.mm.split_roles(n, &self.epi)
    }

    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        self.epi.with_addend(self.mm)
    }

    fn with_unary(&self, u: Unary) -> Option<Arc<dyn Op>> {
        self.epi.with_unary(self.mm, u)
    }

    fn with_unary_grad(&self, u: Unary) -> Option<Arc<dyn Op>> {
        self.epi.with_unary_grad(self.mm, u)
    }
}

/// The backward of a linear layer `y = x W^T (+ b)`: dX = dY W (with an epilogue: a unary
/// gradient, an addend), dW = dY^T X and db = the column sums of dY, as one dispatch over two
/// problems (`mm_*_pair` in the shader) where the kernel family has the pair form.
/// Inputs: dY [M, N], W [N, K], X [M, K] [, aux] [, addend]. Outputs: dX, dW [, db].
#[derive(Debug, Clone, Copy)]
struct LinearGradOp {
    bias: bool,
    /// Of dX (`dact`, `addend` only).
    epi: Epilogue,
    /// dX is computed (not when X is data: `Op::without_output`).
    dx: bool,
}

impl LinearGradOp {
    /// The two problems as matmul nodes of their own: (op, epilogue, node) for dX and dW.
    fn problems(&self, n: &NodeRef) -> [(MatmulOp, Epilogue, NodeRef); 2] {
        let (dy, w, x) = (n.inputs[0].clone(), n.inputs[1].clone(), n.inputs[2].clone());
        let dx =
            NodeRef { index: n.index, inputs: [vec![dy.clone(), w], n.inputs[3..].to_vec()].concat(), outputs: vec![n.outputs[0].clone()] };
        let dw = NodeRef { index: n.index, inputs: vec![dy, x], outputs: n.outputs[1..].to_vec() };
        let rows = Epilogue { rowsum: self.bias, ..Default::default() };
        [(MatmulOp { ta: false, tb: false, bias: false }, self.epi, dx), (MatmulOp { ta: true, tb: false, bias: false }, rows, dw)]
    }
}

/// K per chunk of a tiled pair's dW problem: about dX's own K (at least 256) so that every
/// workgroup of the dispatch has about as much to do, a multiple of the tile's K step, and
/// no more chunks than 64 or than one binding holds the partial sums of (`partial_len` words
/// each). The whole K when it is not worth cutting.
fn pair_kper(d0: &Dims, d1: &Dims, partial_len: usize, max_binding: u64) -> usize {
    let fit = (max_binding / (4 * partial_len as u64)).max(1) as usize;
    let chunks = d1.k.div_ceil(d0.k.max(256)).clamp(1, 64).min(fit);
    if chunks < 2 {
        return d1.k;
    }
    d1.k.div_ceil(chunks).next_multiple_of(16)
}

impl Op for LinearGradOp {
    fn name(&self) -> &'static str {
        "linear_grad"
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        self.problems(n).iter().skip(!self.dx as usize).map(|(mm, _, nr)| mm.flops_of(nr)).sum()
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let [(m0, e0, n0), (m1, e1, n1)] = self.problems(n);
        if !self.dx {
            return m1.lower_with(&e1, &n1, l);
        }
        let (d0, d1) = (m0.dims(&n0.inputs[0].shape, &n0.inputs[1].shape), m1.dims(&n1.inputs[0].shape, &n1.inputs[1].shape));
        let v = l.profile().matmul;
        // Two dispatches for the benchmarks' scalar-only variant, and where either problem
        // is large enough for the wide tiles (the pair saves a launch on small problems; on
        // large ones the wide kernel's arithmetic intensity matters more).
        if v == MatmulVariant::RegisterScalar || m0.wide(v, &d0) || m1.wide(v, &d1) {
            m0.lower_with(&e0, &n0, l)?;
            return m1.lower_with(&e1, &n1, l);
        }
        let (entry, tile) = match v {
            MatmulVariant::Register if m0.vec4(&d0) && m1.vec4(&d1) => ("mm_register_v4_pair", 64),
            MatmulVariant::Register => ("mm_register_pair", 32),
            _ => ("mm_tiled_pair", 64),
        };
        let split = d0.m.div_ceil(tile);
        // dW's K (the rows) in chunks, so its few tiles do not keep a GPU waiting (the
        // tiled pair only: see MmPair in the shader; `splits_k` is the one rule for when).
        let partial_len = d1.m * d1.n + d1.m;
        let splits = l.profile().splits_k();
        debug_assert_eq!(splits, entry == "mm_tiled_pair" && l.profile().split_k, "splits_k out of step with the pair's entry");
        let kper = if splits { pair_kper(&d0, &d1, partial_len, l.ctx.max_binding()) } else { d1.k };
        let ksplit = d1.k.div_ceil(kper.max(1)).max(1);
        let mut p = m0.params(&e0, &d0);
        p.0.extend(m1.params(&e1, &d1).0);
        let p = p.u(split).u(ksplit).u(kper).u(0);
        let t = |v: &crate::graph::TensorDesc| Bind::T(v.var);
        let mut extra = n.inputs[3..].iter();
        let aux = if e0.dact.is_some() { t(extra.next().expect("aux")) } else { l.unused() };
        let addend = if e0.addend { t(extra.next().expect("addend")) } else { l.unused() };
        let db = if self.bias { t(&n.outputs[2]) } else { l.unused() };
        let (dw, rows, partials) = if ksplit > 1 {
            let part = l.scratch(ksplit * partial_len, "linear_grad dW partial sums");
            (part, l.unused(), Some(part))
        } else {
            (t(&n.outputs[1]), db, None)
        };
        let binds = [t(&n.inputs[0]), t(&n.inputs[1]), t(&n.outputs[0]), t(&n.inputs[2]), aux, addend, dw, rows];
        let groups = [d0.n.max(d1.n).div_ceil(tile) as u32, (split + d1.m.div_ceil(tile) * ksplit) as u32, 1];
        l.dispatch("matmul", entry, p.clone(), &binds, groups);
        if let Some(part) = partials {
            let out = d1.m * d1.n + if self.bias { d1.m } else { 0 };
            l.dispatch("matmul", "mm_pair_sum", p, &[part, t(&n.outputs[1]), db], crate::graph::lower::grid(out.div_ceil(256)));
        }
        Ok(())
    }

    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let [(m0, e0, n0), (m1, e1, n1)] = self.problems(n);
        let x0: Vec<&CpuTensor> = [&x[..2], &x[3..]].concat();
        let mut out = m0.cpu_with(&e0, &n0, &x0)?;
        out.extend(m1.cpu_with(&e1, &n1, &[x[0], x[2]])?);
        Ok(out)
    }

    /// Rows of dY, X, dX (and the epilogue's tensors) are cut; dW and db are sums over them.
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n).whole(&[1]).sum(&[1, 2]))
    }

    fn with_addend(&self) -> Option<Arc<dyn Op>> {
        let _ = self.epi.with_addend(MatmulOp { ta: false, tb: false, bias: false })?;
        Some(Arc::new(LinearGradOp { epi: Epilogue { addend: true, ..self.epi }, ..*self }))
    }

    fn with_unary_grad(&self, u: Unary) -> Option<Arc<dyn Op>> {
        let _ = self.epi.with_unary_grad(MatmulOp { ta: false, tb: false, bias: false }, u)?;
        Some(Arc::new(LinearGradOp { epi: Epilogue { dact: Some(u), ..self.epi }, ..*self }))
    }

    fn without_output(&self, i: usize) -> Option<Arc<dyn Op>> {
        (i == 0 && self.epi.plain()).then(|| Arc::new(LinearGradOp { dx: false, ..*self }) as Arc<dyn Op>)
    }
}

impl Graph {
    /// `a @ b` over the last two axes, batch axes broadcast (equal, or 1 on one side).
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.matmul_ex(a, b, false, false, None)
    }

    /// `op(a) @ op(b) + bias`, `op` = transpose where `ta`/`tb`.
    pub fn matmul_ex(&mut self, a: Var, b: Var, ta: bool, tb: bool, bias: Option<Var>) -> Result<Var> {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::shape("matmul", format!("operands need rank >= 2, got {sa:?} and {sb:?}")));
        }
        for v in [a, b] {
            if self.dtype(v) != DType::F32 {
                return Err(Error::shape("matmul", format!("'{}' is not F32", self.info(v).name)));
            }
        }
        let op = MatmulOp { ta, tb, bias: bias.is_some() };
        let d = op.dims(&sa, &sb);
        let kb = if tb { sb[sb.len() - 1] } else { sb[sb.len() - 2] };
        if d.k != kb {
            return Err(Error::shape(
                "matmul",
                format!(
                    "inner dimensions differ: a is {sa:?}{} and b is {sb:?}{} ({} vs {kb})",
                    if ta { "^T" } else { "" },
                    if tb { "^T" } else { "" },
                    d.k
                ),
            ));
        }
        let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        if d.batch_a != d.batch_b && d.batch_a != 1 && d.batch_b != 1 {
            return Err(Error::shape("matmul", format!("batch dimensions differ: a is {sa:?} and b is {sb:?}")));
        }
        if d.batch_a == d.batch_b && ba != bb {
            return Err(Error::shape("matmul", format!("batch dimensions differ: a is {sa:?} and b is {sb:?}")));
        }
        if d.batch > 65535 {
            return Err(Error::shape("matmul", format!("batch of {} matrices exceeds 65535", d.batch)));
        }
        let mut out: Vec<usize> = if ba.len() >= bb.len() { ba.to_vec() } else { bb.to_vec() };
        out.extend([d.m, d.n]);
        let mut inputs = vec![a, b];
        if let Some(bias) = bias {
            if self.shape(bias) != [d.n] {
                return Err(Error::shape("matmul", format!("bias has shape {:?}, expected [{}]", self.shape(bias), d.n)));
            }
            inputs.push(bias);
        }
        Ok(self.add_node(Arc::new(op), &inputs, &[(out, DType::F32)])?[0])
    }

    /// `dy^T @ op(x)` and the column sums of `dy` ([rows, N] -> [N]) from one dispatch: the
    /// weight and bias gradients of a linear layer (`x` transposed where `tx`).
    fn matmul_rowsum(&mut self, dy: Var, x: Var, tx: bool) -> Result<(Var, Var)> {
        let dw = self.matmul_ex(dy, x, true, tx, None)?;
        let Source::Node(j) = self.info(dw).source else { unreachable!("a matmul output") };
        let n = self.shape(dy)[1];
        let db = self.new_tensor(vec![n], DType::F32, Source::Node(j), format!("{}.rowsum", self.info(dw).name));
        let node = &mut self.nodes[j];
        node.op = Arc::new(FusedMatmulOp {
            mm: MatmulOp { ta: true, tb: tx, bias: false },
            epi: Epilogue { rowsum: true, ..Default::default() },
        });
        node.outputs.push(db);
        Ok((dw, db))
    }

    /// A linear layer: `x @ w^T + b` over the last axis of `x` (w is [out, in], as PyTorch).
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let xs = self.shape(x).to_vec();
        let ws = self.shape(w).to_vec();
        if ws.len() != 2 || xs.last() != ws.last() {
            return Err(Error::shape("linear", format!("input {xs:?} does not fit weight {ws:?} ([out, in])")));
        }
        // Fold leading axes into rows: one large matmul instead of a batch of small ones.
        let rows: usize = xs[..xs.len() - 1].iter().product();
        let x2 = self.reshape(x, &[rows, ws[1]])?;
        let y = self.matmul_ex(x2, w, false, true, b)?;
        let mut out = xs[..xs.len() - 1].to_vec();
        out.push(ws[0]);
        self.reshape(y, &out)
    }
}
