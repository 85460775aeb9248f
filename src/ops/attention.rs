//! Multi-head self-attention: a fused flash-attention-style kernel pair (forward with an
//! online softmax; backward that recomputes scores per block) and a plain materialised path
//! built from matmul/softmax ops, kept as the reference the tests compare against.
//!
//! Both read `qkv` [B, N, 3*D] exactly as timm's `qkv` Linear writes it (q, k, v blocks, each
//! `heads` x `head_dim`) and return [B, N, D] ready for the output projection, so no permutes
//! surround the fused kernels. An optional additive `bias` [G, H, N, N] (Swin's relative
//! position bias plus shift mask) is broadcast over the batch: batch b uses `bias[b % G]`
//! (windows are laid out image-major, so G = windows per image). Kernels in
//! `shaders/attention.wgsl`.
//!
//! Why the fused path is the default on every adapter: even on lavapipe, where barriers are
//! expensive, it beat the materialised path (`webdistill bench attention`, 64 x 65 tokens x
//! 128 dims x 4 heads: about 2.3x less CPU time forward and 1.5x forward + backward), and a
//! barrier-free variant reading K/V straight from storage was 2-3x slower than staging them
//! through workgroup memory. So there is no per-adapter switch; `AttnImpl::Materialized`
//! stays for tests, benchmarks and head dims over [`FUSED_MAX_HEAD_DIM`].

use crate::error::{Error, Result};
use crate::gpu::KernelKey;
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use std::sync::Arc;

/// Which attention implementation a graph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnImpl {
    /// One kernel forward, two backward (plus one for a bias gradient); the N x N scores
    /// never reach memory.
    Fused,
    /// matmul -> scale (+ bias) -> softmax -> matmul with the full score matrix in memory.
    Materialized,
}

impl AttnImpl {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fused" => Some(Self::Fused),
            "materialized" | "materialised" | "plain" => Some(Self::Materialized),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Fused => "fused",
            Self::Materialized => "materialized",
        }
    }
}

/// Largest head dim the fused kernels hold in registers (private vec4 arrays of 32).
pub const FUSED_MAX_HEAD_DIM: usize = 128;

/// Sizes of one attention node.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    n: usize,
    heads: usize,
    dh: usize,
    d: usize,
    /// Bias groups (0 = no bias).
    groups: usize,
}

impl Dims {
    fn of(qkv: &[usize], heads: usize, bias: Option<&[usize]>) -> Dims {
        let d = qkv[2] / 3;
        Dims { b: qkv[0], n: qkv[1], heads, dh: d / heads, d, groups: bias.map_or(0, |s| s[0]) }
    }

    fn params(&self, scale: f32, groups: usize) -> Params {
        Params::new().u(self.n).u(self.heads).u(self.dh).u(self.d).u(self.b).u(groups).u(3 * self.d).u(0).f(scale).f(0.0).f(0.0).f(0.0)
    }

    /// Kernel key with the block sizes for this shape: DH4 = ceil(dh/4) vec4 per row; BK rows
    /// staged per block (496 vec4 of workgroup memory per operand); WG rows per workgroup,
    /// sized so the last query block is not mostly empty (65 tokens: 2 blocks of 40, not 64+1).
    fn key(&self, entry: &'static str) -> (KernelKey, usize) {
        let dh4 = self.dh.div_ceil(4);
        let bk = (496 / dh4).min(64);
        let blocks = self.n.div_ceil(64);
        let wg = self.n.div_ceil(blocks).div_ceil(8) * 8;
        let key = KernelKey::new("attention", entry).constant("WG", wg as u32).constant("DH4", dh4 as u32).constant("BK", bk as u32);
        (key, wg)
    }
}

