//! Cross-entropy (integer labels with label smoothing, or soft targets) averaged over rows,
//! and top-k correctness counts. Kernels in `shaders/loss.wgsl`.

use super::softmax::{rows_cols, softmax_cpu};
use crate::error::{Error, Result};
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Source, Var};
use std::sync::Arc;

fn ce_params(rows: usize, cols: usize, k: usize, smoothing: f32, scale: f32) -> Params {
    Params::new().u(rows).u(cols).u(k).u(0).f(smoothing).f(scale).f(0.0).f(0.0)
}

/// Sum `rows` per-row values in `src` into `dst[0]`, times `scale`.
pub(crate) fn sum_rows_into(l: &mut Lowering, src: Bind, dst: Bind, rows: usize, scale: f32) {
    let p = Params::new().u(1).u(rows).u(0).u(1).f(scale).u(0).u(0).u(0).arr(&[], 8).arr(&[], 8).arr(&[rows], 8).arr(&[1], 8);
    if rows > 1024 {
        l.dispatch_wg_reduce("reduce", "reduce_wg", p, &[src, dst], grid(1));
    } else {
        l.dispatch("reduce", "reduce_serial", p, &[src, dst], grid(1));
    }
}

/// Rows up to which the cross-entropy runs as one workgroup (one dispatch for the loss and
/// its gradient); more rows take a per-row pass and a reduction.
const CE_ONE_WORKGROUP_ROWS: usize = 2048;

/// Whether `v` is the constant 1 (the seed `gradients` starts from): a constant, or a node
/// without inputs (a fill) whose reference value is 1 everywhere.
fn is_one(g: &Graph, v: Var) -> bool {
    let ones = |d: &[f64]| d.iter().all(|&x| x == 1.0);
    match &g.info(v).source {
        Source::Const(bits) => g.dtype(v) == DType::F32 && bits.iter().all(|&b| b == 1.0f32.to_bits()),
        Source::Node(i) => {
            let n = &g.nodes()[*i];
            n.inputs.is_empty() && n.op.cpu(&g.node_ref(*i), &[]).is_ok_and(|o| o.len() == 1 && ones(&o[0].data))
        }
        _ => false,
    }
}

/// Mean cross-entropy; input 1 is U32 labels (`soft == false`) or F32 targets. Outputs: the
/// loss [1] and, from the same pass, its gradient with respect to the logits [rows, cols]
/// (the backward pass then costs nothing when the loss is what is differentiated).
#[derive(Debug)]
struct CrossEntropyOp {
    smoothing: f32,
    soft: bool,
}

impl Op for CrossEntropyOp {
    fn name(&self) -> &'static str {
        if self.soft { "cross_entropy_soft" } else { "cross_entropy" }
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None, None]) };
        let dz = n.outputs[1].var;
        // d loss / d logits was written by the forward pass; scaled unless the seed is 1 (then
        // the seed's fill has no reader left and is not run).
        let dz = if is_one(g, gy) { dz } else { g.mul(dz, gy)? };
        // Targets are data (labels, a detached teacher): no gradient flows into them.
        Ok(vec![Some(dz), None])
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        8 * n.inputs[0].numel() as u64
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let (z, t, loss, dz) = (Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var), Bind::T(n.outputs[1].var));
        let p = ce_params(rows, cols, 0, self.smoothing, 1.0 / rows as f32);
        if rows <= CE_ONE_WORKGROUP_ROWS {
            let entry = if self.soft { "ce_soft_fused" } else { "ce_fused" };
            l.dispatch("loss", entry, p, &[z, t, loss, dz], [1, 1, 1]);
            return Ok(());
        }
        let per_row = l.scratch(rows, "per-row loss");
        let entry = if self.soft { "ce_soft_rows_grad" } else { "ce_rows_grad" };
        l.dispatch("loss", entry, p, &[z, t, per_row, dz], grid_for(rows, 64));
        sum_rows_into(l, per_row, loss, rows, 1.0 / rows as f32);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, cols) = rows_cols(&x[0].shape);
        let ls = softmax_cpu(x[0], true);
        let eps = self.smoothing as f64;
        let mut total = 0.0;
        let mut dz = CpuTensor::zeros(&x[0].shape);
        for r in 0..rows {
            let tsum: f64 = if self.soft { (0..cols).map(|c| x[1].data[r * cols + c]).sum() } else { 1.0 };
            for c in 0..cols {
                let t = if self.soft {
                    x[1].data[r * cols + c]
                } else if x[1].data[r] as usize == c {
                    1.0
                } else {
                    0.0
                };
                let q = (1.0 - eps) * t + eps / cols as f64;
                let lsv = ls.data[r * cols + c];
                total -= q * lsv;
                dz.data[r * cols + c] = (lsv.exp() * ((1.0 - eps) * tsum + eps) - q) / rows as f64;
            }
        }
        Ok(vec![CpuTensor::new(&[1], vec![total / rows as f64]), dz])
    }
}

