//! `Plan::compile`: the phases in order. Dead-code elimination and lowering are here; where
//! tensors live is [`super::place`], the GPU objects of each dispatch are [`super::bind`].

use super::bind::{self, Bound};
use super::overlap::copy_repeated_reads;
use super::place::{self, Placement, Scratch};
use super::split::{self, Splits};
use super::{Plan, PlanStats, Slot};
use crate::error::Result;
use crate::gpu::Context;
use crate::graph::lower::{Cmd, Lowering};
use crate::graph::{Graph, Source, Var};
use crate::store::Store;
use std::collections::{HashMap, HashSet};

impl Plan {
    /// Compile `graph` against `store` (uploaded to the GPU first if needed).
    pub fn compile(ctx: &Context, graph: &Graph, store: &mut Store, name: &str) -> Result<Plan> {
        store.upload(ctx)?;
        let g = graph;
        let label = format!("plan {name}");
        let needed = needed_nodes(g);
        let splits = split::plan(ctx, g, &needed)?;
        let (cmds, scratch) = lower(ctx, g, &needed, &splits)?;
        let placed = place::place(ctx, g, store, &cmds, &scratch, &splits.pieces, &label)?;
        let Bound { cmds: compiled, labels, kernels, scopes, pipelines, uniforms } = bind::bind(ctx, g, &cmds, &placed)?;
        let Placement { slots, pieces, io_vars, arena_bufs, io_bufs, arena_bytes, naive_bytes, io_bytes, .. } = placed;

        let inputs =
            io_vars.iter().filter(|&&v| matches!(g.info(v).source, Source::Input { .. })).map(|&v| (g.info(v).name.clone(), v)).collect();
        let stats = PlanStats {
            nodes: needed.iter().filter(|&&n| n).count(),
            dispatches: compiled.len(),
            arena_bytes,
            naive_bytes,
            io_bytes,
            pipelines,
        };
        let (slots, pieces) = host_slots(g, &slots, &pieces);
        ctx.check(&format!("compiling {label}"))?;
        let state_vars = (0..g.tensors.len() as u32)
            .map(Var)
            .filter_map(|v| match &g.info(v).source {
                Source::State(s) if slots.contains_key(&v) => Some((s.id(), v)),
                _ => None,
            })
            .collect();
        Ok(Plan {
            state_vars,
            ctx: ctx.clone(),
            name: name.to_string(),
            cmds: compiled,
            slots,
            pieces,
            infos: g.tensors.clone(),
            inputs,
            stats,
            cmd_labels: labels,
            cmd_kernels: kernels,
            cmd_scopes: scopes,
            _arena: arena_bufs,
            _io: io_bufs,
            _uniforms: uniforms,
        })
    }
}

/// Dead-code elimination: per node, whether the plan runs it. A node is needed when it writes
/// state in place or feeds a kept tensor or a parameter gradient, directly or not.
fn needed_nodes(g: &Graph) -> Vec<bool> {
    let mut wanted: HashSet<Var> = g.kept.iter().copied().collect();
    wanted.extend(g.param_grads.iter().map(|(_, v)| *v));
    let mut needed = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if !n.op.writes().is_empty() || n.outputs.iter().any(|o| wanted.contains(o)) {
            needed[i] = true;
            wanted.extend(n.inputs.iter().copied());
        }
    }
    needed
}

/// Lower the needed nodes in graph order (aliases such as reshape emit nothing; nodes over
/// the binding limit run as batch slices): the dispatches, with a copy before any that reads
/// one tensor through two bindings, and the scratch memory they ask for.
fn lower(ctx: &Context, g: &Graph, needed: &[bool], splits: &Splits) -> Result<(Vec<Cmd>, Vec<Scratch>)> {
    let mut low = Lowering::new(ctx);
    for (i, n) in g.nodes.iter().enumerate() {
        if needed[i] && n.op.alias_of().is_none() {
            low.node = i;
            match splits.nodes.get(&i) {
                Some(s) => split::lower_node(g, i, s, &mut low)?,
                None => n.op.lower(&g.node_ref(i), &mut low)?,
            }
        }
    }
    let Lowering { cmds, mut scratch, .. } = low;
    let cmds = copy_repeated_reads(g, cmds, &mut scratch);
    Ok((cmds, scratch))
}

/// Every var the host may address, from the memory of the root vars (a slot, or the pieces
/// of a tensor over the binding limit): an alias (reshape) shares its root's memory under
/// its own size.
type HostSlots = (HashMap<Var, Slot>, HashMap<Var, Vec<Slot>>);
fn host_slots(g: &Graph, slots: &HashMap<Var, Slot>, pieces: &HashMap<Var, Vec<Slot>>) -> HostSlots {
    let mut all = HashMap::new();
    let mut pieced = HashMap::new();
    for v in (0..g.tensors.len() as u32).map(Var) {
        if let Some(s) = slots.get(&g.root(v)) {
            let bytes = g.info(v).bytes();
            all.insert(v, Slot { bytes, ..s.clone() });
        } else if let Some(p) = pieces.get(&g.root(v)) {
            pieced.insert(v, p.clone());
        }
    }
    (all, pieced)
}