/// f64 reference: O [B, N, D] and log-sum-exp [B, H, N].
pub fn attention_cpu(qkv: &CpuTensor, heads: usize, bias: Option<&CpuTensor>, scale: f64) -> (CpuTensor, CpuTensor) {
    let dm = Dims::of(&qkv.shape, heads, bias.map(|b| b.shape.as_slice()));
    let (b, n, d, dh) = (dm.b, dm.n, dm.d, dm.dh);
    let mut o = CpuTensor::zeros(&[b, n, d]);
    let mut lse = CpuTensor::zeros(&[b, heads, n]);
    let at = |bb: usize, t: usize, part: usize, h: usize, c: usize| qkv.data[(bb * n + t) * 3 * d + part * d + h * dh + c];
    let mut s = vec![0.0; n];
    for bb in 0..b {
        for h in 0..heads {
            for i in 0..n {
                for (j, sj) in s.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for c in 0..dh {
                        acc += at(bb, i, 0, h, c) * at(bb, j, 1, h, c);
                    }
                    *sj = acc * scale + bias.map_or(0.0, |bt| bt.data[(((bb % dm.groups) * heads + h) * n + i) * n + j]);
                }
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                lse.data[(bb * heads + h) * n + i] = mx + sum.ln();
                for c in 0..dh {
                    let mut acc = 0.0;
                    for (j, sj) in s.iter().enumerate() {
                        acc += (sj - mx).exp() / sum * at(bb, j, 2, h, c);
                    }
                    o.data[(bb * n + i) * d + h * dh + c] = acc;
                }
            }
        }
    }
    (o, lse)
}

/// Fused forward. Inputs: qkv [, bias]. Outputs: o [B, N, D], lse [B, H, N].
#[derive(Debug)]
struct AttentionOp {
    heads: usize,
    scale: f32,
}

impl AttentionOp {
    fn dims(&self, n: &NodeRef) -> Dims {
        Dims::of(&n.inputs[0].shape, self.heads, n.inputs.get(1).map(|t| t.shape.as_slice()))
    }
}

fn check_grid(op: &str, dm: &Dims, wg: usize) -> Result<[u32; 3]> {
    let bh = dm.b * dm.heads;
    if bh > 65535 {
        return Err(Error::usage(format!("{op}: batch x heads = {bh} exceeds 65535 workgroups; use a smaller batch")));
    }
    Ok([dm.n.div_ceil(wg) as u32, bh as u32, 1])
}

impl Op for AttentionOp {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(dout) = gy[0] else { return Ok(vec![None; n.inputs.len()]) };
        if gy[1].is_some() {
            return Err(Error::usage("attention: the log-sum-exp output is not differentiable"));
        }
        let dm = self.dims(n);
        let qkv = n.inputs[0].var;
        let (o, lse) = (n.outputs[0].var, n.outputs[1].var);
        let bias = n.inputs.get(1).map(|t| t.var);
        let mut ins = vec![qkv, o, dout, lse];
        ins.extend(bias);
        let op = AttnBwdOp { heads: self.heads, scale: self.scale };
        let outs = g.add_node(Arc::new(op), &ins, &[(n.inputs[0].shape.clone(), DType::F32), (vec![dm.b, dm.heads, dm.n], DType::F32)])?;
        let mut grads = vec![Some(outs[0])];
        if let Some(bias) = bias {
            let shape = n.inputs[1].shape.clone();
            let op = AttnDBiasOp { heads: self.heads, scale: self.scale };
            grads.push(Some(g.push(op, &[qkv, dout, lse, bias, outs[1]], shape, DType::F32)?));
        }
        Ok(grads)
    }

    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let dm = self.dims(n);
        let (key, wg) = dm.key("attn_fwd");
        let groups = check_grid("attention", &dm, wg)?;
        let qkv = Bind::T(n.inputs[0].var);
        // Without a bias the kernel never reads its binding: a placeholder, not qkv again
        // (a tensor bound twice gets a copy dispatch).
        let bias = match n.inputs.get(1) {
            Some(t) => Bind::T(t.var),
            None => l.unused(),
        };
        let binds = [qkv, Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var), bias];
        l.dispatch_key(key, dm.params(self.scale, dm.groups), &binds, groups);
        Ok(())
    }

    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (o, lse) = attention_cpu(x[0], self.heads, x.get(1).copied(), self.scale as f64);
        Ok(vec![o, lse])
    }

    fn flops(&self, n: &NodeRef) -> u64 {
        let dm = self.dims(n);
        // QK^T and PV, 2 flops per multiply-add each.
        4 * (dm.b * dm.heads * dm.n * dm.n * dm.dh) as u64
    }

    /// Batch b uses bias[b % G]: slices hold whole groups of G.
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        let groups = n.inputs.get(1).map_or(1, |t| t.shape[0]);
        Some(crate::graph::BatchSplit::rows(n).whole(&[1]).unit(groups))
    }
}

