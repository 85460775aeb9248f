//! Elementwise ops: unary maps, broadcasting binary ops, fill. Kernels in
//! `shaders/elementwise.wgsl`.

use crate::error::{Error, Result};
use crate::graph::cpu::{strides, unravel};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Source, Var};

/// Unary maps. Codes match `unary_f` in the shader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Identity,
    Relu,
    Relu6,
    /// Exact GELU (erf), as PyTorch's default and timm use.
    Gelu,
    Tanh,
    Exp,
    Log,
    Sqrt,
    /// a * x + b
    Affine(f32, f32),
    /// x ^ p
    Pow(f32),
    Sigmoid,
    Abs,
    Square,
    Recip,
    /// (x + b) ^ p
    PowShift(f32, f32),
}

impl Unary {
    pub(crate) fn code(self) -> (u32, f32, f32) {
        match self {
            Unary::Identity => (0, 0.0, 0.0),
            Unary::Relu => (1, 0.0, 0.0),
            Unary::Relu6 => (2, 0.0, 0.0),
            Unary::Gelu => (3, 0.0, 0.0),
            Unary::Tanh => (4, 0.0, 0.0),
            Unary::Exp => (5, 0.0, 0.0),
            Unary::Log => (6, 0.0, 0.0),
            Unary::Sqrt => (7, 0.0, 0.0),
            Unary::Affine(a, b) => (8, a, b),
            Unary::Pow(p) => (9, p, 0.0),
            Unary::Sigmoid => (10, 0.0, 0.0),
            Unary::Abs => (11, 0.0, 0.0),
            Unary::Square => (12, 0.0, 0.0),
            Unary::Recip => (13, 0.0, 0.0),
            Unary::PowShift(p, b) => (14, p, b),
        }
    }

    /// f64 reference.
    pub fn eval(self, x: f64) -> f64 {
        match self {
            Unary::Identity => x,
            Unary::Relu => x.max(0.0),
            Unary::Relu6 => x.clamp(0.0, 6.0),
            Unary::Gelu => 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2)),
            Unary::Tanh => x.tanh(),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Affine(a, b) => a as f64 * x + b as f64,
            Unary::Pow(p) => x.powf(p as f64),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Abs => x.abs(),
            Unary::Square => x * x,
            Unary::Recip => 1.0 / x,
            Unary::PowShift(p, b) => (x + b as f64).powf(p as f64),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unary::Identity => "copy",
            Unary::Relu => "relu",
            Unary::Relu6 => "relu6",
            Unary::Gelu => "gelu",
            Unary::Tanh => "tanh",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Affine(..) => "affine",
            Unary::Pow(_) => "pow",
            Unary::Sigmoid => "sigmoid",
            Unary::Abs => "abs",
            Unary::Square => "square",
            Unary::Recip => "recip",
            Unary::PowShift(..) => "pow_shift",
        }
    }
}

/// erf in f64 (for the CPU references), via libm-quality series/continued fraction.
pub fn erf64(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse for a reference; use the series for small |x|
    // and the complementary continued fraction otherwise.
    let ax = x.abs();
    let r = if ax < 2.5 {
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc continued fraction (Lentz).
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for k in 1..200 {
            let an = k as f64 * 0.5;
            d = ax + an * d;
            d = 1.0 / d;
            c = ax + an / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 { -r } else { r }
}

#[derive(Debug)]
struct UnaryOp(Unary);

impl Op for UnaryOp {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let dx = match self.0 {
            Unary::Identity => gy,
            Unary::Affine(a, _) => g.unary(gy, Unary::Affine(a, 0.0))?,
            _ => g.unary_grad(n.inputs[0].var, gy, self.0)?,
        };
        Ok(vec![Some(dx)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (op, a, b) = self.0.code();
        let len = n.outputs[0].numel();
        let p = Params::new().u(len).u(op as usize).f(a).f(b);
        l.dispatch("elementwise", "unary", p, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)], grid_for(len, 256));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![x[0].map(|v| self.0.eval(v))])
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n))
    }
}

/// dx = dy * f'(x)
#[derive(Debug)]
struct UnaryGradOp(Unary);

impl Op for UnaryGradOp {
    fn name(&self) -> &'static str {
        "unary_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (op, a, b) = self.0.code();
        let len = n.outputs[0].numel();
        let p = Params::new().u(len).u(op as usize).f(a).f(b);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("elementwise", "unary_grad", p, &binds, grid_for(len, 256));
        Ok(())
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n))
    }
}

