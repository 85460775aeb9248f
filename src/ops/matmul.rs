//! Batched matrix multiply with either operand transposed and a fused bias; the backbone of
//! linear layers, attention and (later) implicit-GEMM convolution. Kernels in
//! `shaders/matmul.wgsl`; the variant is chosen per adapter.

use crate::error::{Error, Result};
use crate::gpu::MatmulVariant;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulOp {
    /// A is stored [.., K, M] and used transposed.
    pub ta: bool,
    /// B is stored [.., N, K] and used transposed.
    pub tb: bool,
    /// A third input `bias[N]` is added to every row.
    pub bias: bool,
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
}

impl Op for MatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dc) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        let (a, b) = (n.inputs[0].var, n.inputs[1].var);
        let (sa, sb) = (n.inputs[0].shape.clone(), n.inputs[1].shape.clone());
        // C = op(A) op(B). dA = dC op(B)^T (transposed back if A was), dB likewise.
        let da = if self.ta { g.matmul_ex(b, dc, self.tb, true, None)? } else { g.matmul_ex(dc, b, false, !self.tb, None)? };
        let db = if self.tb { g.matmul_ex(dc, a, true, self.ta, None)? } else { g.matmul_ex(a, dc, !self.ta, false, None)? };
        // Broadcast batches get their gradients summed.
        let mut out = vec![Some(g.sum_to(da, &sa)?), Some(g.sum_to(db, &sb)?)];
        if self.bias {
            out.push(Some(g.sum_to(dc, &n.inputs[2].shape)?));
        }
        Ok(out)
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        let d = self.dims(&n.inputs[0].shape, &n.inputs[1].shape);
        2 * (d.batch * d.m * d.n * d.k) as u64
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (sa, sb) = (&n.inputs[0].shape, &n.inputs[1].shape);
        let d = self.dims(sa, sb);
        let (ars, acs) = if self.ta { (1, d.m) } else { (d.k, 1) };
        let (brs, bcs) = if self.tb { (1, d.k) } else { (d.n, 1) };
        let sab = if d.batch_a == 1 { 0 } else { d.m * d.k };
        let sbb = if d.batch_b == 1 { 0 } else { d.k * d.n };
        let p = Params::new().u(d.m).u(d.n).u(d.k).u(d.batch).u(sab).u(sbb).u(d.m * d.n).u(self.bias as usize).u(ars).u(acs).u(brs).u(bcs);
        let c = n.outputs[0].var;
        let bias = if self.bias { Bind::T(n.inputs[2].var) } else { l.unused() };
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(c), bias];
        // The vec4 form reads 4-element vectors along K, along M when A is transposed, and
        // along N when B is not.
        let v4 = d.k % 4 == 0 && (!self.ta || d.m % 4 == 0) && (self.tb || d.n % 4 == 0) && d.m >= 4 && d.n >= 4;
        let (entry, tn, tm) = match l.profile().matmul {
            MatmulVariant::Register if v4 => ("mm_register_v4", 64, 64),
            MatmulVariant::Register | MatmulVariant::RegisterScalar => ("mm_register", 32, 32),
            MatmulVariant::Tiled => ("mm_tiled", 64, 64),
        };
        let groups = [d.n.div_ceil(tn) as u32, d.m.div_ceil(tm) as u32, d.batch as u32];
        l.dispatch("matmul", entry, p, &binds, groups);
        Ok(())
    }

    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
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
        Ok(vec![out])
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
        Ok(self.add_node(std::sync::Arc::new(op), &inputs, &[(out, DType::F32)])?[0])
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