/// Fused backward. Inputs: qkv, o, dO, lse [, bias]. Outputs: dqkv [B, N, 3D], dvec [B, H, N].
#[derive(Debug)]
struct AttnBwdOp {
    heads: usize,
    scale: f32,
}

impl Op for AttnBwdOp {
    fn name(&self) -> &'static str {
        "attention_backward"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let dm = Dims::of(&n.inputs[0].shape, self.heads, n.inputs.get(4).map(|t| t.shape.as_slice()));
        let qkv = Bind::T(n.inputs[0].var);
        let bias = match n.inputs.get(4) {
            Some(t) => Bind::T(t.var),
            None => l.unused(),
        };
        let binds = [
            qkv,
            Bind::T(n.inputs[1].var),
            Bind::T(n.inputs[3].var),
            bias,
            Bind::T(n.inputs[2].var),
            Bind::T(n.outputs[0].var),
            Bind::T(n.outputs[1].var),
        ];
        // Real GPUs: dQ and dK/dV blocks side by side in one grid. Software adapters: two
        // dispatches, dQ first (it writes dvec, which dK/dV reads); see attn_bwd.
        let entries: &[&'static str] = if l.profile().software { &["attn_bwd_dq", "attn_bwd_dkv"] } else { &["attn_bwd"] };
        for &entry in entries {
            let (key, wg) = dm.key(entry);
            let mut groups = check_grid("attention backward", &dm, wg)?;
            if entry == "attn_bwd" {
                groups[0] *= 2;
            }
            l.dispatch_key(key, dm.params(self.scale, dm.groups), &binds, groups);
        }
        Ok(())
    }

    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        let groups = n.inputs.get(4).map_or(1, |t| t.shape[0]);
        Some(crate::graph::BatchSplit::rows(n).whole(&[4]).unit(groups))
    }
}

/// Gradient of the attention bias. Inputs: qkv, dO, lse, bias, dvec. Output: [G, H, N, N].
#[derive(Debug)]
struct AttnDBiasOp {
    heads: usize,
    scale: f32,
}

impl Op for AttnDBiasOp {
    fn name(&self) -> &'static str {
        "attention_dbias"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let dm = Dims::of(&n.inputs[0].shape, self.heads, Some(&n.inputs[3].shape));
        let qkv = Bind::T(n.inputs[0].var);
        // Binding 2 (o) is not read by attn_dbias.
        let o = l.unused();
        let binds = [
            qkv,
            o,
            Bind::T(n.inputs[2].var),
            Bind::T(n.inputs[3].var),
            Bind::T(n.inputs[1].var),
            Bind::T(n.outputs[0].var),
            Bind::T(n.inputs[4].var),
        ];
        let (key, _) = dm.key("attn_dbias");
        l.dispatch_key(key, dm.params(self.scale, dm.groups), &binds, grid_for(n.outputs[0].numel(), 64));
        Ok(())
    }

    /// The bias gradient of a batch is the sum of its slices'.
    fn batch_split(&self, n: &NodeRef, _parts: usize) -> Option<crate::graph::BatchSplit> {
        Some(crate::graph::BatchSplit::rows(n).whole(&[3]).sum(&[0]).unit(n.inputs[3].shape[0]))
    }
}

