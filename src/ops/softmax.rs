//! Softmax and log-softmax over the last axis. Kernels in `shaders/softmax.wgsl`.

use crate::error::Result;
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

#[derive(Debug)]
struct SoftmaxOp {
    log: bool,
}

/// (rows, cols) of a last-axis op.
pub(crate) fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap();
    (shape.iter().product::<usize>() / cols, cols)
}

/// Serial (thread per row) or workgroup-per-row variant.
pub(crate) fn row_variant(l: &Lowering, rows: usize, cols: usize) -> bool {
    cols > l.profile().serial_row_max || (cols >= 512 && rows < 1024)
}

fn dispatch_rows(l: &mut Lowering, serial: &'static str, wg: &'static str, rows: usize, cols: usize, log: bool, binds: &[Bind]) {
    let p = Params::new().u(rows).u(cols).u(log as usize).u(0);
    if row_variant(l, rows, cols) {
        l.dispatch_wg_reduce("softmax", wg, p, binds, grid(rows));
    } else {
        l.dispatch("softmax", serial, p, binds, grid_for(rows, 64));
    }
}

/// f64 reference over the last axis.
pub fn softmax_cpu(x: &CpuTensor, log: bool) -> CpuTensor {
    let (rows, cols) = rows_cols(&x.shape);
    let mut out = x.clone();
    for r in 0..rows {
        let row = &x.data[r * cols..(r + 1) * cols];
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        for c in 0..cols {
            out.data[r * cols + c] = if log { row[c] - mx - s.ln() } else { (row[c] - mx).exp() / s };
        }
    }
    out
}

impl Op for SoftmaxOp {
    fn name(&self) -> &'static str {
        if self.log { "log_softmax" } else { "softmax" }
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let y = n.outputs[0].var;
        let shape = n.inputs[0].shape.clone();
        Ok(vec![Some(g.push(SoftmaxGradOp { log: self.log }, &[y, gy], shape, DType::F32)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.inputs[0].shape);
        dispatch_rows(l, "softmax_serial", "softmax_wg", rows, cols, self.log, &[Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var)]);
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        Ok(vec![softmax_cpu(x[0], self.log)])
    }
}

#[derive(Debug)]
struct SoftmaxGradOp {
    log: bool,
}

impl Op for SoftmaxGradOp {
    fn name(&self) -> &'static str {
        "softmax_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, cols) = rows_cols(&n.outputs[0].shape);
        let binds = [Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var), Bind::T(n.outputs[0].var)];
        dispatch_rows(l, "softmax_grad_serial", "softmax_grad_wg", rows, cols, self.log, &binds);
        Ok(())
    }
}

impl Graph {
    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x).to_vec();
        self.push(SoftmaxOp { log: false }, &[x], s, DType::F32)
    }
    /// Log-softmax over the last axis.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x).to_vec();
        self.push(SoftmaxOp { log: true }, &[x], s, DType::F32)
    }
}