/// Broadcasting binary ops. Codes match `binary_f` in the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl Binary {
    fn eval(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
        }
    }
}

pub use crate::tensor::MAX_RANK;

/// NumPy broadcasting of two shapes (right-aligned).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::shape(op, format!("shapes {a:?} and {b:?} do not broadcast (dimension {i}: {da} vs {db})"))),
        };
    }
    if r > MAX_RANK {
        return Err(Error::shape(op, format!("rank {r} exceeds the supported {MAX_RANK}")));
    }
    Ok(out)
}

/// Strides to read `shape` (right-aligned) at each index of `out` (0 along broadcast dims).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { s[i - off] }).collect()
}

#[derive(Debug)]
struct BinaryOp(Binary);

impl Op for BinaryOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Max => "maximum",
            Binary::Min => "minimum",
        }
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None, None]) };
        let (a, b) = (n.inputs[0].var, n.inputs[1].var);
        let (sa, sb) = (n.inputs[0].shape.clone(), n.inputs[1].shape.clone());
        let (da, db) = match self.0 {
            Binary::Add => (gy, gy),
            Binary::Sub => (gy, g.neg(gy)?),
            Binary::Mul => (g.mul(gy, b)?, g.mul(gy, a)?),
            Binary::Div => {
                let da = g.div(gy, b)?;
                let q = g.mul(da, n.outputs[0].var)?;
                (da, g.neg(q)?)
            }
            Binary::Max | Binary::Min => return Err(Error::usage(format!("{} has no gradient; use relu/clamp forms", self.name()))),
        };
        Ok(vec![Some(g.sum_to(da, &sa)?), Some(g.sum_to(db, &sb)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let out = &n.outputs[0].shape;
        let len = n.outputs[0].numel();
        let (sa, sb) = (&n.inputs[0].shape, &n.inputs[1].shape);
        let flags = (sa == out) as usize | (((sb == out) as usize) << 1);
        let p = Params::new()
            .u(len)
            .u(self.0 as usize)
            .u(out.len())
            .u(flags)
            .arr(out, MAX_RANK)
            .arr(&broadcast_strides(sa, out), MAX_RANK)
            .arr(&broadcast_strides(sb, out), MAX_RANK);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        l.dispatch("elementwise", "binary", p, &binds, grid_for(len, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let out = &n.outputs[0].shape;
        let (sa, sb) = (broadcast_strides(&x[0].shape, out), broadcast_strides(&x[1].shape, out));
        let data = (0..out.iter().product())
            .map(|i| {
                let idx = unravel(i, out);
                let ia: usize = idx.iter().zip(&sa).map(|(a, b)| a * b).sum();
                let ib: usize = idx.iter().zip(&sb).map(|(a, b)| a * b).sum();
                self.0.eval(x[0].data[ia], x[1].data[ib])
            })
            .collect();
        Ok(vec![CpuTensor::new(out, data)])
    }

    /// An operand without the output's leading axis is broadcast: every slice reads it whole.
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        let out = &n.outputs[0].shape;
        let shared: Vec<usize> = (0..2).filter(|&i| n.inputs[i].shape.len() != out.len() || n.inputs[i].shape[0] != out[0]).collect();
        Some(crate::graph::BatchSplit::rows(n).whole(&shared))
    }
}

#[derive(Debug)]
struct FillOp(f32);

impl Op for FillOp {
    fn name(&self) -> &'static str {
        "fill"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let len = n.outputs[0].numel();
        l.dispatch("elementwise", "fill", Params::new().u(len).f(self.0), &[Bind::T(n.outputs[0].var)], grid_for(len, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, _x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, vec![self.0 as f64; n.outputs[0].numel()])])
    }
    fn backward(&self, _g: &mut Graph, _n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        Ok(vec![])
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n))
    }
}

/// `state += x` in place (metrics summed over steps, read back now and then).
#[derive(Debug)]
struct AccumulateOp;

impl Op for AccumulateOp {
    fn name(&self) -> &'static str {
        "accumulate"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let len = n.inputs[0].numel();
        l.dispatch(
            "elementwise",
            "accumulate",
            Params::new().u(len).u(0).u(0).u(0),
            &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var)],
            [len.div_ceil(64) as u32, 1, 1],
        );
        Ok(())
    }
}

fn check_f32(g: &Graph, op: &'static str, v: Var) -> Result<()> {
    if g.dtype(v) != DType::F32 {
        return Err(Error::shape(op, format!("'{}' is {:?}, expected F32", g.info(v).name, g.dtype(v))));
    }
    Ok(())
}

