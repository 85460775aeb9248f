//! Tensors over the storage-binding limit. A node whose op can run as slices of its batch
//! (leading) axis ([`crate::graph::Op::batch_split`]) is lowered `k` times over equal
//! slices, each dispatch binding one part of the node's `Rows` tensors; a tensor over the
//! limit lives in `k` pieces of its own (each at most one binding, so no buffer has to hold
//! it whole either). Every node touching such a tensor must split it, and all with the same
//! `k`; a node that cannot is refused with the tensor's name and size. docs/BATCH_SPLIT.md.

use super::place::page_size;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::lower::{BatchSplit, Bind, Lowering, MAX_GROUPS, SplitRole};
use crate::graph::{Graph, NodeRef, Params, TensorDesc, Var};
use std::collections::{HashMap, HashSet};

/// A node lowered as `parts` slices.
pub(super) struct NodeSplit {
    parts: usize,
    split: BatchSplit,
}

/// Which nodes run as slices, and which tensors live in pieces.
#[derive(Default)]
pub(super) struct Splits {
    pub(super) nodes: HashMap<usize, NodeSplit>,
    /// Root var -> the number of equal pieces it is stored in (absent: one).
    pub(super) pieces: HashMap<Var, usize>,
}

const LIMIT: &str = "max storage binding size";

