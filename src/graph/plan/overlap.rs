//! WebGPU forbids two storage bindings of one dispatch to overlap when either is writable, and
//! all of ours are `read_write` (see [`crate::graph::lower`]). Browsers reject such a
//! dispatch while native wgpu lets it through, so the plan compiler avoids the cases it can
//! (a tensor read twice gets a copy) and reports the rest, on every platform, with the op's name.

use super::Slot;
use super::place::Scratch;
use crate::error::{Error, Result};
use crate::gpu::{BindingKind, KernelKey};
use crate::graph::lower::{Bind, Cmd, grid_for};
use crate::graph::{Graph, Params, Var};
use crate::tensor::MAX_RANK;

/// Takes the lowered dispatches and gives them back with a copy before each that reads one
/// tensor through two bindings (`x @ x^T`, `x * x`): the later binding reads the copy, a new
/// scratch block. Ops that write an input in place are left alone: their bindings must
/// already be distinct ([`check_overlap`] says so if not).
pub(super) fn copy_repeated_reads(g: &Graph, cmds: Vec<Cmd>, scratch: &mut Vec<Scratch>) -> Vec<Cmd> {
    let mut out = Vec::with_capacity(cmds.len());
    for mut c in cmds {
        if g.nodes[c.node].op.writes().is_empty() {
            for j in 1..c.binds.len() {
                let Some((v, part, parts)) = tensor_part(c.binds[j]) else { continue };
                let root = g.root(v);
                let same = |b: &Bind| tensor_part(*b).is_some_and(|(u, p, k)| g.root(u) == root && (p, k) == (part, parts));
                if !c.binds[..j].iter().any(same) {
                    continue;
                }
                // Only inputs are read: an output bound twice is a placeholder mistake, which
                // the overlap check reports (a copy would swallow the writes).
                if g.nodes[c.node].outputs.iter().any(|&o| g.root(o) == root) {
                    continue;
                }
                let info = g.info(v);
                let n = info.numel() / parts as usize;
                scratch.push((c.node, info.bytes() / parts as u64, format!("copy of '{}'", info.name)));
                let copy = Bind::Scratch(scratch.len() - 1);
                let mut key = KernelKey::new("layout", "gather");
                key.bindings = vec![(0, BindingKind::Uniform), (1, BindingKind::ReadWrite), (2, BindingKind::ReadWrite)];
                let params = Params::new().u(n).u(1).u(0).u(0).arr(&[n], MAX_RANK).arr(&[1], MAX_RANK).0;
                out.push(Cmd { node: c.node, key, params, binds: vec![c.binds[j], copy], groups: grid_for(n, 256) });
                c.binds[j] = copy;
            }
        }
        out.push(c);
    }
    out
}

/// Takes the memory each storage binding of dispatch `c` resolves to; fails, naming the
/// kernel and the op, if two of them overlap.
pub(super) fn check_overlap(g: &Graph, c: &Cmd, bound: &[Slot]) -> Result<()> {
    for i in 0..bound.len() {
        for j in i + 1..bound.len() {
            let (a, b) = (&bound[i], &bound[j]);
            if a.buffer == b.buffer && a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes {
                return Err(Error::usage(format!(
                    "{}::{} for {} binds overlapping memory at bindings {} and {}; WebGPU forbids aliasing \
                     writable storage bindings within one dispatch (browsers reject it): bind a distinct buffer",
                    c.key.shader,
                    c.key.entry,
                    g.nodes[c.node].op.name(),
                    i + 1,
                    j + 1
                )));
            }
        }
    }
    Ok(())
}

/// The tensor a binding names, with which of how many equal parts (0 of 1: all of it).
fn tensor_part(b: Bind) -> Option<(Var, u32, u32)> {
    match b {
        Bind::T(v) => Some((v, 0, 1)),
        Bind::Part { var, part, parts } => Some((var, part, parts)),
        Bind::Scratch(_) => None,
    }
}