/// Epilogue fusion: an op absorbs the elementwise op that follows it (`Op::with_addend`,
/// `Op::with_unary`, `Op::with_unary_grad`) by rewriting its node in place, so the graph
/// keeps its order and every other node its meaning.
impl Graph {
    /// Users of `v`: nodes that read it, after the one that produces it.
    fn users(&self, v: Var) -> usize {
        let from = match self.info(v).source {
            Source::Node(p) => p + 1,
            _ => 0,
        };
        self.nodes[from..].iter().filter(|n| n.inputs.contains(&v)).count()
    }

    /// Whether some later reader (the host, a parameter slot, an autodiff pin) needs `v`.
    fn pinned(&self, v: Var) -> bool {
        self.kept.contains(&v) || self.param_grads.iter().any(|(_, g)| *g == v)
    }

    /// The node an epilogue on `fresh` can be fused into, following reshapes: `fresh` (or the
    /// tensor it reshapes) is the first output of a node that writes nothing in place, and
    /// nothing reads any tensor of that chain but the next reshape (nothing reads `fresh`).
    fn fusion_target(&self, fresh: Var) -> Option<usize> {
        let mut v = fresh;
        let mut allowed = 0;
        loop {
            if self.pinned(v) || self.users(v) != allowed {
                return None;
            }
            let Source::Node(p) = self.info(v).source else { return None };
            let node = &self.nodes[p];
            if node.op.name() == "reshape" && node.op.alias_of() == Some(0) {
                v = node.inputs[0];
                allowed = 1;
                continue;
            }
            if node.outputs[0] != v || !node.op.writes().is_empty() || node.op.alias_of().is_some() {
                return None;
            }
            return Some(p);
        }
    }

    /// Let the node that computes `v` skip it ([`Op::without_output`]) when nothing reads `v`
    /// and nothing can: autodiff discards such gradients.
    pub(crate) fn discard_output(&mut self, v: Var) {
        let Source::Node(j) = self.info(v).source else { return };
        if self.pinned(v) || self.users(v) != 0 {
            return;
        }
        let Some(i) = self.nodes[j].outputs.iter().position(|&o| o == v) else { return };
        if let Some(op) = self.nodes[j].op.without_output(i) {
            self.nodes[j].op = op;
        }
    }

    /// `x`, or a tensor it reshapes (the same values in the same order), that node `j` may
    /// read as an extra input: one that exists before it and that no node from `j` on writes
    /// in place.
    fn readable_at(&self, x: Var, j: usize) -> Option<Var> {
        let root = self.root(x);
        if self.nodes[j..].iter().any(|n| n.op.writes().iter().any(|&w| self.root(n.inputs[w]) == root)) {
            return None;
        }
        let mut v = x;
        loop {
            let Source::Node(p) = self.info(v).source else { return Some(v) };
            if p < j {
                return Some(v);
            }
            let node = &self.nodes[p];
            if node.op.name() != "reshape" || node.op.alias_of() != Some(0) {
                return None;
            }
            v = node.inputs[0];
        }
    }

    /// `acc + fresh`, fused into the op that produces `fresh` where it can be: when `fresh`
    /// (or the tensor it reshapes) is the first output of the node that computes it, nothing
    /// reads it yet, the host does not keep it, the node's op has [`Op::with_addend`], and
    /// `acc` has exactly `fresh`'s shape (no broadcast), that node is rewritten to add `acc`
    /// itself (its extra input is `acc`, or the tensor `acc` reshapes, with as many elements
    /// as the node's output) and `fresh` is returned, now holding the sum. Otherwise an `add`
    /// dispatch.
    /// Residual connections and gradient sums use it.
    pub fn add_into(&mut self, acc: Var, fresh: Var) -> Result<Var> {
        let same = self.shape(acc) == self.shape(fresh) && self.dtype(acc) == DType::F32 && self.dtype(fresh) == DType::F32;
        if same && acc != fresh {
            if let Some(j) = self.fusion_target(fresh) {
                if let (Some(op), Some(a)) = (self.nodes[j].op.with_addend(), self.readable_at(acc, j)) {
                    let node = &mut self.nodes[j];
                    node.op = op;
                    node.inputs.push(a);
                    return Ok(fresh);
                }
            }
        }
        self.add(acc, fresh)
    }