/// Decide the splits of the needed nodes of `g` (nothing for a plan whose tensors all fit).
pub(super) fn plan(ctx: &Context, g: &Graph, needed: &[bool]) -> Result<Splits> {
    let (page, align) = (page_size(ctx), ctx.offset_align());
    let big = |v: Var| g.info(g.root(v)).bytes() > page;
    let too_large = |v: Var, limit_name: &'static str| {
        let r = g.root(v);
        Error::TooLarge { tensor: g.info(r).name.clone(), bytes: g.info(r).bytes(), limit_name, limit: page }
    };
    // The nodes touching a tensor over the limit, with the roles their ops give.
    let mut members: Vec<(usize, NodeRef, BatchSplit)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !needed[i] || n.op.alias_of().is_some() {
            continue;
        }
        let Some(&v) = n.inputs.iter().chain(&n.outputs).find(|&&v| big(v)) else { continue };
        let nref = g.node_ref(i);
        let s = n.op.batch_split(&nref, 1).ok_or_else(|| too_large(v, LIMIT))?;
        check_roles(g, &nref, &s, n.op.name())?;
        if let Some((t, _)) = roles(&nref, &s).find(|(t, r)| *r != SplitRole::Rows && big(t.var)) {
            return Err(too_large(t.var, LIMIT));
        }
        members.push((i, nref, s));
    }
    let mut splits = Splits::default();
    if members.is_empty() {
        return Ok(splits);
    }
    // Nodes sharing a big tensor must cut it alike: union them.
    let mut parent: Vec<usize> = (0..members.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut owner: HashMap<Var, usize> = HashMap::new();
    for (m, (_, nref, _)) in members.iter().enumerate() {
        for t in nref.inputs.iter().chain(&nref.outputs).filter(|t| big(t.var)) {
            let o = *owner.entry(g.root(t.var)).or_insert(m);
            let (a, b) = (find(&mut parent, m), find(&mut parent, o));
            parent[a] = b;
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for m in 0..members.len() {
        groups.entry(find(&mut parent, m)).or_default().push(m);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort();
    for group in groups {
        let k = choose_parts(g, &members, &group, page, align)
            .map_err(|v| too_large(v, "max storage binding size, and its batch cannot be cut into equal slices that fit"))?;
        for &m in &group {
            let (i, nref, first) = &members[m];
            let op = &g.nodes[*i].op;
            let split = op
                .batch_split(nref, k)
                .filter(|s| s.inputs == first.inputs && s.outputs == first.outputs)
                .ok_or_else(|| Error::usage(format!("{} (node {i}) changed its batch split when asked for {k} parts", op.name())))?;
            for t in nref.inputs.iter().chain(&nref.outputs).filter(|t| big(t.var)) {
                splits.pieces.insert(g.root(t.var), k);
            }
            splits.nodes.insert(*i, NodeSplit { parts: k, split });
        }
    }
    Ok(splits)
}

/// Each tensor of `n` with its role.
fn roles<'a>(n: &'a NodeRef, s: &'a BatchSplit) -> impl Iterator<Item = (&'a TensorDesc, SplitRole)> {
    n.inputs.iter().zip(s.inputs.iter().copied()).chain(n.outputs.iter().zip(s.outputs.iter().copied()))
}

/// A role per tensor, `Whole` only for inputs, `Sum` only for outputs, and no memory in two roles.
fn check_roles(g: &Graph, n: &NodeRef, s: &BatchSplit, op: &str) -> Result<()> {
    let bad = |why: &str| Error::usage(format!("{op} (node {}): invalid batch split: {why}", n.index));
    if s.inputs.len() != n.inputs.len() || s.outputs.len() != n.outputs.len() {
        return Err(bad("one role per input and output"));
    }
    if s.inputs.contains(&SplitRole::Sum) || s.outputs.contains(&SplitRole::Whole) {
        return Err(bad("Whole is for inputs, Sum for outputs"));
    }
    let mut seen: HashMap<Var, SplitRole> = HashMap::new();
    for (t, r) in roles(n, s) {
        if *seen.entry(g.root(t.var)).or_insert(r) != r {
            return Err(bad(&format!("'{}' is bound in two roles", g.info(t.var).name)));
        }
    }
    Ok(())
}

/// The smallest slice count that divides the leading axis of every `Rows` tensor of the
/// group (in units), brings each under `page` bytes, and keeps the slices of tensors stored
/// whole on aligned offsets. Err: the largest tensor, when no count does.
fn choose_parts(g: &Graph, members: &[(usize, NodeRef, BatchSplit)], group: &[usize], page: u64, align: u64) -> Result<usize, Var> {
    let mut common = 0usize;
    let mut need = 2u64;
    let mut largest: Option<(u64, Var)> = None;
    let mut whole: Vec<u64> = Vec::new();
    for &m in group {
        let (_, n, s) = &members[m];
        for (t, _) in roles(n, s).filter(|(_, r)| *r == SplitRole::Rows) {
            let bytes = (t.numel() * t.dtype.size()) as u64;
            let lead = t.shape.first().copied().unwrap_or(1);
            if largest.is_none_or(|(b, _)| bytes > b) {
                largest = Some((bytes, t.var));
            }
            common = if lead % s.unit == 0 { gcd(common, lead / s.unit) } else { 1 };
            need = need.max(bytes.div_ceil(page));
            if g.info(g.root(t.var)).bytes() <= page {
                whole.push(bytes);
            }
        }
    }
    let largest = largest.map(|(_, v)| v).expect("a split node has a Rows tensor");
    (need as usize..=common).find(|&k| common % k == 0 && whole.iter().all(|&b| (b / k as u64) % align == 0)).ok_or(largest)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Lower node `i` as its slices: the op on a node whose `Rows` tensors are cut to one slice,
/// once per slice, with the bindings of those tensors rewritten to the slice's part. `Sum`
/// outputs: the first slice writes the output, every later one writes a scratch block that
/// is then added into it.
pub(super) fn lower_node(g: &Graph, i: usize, s: &NodeSplit, low: &mut Lowering) -> Result<()> {
    let n = g.node_ref(i);
    let k = s.parts;
    let cut = |ts: &[TensorDesc], rs: &[SplitRole]| -> Vec<TensorDesc> {
        ts.iter()
            .zip(rs)
            .map(|(t, r)| {
                let mut t = t.clone();
                if *r == SplitRole::Rows {
                    t.shape[0] /= k;
                }
                t
            })
            .collect()
    };
    let slice = NodeRef { index: i, inputs: cut(&n.inputs, &s.split.inputs), outputs: cut(&n.outputs, &s.split.outputs) };
    let op = s.split.op.clone().unwrap_or_else(|| g.nodes[i].op.clone());
    let rows: HashSet<Var> = roles(&n, &s.split).filter(|(_, r)| *r == SplitRole::Rows).map(|(t, _)| g.root(t.var)).collect();
    let mut sums: Vec<(Var, usize, Bind)> = Vec::new();
    for (t, _) in n.outputs.iter().zip(&s.split.outputs).filter(|(_, r)| **r == SplitRole::Sum) {
        let len = t.numel();
        if len.div_ceil(64) as u64 > MAX_GROUPS {
            return Err(Error::usage(format!(
                "{} (node {i}): the partial sums of '{}' ({len} elements) are too many for one accumulate dispatch",
                op.name(),
                g.info(t.var).name
            )));
        }
        sums.push((t.var, len, low.scratch(len, &format!("partial sums of '{}'", g.info(t.var).name))));
    }
    for j in 0..k {
        let start = low.cmds.len();
        op.lower(&slice, low)?;
        for c in &mut low.cmds[start..] {
            for b in &mut c.binds {
                let Bind::T(v) = *b else { continue };
                let r = g.root(v);
                if rows.contains(&r) {
                    *b = Bind::Part { var: v, part: j as u32, parts: k as u32 };
                } else if let Some(&(_, _, p)) = sums.iter().find(|(o, ..)| g.root(*o) == r).filter(|_| j > 0) {
                    *b = p;
                }
            }
        }
        if j > 0 {
            for &(o, len, p) in &sums {
                let params = Params::new().u(len).u(0).u(0).u(0);
                low.dispatch("elementwise", "accumulate", params, &[Bind::T(o), p], [len.div_ceil(64) as u32, 1, 1]);
            }
        }
    }
    Ok(())
}
