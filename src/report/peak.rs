//! The adapter's f32 peak: the vendor's figure where this file knows the adapter, and always
//! a measurement with a multiply-add kernel (`shaders/peak.wgsl`) that keeps the ALUs busy
//! without touching memory. Percentages of peak use the published figure when there is one.

use crate::error::Result;
use crate::gpu::Context;
use crate::graph::lower::grid;
use crate::graph::{Bind, DType, Graph, Lowering, NodeRef, Op, Params, Plan};
use crate::store::Store;
use std::sync::Arc;

/// Published f32 (non-tensor-core) peaks, GFLOP/s, boost clock: (name fragment, figure, source).
const PUBLISHED: &[(&str, f64, &str)] = &[
    ("H200", 67_000.0, "NVIDIA H200 datasheet (SXM, FP32 67 TFLOPS)"),
    ("H100", 67_000.0, "NVIDIA H100 datasheet (SXM, FP32 67 TFLOPS)"),
    ("A100", 19_500.0, "NVIDIA A100 datasheet (FP32 19.5 TFLOPS)"),
    ("L4", 30_300.0, "NVIDIA L4 datasheet (FP32 30.3 TFLOPS)"),
    ("T4", 8_100.0, "NVIDIA T4 datasheet (FP32 8.1 TFLOPS)"),
    ("RTX 4090", 82_600.0, "NVIDIA Ada whitepaper (RTX 4090, FP32 82.6 TFLOPS)"),
];

/// One dispatch of `peak_fma` over `threads` threads, `iters` rounds each.
#[derive(Debug)]
struct PeakOp {
    iters: usize,
}

impl Op for PeakOp {
    fn name(&self) -> &'static str {
        "peak_fma"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let threads = n.outputs[0].numel();
        l.dispatch("peak", "peak_fma", Params::new().u(self.iters).u(1).u(0).u(0), &[Bind::T(n.outputs[0].var)], grid(threads / 256));
        Ok(())
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        (n.outputs[0].numel() * self.iters * 64) as u64
    }
}

/// GFLOP/s of the peak kernel at `threads` x `iters`.
fn measure(ctx: &Context, threads: usize, iters: usize) -> Result<(f64, f64)> {
    let mut g = Graph::new();
    let out = g.add_node(Arc::new(PeakOp { iters }), &[], &[(vec![threads], DType::F32)])?[0];
    g.keep(out);
    let flops = g.flops() as f64;
    let plan = Plan::compile(ctx, &g, &mut Store::new(0), "peak f32")?;
    let s = crate::bench::time_plan(ctx, &plan, 1, 3)?;
    Ok((flops / s / 1e9, s))
}

/// (GFLOP/s for percentages, where the figure comes from). The measured figure is always
/// in the source text.
pub fn peak(ctx: &Context, smoke: bool) -> Result<(Option<f64>, String)> {
    // Enough threads to fill a large GPU (about a million), fewer on software adapters.
    let threads = if smoke || ctx.adapter.software { 256 * 64 } else { 256 * 4096 };
    let mut iters = 64;
    let (mut gflops, mut secs) = measure(ctx, threads, iters)?;
    // Lengthen the loop until one run takes long enough to time (or the smoke cap).
    while secs < 0.02 && iters < (if smoke { 256 } else { 1 << 16 }) {
        iters *= 4;
        (gflops, secs) = measure(ctx, threads, iters)?;
    }
    let measured = format!("measured {gflops:.0} GFLOP/s with the multiply-add kernel ({threads} threads x {iters} rounds)");
    let name = ctx.adapter.name.to_uppercase();
    match PUBLISHED.iter().find(|(k, _, _)| name.contains(&k.to_uppercase())) {
        Some((_, fig, src)) => Ok((Some(*fig), format!("{fig:.0} GFLOP/s published: {src}; {measured}"))),
        None => Ok((Some(gflops), format!("no published figure known for this adapter; {measured}"))),
    }
}