    /// `dy * u'(x)`, the gradient of `u` at `x`, fused into the op that produces `dy` where
    /// it can be (the conditions of [`Self::add_into`], with [`Op::with_unary_grad`]):
    /// `dX = (dY W) * gelu'(h)` in one matmul. Otherwise a `unary_grad` dispatch.
    pub fn unary_grad(&mut self, x: Var, dy: Var, u: Unary) -> Result<Var> {
        if self.numel(x) != self.numel(dy) {
            return Err(Error::shape("unary_grad", format!("gradient {:?} does not match {:?}", self.shape(dy), self.shape(x))));
        }
        if self.shape(x) == self.shape(dy) && x != dy {
            if let Some(j) = self.fusion_target(dy) {
                if let (Some(op), Some(x)) = (self.nodes[j].op.with_unary_grad(u), self.readable_at(x, j)) {
                    let node = &mut self.nodes[j];
                    node.op = op;
                    node.inputs.push(x);
                    return Ok(dy);
                }
            }
        }
        let shape = self.shape(x).to_vec();
        self.push(UnaryGradOp(u), &[x, dy], shape, DType::F32)
    }

    /// `u(x)`. When `x` (or the tensor it reshapes) is the single output of a node whose op
    /// has [`Op::with_unary`], that node writes `u(x)` too, as one more output (`fc1` and its
    /// GELU in one dispatch); `x` keeps its value and its users.
    pub fn unary(&mut self, x: Var, u: Unary) -> Result<Var> {
        check_f32(self, u.name(), x)?;
        let mut v = x;
        while let Source::Node(p) = self.info(v).source {
            let node = &self.nodes[p];
            if node.op.name() == "reshape" && node.op.alias_of() == Some(0) {
                v = node.inputs[0];
                continue;
            }
            if node.outputs.len() != 1 || !node.op.writes().is_empty() || node.op.alias_of().is_some() {
                break;
            }
            let Some(op) = node.op.with_unary(u) else { break };
            let info = self.info(v).clone();
            let y = self.new_tensor(info.shape, DType::F32, Source::Node(p), format!("{}.{}", info.name, u.name()));
            let node = &mut self.nodes[p];
            node.op = op;
            node.outputs.push(y);
            let shape = self.shape(x).to_vec();
            return if self.shape(y) == shape.as_slice() { Ok(y) } else { self.reshape(y, &shape) };
        }
        let shape = self.shape(x).to_vec();
        self.push(UnaryOp(u), &[x], shape, DType::F32)
    }
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Relu)
    }
    pub fn relu6(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Relu6)
    }
    pub fn gelu(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Gelu)
    }
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Tanh)
    }
    pub fn exp(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Exp)
    }
    pub fn log(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Log)
    }
    pub fn sqrt(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Sqrt)
    }
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Sigmoid)
    }
    pub fn square(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Square)
    }
    pub fn neg(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Affine(-1.0, 0.0))
    }
    pub fn scale(&mut self, x: Var, a: f32) -> Result<Var> {
        self.unary(x, Unary::Affine(a, 0.0))
    }
    pub fn add_scalar(&mut self, x: Var, b: f32) -> Result<Var> {
        self.unary(x, Unary::Affine(1.0, b))
    }
    pub fn pow(&mut self, x: Var, p: f32) -> Result<Var> {
        self.unary(x, Unary::Pow(p))
    }
    /// A copy in fresh memory.
    pub fn copy(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Identity)
    }

    pub fn binary(&mut self, a: Var, b: Var, op: Binary) -> Result<Var> {
        let name = BinaryOp(op).name();
        check_f32(self, name, a)?;
        check_f32(self, name, b)?;
        let shape = broadcast_shapes(name, self.shape(a), self.shape(b))?;
        self.push(BinaryOp(op), &[a, b], shape, DType::F32)
    }
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Add)
    }
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Sub)
    }
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Mul)
    }
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Div)
    }
    pub fn maximum(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Max)
    }
    pub fn minimum(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, Binary::Min)
    }

    /// Add `x` into the stored tensor `state` in place (shapes must have equal sizes).
    pub fn accumulate(&mut self, state: Var, x: Var) -> Result<()> {
        if self.numel(state) != self.numel(x) || self.dtype(state) != DType::F32 || self.dtype(x) != DType::F32 {
            return Err(Error::shape("accumulate", format!("cannot add {:?} into {:?}", self.shape(x), self.shape(state))));
        }
        self.push(AccumulateOp, &[state, x], vec![1], DType::F32)?;
        Ok(())
    }

    /// A tensor filled with `value`.
    pub fn fill(&mut self, shape: &[usize], value: f32) -> Result<Var> {
        self.push(FillOp(value), &[], shape.to_vec(), DType::F32)
    }
}