/// Number of rows whose label is among the top-k logits (as f32, shape [1]).
#[derive(Debug)]
struct TopKCorrectOp {
    k: usize,
}

impl Op for TopKCorrectOp {
    fn name(&self) -> &'static str {
        "topk_correct"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let per_row = l.scratch(rows, "per-row correct");
        let p = ce_params(rows, cols, self.k, 0.0, 1.0);
        l.dispatch("loss", "topk_correct", p, &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), per_row], grid_for(rows, 64));
        sum_rows_into(l, per_row, Bind::T(n.outputs[0].var), rows, 1.0);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, cols) = rows_cols(&x[0].shape);
        let mut count = 0.0;
        for r in 0..rows {
            let y = x[1].data[r] as usize;
            let zy = x[0].data[r * cols + y];
            let above = (0..cols).filter(|&c| {
                let z = x[0].data[r * cols + c];
                z > zy || (z == zy && c < y)
            });
            if above.count() < self.k {
                count += 1.0;
            }
        }
        Ok(vec![CpuTensor::new(&[1], vec![count])])
    }
}

/// Per-row cross-entropy with integer labels, no smoothing, forward only (evaluation).
#[derive(Debug)]
struct CeRowsOp;

impl Op for CeRowsOp {
    fn name(&self) -> &'static str {
        "cross_entropy_rows"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let p = ce_params(rows, cols, 0, 0.0, 1.0);
        l.dispatch(
            "loss",
            "ce_rows",
            p,
            &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)],
            grid_for(rows, 64),
        );
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, cols) = rows_cols(&x[0].shape);
        let ls = softmax_cpu(x[0], true);
        Ok(vec![CpuTensor::new(&[rows], (0..rows).map(|r| -ls.data[r * cols + x[1].data[r] as usize]).collect())])
    }
}

/// Per-row 1/0: label among the top-k logits (evaluation).
#[derive(Debug)]
struct TopKRowsOp {
    k: usize,
}

impl Op for TopKRowsOp {
    fn name(&self) -> &'static str {
        "topk_rows"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        let p = ce_params(rows, cols, self.k, 0.0, 1.0);
        l.dispatch(
            "loss",
            "topk_correct",
            p,
            &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)],
            grid_for(rows, 64),
        );
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let per = TopKCorrectOp { k: self.k };
        let (rows, cols) = rows_cols(&x[0].shape);
        let out = (0..rows)
            .map(|r| {
                let row = CpuTensor::new(&[1, cols], x[0].data[r * cols..(r + 1) * cols].to_vec());
                let lab = CpuTensor::new(&[1], vec![x[1].data[r]]);
                per.cpu(n, &[&row, &lab]).map(|v| v[0].data[0])
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(vec![CpuTensor::new(&[rows], out)])
    }
}

/// One-hot encoding of U32 labels.
#[derive(Debug)]
struct OneHotOp;

impl Op for OneHotOp {
    fn name(&self) -> &'static str {
        "one_hot"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.outputs[0].shape);
        let p = ce_params(rows, cols, 0, 0.0, 1.0);
        let lab = Bind::T(n.inputs[0].var);
        // Binding 1 (logits) is unused by this entry; bind the labels there too.
        l.dispatch("loss", "one_hot", p, &[lab, lab, Bind::T(n.outputs[0].var)], grid_for(rows * cols, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, cols) = rows_cols(&n.outputs[0].shape);
        let mut out = CpuTensor::zeros(&[rows, cols]);
        for r in 0..rows {
            out.data[r * cols + x[0].data[r] as usize] = 1.0;
        }
        Ok(vec![out])
    }
    fn backward(&self, _g: &mut Graph, _n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        Ok(vec![None])
    }
}