impl Graph {
    fn attention_dims(&self, qkv: Var, heads: usize, bias: Option<Var>) -> Result<Dims> {
        let s = self.shape(qkv).to_vec();
        if s.len() != 3 || s[2] % 3 != 0 || heads == 0 || (s[2] / 3) % heads != 0 {
            return Err(Error::shape("attention", format!("qkv must be [B, N, 3*D] with D divisible by {heads} heads, got {s:?}")));
        }
        let dm = Dims::of(&s, heads, None);
        if let Some(bv) = bias {
            let bs = self.shape(bv);
            if bs.len() != 4 || bs[1] != heads || bs[2] != dm.n || bs[3] != dm.n || dm.b % bs[0] != 0 {
                return Err(Error::shape(
                    "attention",
                    format!("bias must be [G, {heads}, {n}, {n}] with G dividing the batch of {b}, got {bs:?}", n = dm.n, b = dm.b),
                ));
            }
            return Ok(Dims { groups: bs[0], ..dm });
        }
        Ok(dm)
    }

    /// Multi-head self-attention of `qkv` [B, N, 3*D] (timm's fused qkv layout) with scale
    /// head_dim^-0.5 and an optional additive `bias` [G, H, N, N] (batch b uses bias[b % G]).
    /// Returns [B, N, D]. Uses the fused kernels when the head dim fits them
    /// ([`FUSED_MAX_HEAD_DIM`]), else the materialised path.
    pub fn attention(&mut self, qkv: Var, heads: usize, bias: Option<Var>) -> Result<Var> {
        self.attention_with(qkv, heads, bias, AttnImpl::Fused)
    }

    /// [`Self::attention`] with an explicit implementation (tests and benchmarks compare them).
    pub fn attention_with(&mut self, qkv: Var, heads: usize, bias: Option<Var>, imp: AttnImpl) -> Result<Var> {
        let dm = self.attention_dims(qkv, heads, bias)?;
        let scale = (dm.dh as f32).powf(-0.5);
        if imp == AttnImpl::Materialized || dm.dh > FUSED_MAX_HEAD_DIM {
            return self.attention_materialized(qkv, dm, bias, scale);
        }
        let mut ins = vec![qkv];
        ins.extend(bias);
        let op = AttentionOp { heads, scale };
        let outs = self.add_node(Arc::new(op), &ins, &[(vec![dm.b, dm.n, dm.d], DType::F32), (vec![dm.b, dm.heads, dm.n], DType::F32)])?;
        Ok(outs[0])
    }

    /// The reference path: every intermediate, including the [B*H, N, N] scores, in memory.
    fn attention_materialized(&mut self, qkv: Var, dm: Dims, bias: Option<Var>, scale: f32) -> Result<Var> {
        let Dims { b, n, heads, dh, d, groups } = dm;
        let x = self.reshape(qkv, &[b, n, 3, heads, dh])?;
        let x = self.permute(x, &[2, 0, 3, 1, 4])?;
        let mut parts = Vec::with_capacity(3);
        for p in 0..3 {
            let t = self.slice(x, 0, p, 1)?;
            parts.push(self.reshape(t, &[b * heads, n, dh])?);
        }
        let s = self.matmul_ex(parts[0], parts[1], false, true, None)?;
        let mut s = self.scale(s, scale)?;
        if let Some(bias) = bias {
            let s5 = self.reshape(s, &[b / groups, groups, heads, n, n])?;
            let s5 = self.add(s5, bias)?;
            s = self.reshape(s5, &[b * heads, n, n])?;
        }
        let p = self.softmax(s)?;
        let o = self.matmul(p, parts[2])?;
        let o = self.reshape(o, &[b, heads, n, dh])?;
        let o = self.permute(o, &[0, 2, 1, 3])?;
        self.reshape(o, &[b, n, d])
    }
}