fn check_logits(g: &Graph, op: &'static str, logits: Var, rows: usize) -> Result<(usize, usize)> {
    let s = g.shape(logits);
    if s.len() != 2 || g.dtype(logits) != DType::F32 {
        return Err(Error::shape(op, format!("logits must be F32 [rows, classes], got {s:?}")));
    }
    if s[0] != rows {
        return Err(Error::shape(op, format!("logits {s:?} and targets disagree on the number of rows ({} vs {rows})", s[0])));
    }
    Ok((s[0], s[1]))
}

impl Graph {
    /// Mean cross-entropy of `logits` [B, C] with U32 `labels` [B]; `smoothing` as PyTorch's
    /// `label_smoothing` (target = (1-eps) onehot + eps/C).
    pub fn cross_entropy(&mut self, logits: Var, labels: Var, smoothing: f32) -> Result<Var> {
        if self.dtype(labels) != DType::U32 || self.shape(labels).len() != 1 {
            return Err(Error::shape(
                "cross_entropy",
                format!("labels must be U32 [rows], got {:?} {:?}", self.dtype(labels), self.shape(labels)),
            ));
        }
        let rows = self.shape(labels)[0];
        check_logits(self, "cross_entropy", logits, rows)?;
        let shape = self.shape(logits).to_vec();
        let op = CrossEntropyOp { smoothing, soft: false };
        Ok(self.add_node(Arc::new(op), &[logits, labels], &[(vec![1], DType::F32), (shape, DType::F32)])?[0])
    }

    /// Mean cross-entropy with soft targets [B, C] (probabilities), optionally smoothed.
    pub fn cross_entropy_soft(&mut self, logits: Var, targets: Var, smoothing: f32) -> Result<Var> {
        let rows = self.shape(targets)[0];
        let (_, cols) = check_logits(self, "cross_entropy_soft", logits, rows)?;
        if self.shape(targets) != [rows, cols] || self.dtype(targets) != DType::F32 {
            return Err(Error::shape(
                "cross_entropy_soft",
                format!("targets {:?} do not match logits {:?}", self.shape(targets), self.shape(logits)),
            ));
        }
        let op = CrossEntropyOp { smoothing, soft: true };
        Ok(self.add_node(Arc::new(op), &[logits, targets], &[(vec![1], DType::F32), (vec![rows, cols], DType::F32)])?[0])
    }

    /// Per-row cross-entropy [B] (no smoothing, no gradient): for evaluation with masks.
    pub fn cross_entropy_rows(&mut self, logits: Var, labels: Var) -> Result<Var> {
        let rows = self.shape(labels)[0];
        check_logits(self, "cross_entropy_rows", logits, rows)?;
        self.push(CeRowsOp, &[logits, labels], vec![rows], DType::F32)
    }

    /// Per-row 1.0 where the label is among the `k` largest logits, else 0.0 ([B], F32).
    pub fn topk_rows(&mut self, logits: Var, labels: Var, k: usize) -> Result<Var> {
        let rows = self.shape(labels)[0];
        check_logits(self, "topk_rows", logits, rows)?;
        self.push(TopKRowsOp { k }, &[logits, labels], vec![rows], DType::F32)
    }

    /// One-hot rows [B, classes] (F32) from U32 labels [B].
    pub fn one_hot(&mut self, labels: Var, classes: usize) -> Result<Var> {
        if self.dtype(labels) != DType::U32 || self.shape(labels).len() != 1 {
            return Err(Error::shape(
                "one_hot",
                format!("labels must be U32 [rows], got {:?} {:?}", self.dtype(labels), self.shape(labels)),
            ));
        }
        let rows = self.shape(labels)[0];
        self.push(OneHotOp, &[labels], vec![rows, classes], DType::F32)
    }

    /// How many rows have their label among the `k` largest logits (shape [1], F32).
    pub fn topk_correct(&mut self, logits: Var, labels: Var, k: usize) -> Result<Var> {
        let rows = self.shape(labels)[0];
        check_logits(self, "topk_correct", logits, rows)?;
        self.push(TopKCorrectOp { k }, &[logits, labels], vec![1], DType::F32)
    }
}
