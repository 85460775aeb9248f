//! Where every tensor a plan touches lives: in the store (parameters, state, gradients,
//! pool pages), in plan-owned persistent memory (inputs, constants, kept outputs), or in the
//! arena, where intermediates and scratch share pages by liveness ([`crate::graph::arena`]).

use super::Slot;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::arena::{self, Block};
use crate::graph::lower::{Bind, Cmd};
use crate::graph::{Graph, Source, Var};
use crate::store::{Param, Store, Which};
use std::collections::{HashMap, HashSet};

/// Scratch memory a node asked for while lowering: (node, bytes, name).
pub(super) type Scratch = (usize, u64, String);

/// First and last command that touch a tensor (or scratch block).
type Life = (usize, usize);

/// The memory of a plan.
pub(super) struct Placement {
    /// Slot of every touched root var.
    pub(super) slots: HashMap<Var, Slot>,
    /// Slot of every scratch block, by index.
    pub(super) scratch: Vec<Slot>,
    /// Vars in plan-owned persistent memory (inputs, constants, kept outputs), in var order.
    pub(super) io_vars: Vec<Var>,
    pub(super) arena_bufs: Vec<wgpu::Buffer>,
    pub(super) io_bufs: Vec<wgpu::Buffer>,
    pub(super) arena_bytes: u64,
    /// What the arena would take without reuse.
    pub(super) naive_bytes: u64,
    pub(super) io_bytes: u64,
}

impl Placement {
    /// The memory a binding of a dispatch refers to.
    pub(super) fn resolve(&self, g: &Graph, b: &Bind) -> &Slot {
        match *b {
            Bind::T(v) => &self.slots[&g.root(v)],
            Bind::Scratch(s) => &self.scratch[s],
        }
    }
}

/// Tensors of a plan sorted by where they will live; store-backed ones already have a slot.
struct Homes {
    slots: HashMap<Var, Slot>,
    arena_vars: Vec<Var>,
    io_vars: Vec<Var>,
}

/// Place every tensor and scratch block that `cmds` touch, plus every input and kept tensor;
/// allocate the arena and the persistent memory and write the constants. `label` names the
/// plan in GPU error scopes.
pub(super) fn place(ctx: &Context, g: &Graph, store: &Store, cmds: &[Cmd], scratch: &[Scratch], label: &str) -> Result<Placement> {
    let (life, scratch_life) = liveness(g, cmds, scratch.len());
    let homes = homes(g, store, &life)?;
    check_sizes(g, &homes, scratch, page_size(ctx))?;
    allocate(ctx, g, homes, &life, scratch, &scratch_life, label)
}

/// Lifetimes of the root vars and scratch blocks the commands bind. Kept tensors and every
/// input get one even if no command touches them (the host writes inputs whether or not this
/// plan happens to read them); so does unused scratch.
fn liveness(g: &Graph, cmds: &[Cmd], scratch: usize) -> (HashMap<Var, Life>, Vec<Life>) {
    let mut life: HashMap<Var, Life> = HashMap::new();
    let mut scratch_life: Vec<Life> = vec![(usize::MAX, 0); scratch];
    let touch = |e: &mut Life, i: usize| {
        e.0 = e.0.min(i);
        e.1 = e.1.max(i);
    };
    for (ci, c) in cmds.iter().enumerate() {
        for b in &c.binds {
            match *b {
                Bind::T(v) => touch(life.entry(g.root(v)).or_insert((ci, ci)), ci),
                Bind::Scratch(s) => touch(&mut scratch_life[s], ci),
            }
        }
    }
    let kept = g.kept.iter().map(|&v| g.root(v));
    let inputs = (0..g.tensors.len() as u32).map(Var).filter(|&v| matches!(g.info(v).source, Source::Input { .. }));
    for v in kept.chain(inputs) {
        life.entry(v).or_insert((0, 0));
    }
    for l in &mut scratch_life {
        if l.0 == usize::MAX {
            *l = (0, 0);
        }
    }
    (life, scratch_life)
}

/// Sort the live vars (in var order) by home: the store's memory for parameters, state, pool
/// pages and parameter gradients; plan-owned persistent memory for inputs, constants and kept
/// outputs; the arena for every other intermediate.
fn homes(g: &Graph, store: &Store, life: &HashMap<Var, Life>) -> Result<Homes> {
    let grad_of: HashMap<Var, &Param> = g.param_grads.iter().map(|(p, v)| (g.root(*v), p)).collect();
    let kept: HashSet<Var> = g.kept.iter().map(|&v| g.root(v)).collect();
    let mut h = Homes { slots: HashMap::new(), arena_vars: Vec::new(), io_vars: Vec::new() };
    let mut vars: Vec<Var> = life.keys().copied().collect();
    vars.sort();
    for v in vars {
        let stored = match &g.info(v).source {
            Source::Param(p) => Some(store.param_binding(p, Which::Value)?),
            Source::State(s) => Some(store.state_binding(s)?),
            Source::Pool { pool, page } => {
                let pages = store.pages(pool.which())?;
                let (buffer, bytes) = pages.get(*page).cloned().ok_or_else(|| Error::usage(format!("{pool:?} has no page {page}")))?;
                h.slots.insert(v, Slot { buffer, offset: 0, bytes: bytes.max(4) });
                None
            }
            Source::Input { .. } | Source::Const(_) => {
                h.io_vars.push(v);
                None
            }
            Source::Node(_) if grad_of.contains_key(&v) => Some(store.param_binding(grad_of[&v], Which::Grad)?),
            Source::Node(_) if kept.contains(&v) => {
                h.io_vars.push(v);
                None
            }
            Source::Node(_) => {
                h.arena_vars.push(v);
                None
            }
        };
        if let Some((buffer, l)) = stored {
            h.slots.insert(v, Slot { buffer, offset: l.offset, bytes: l.bytes });
        }
    }
    Ok(h)
}

/// No plan-owned tensor or scratch block may exceed one storage binding (`page` bytes).
fn check_sizes(g: &Graph, h: &Homes, scratch: &[Scratch], page: u64) -> Result<()> {
    let too_large = |tensor: String, bytes: u64| Error::TooLarge { tensor, bytes, limit_name: "max storage binding size", limit: page };
    for &v in h.arena_vars.iter().chain(&h.io_vars) {
        let info = g.info(v);
        if info.bytes() > page {
            return Err(too_large(info.name.clone(), info.bytes()));
        }
    }
    for (_, bytes, nm) in scratch {
        if *bytes > page {
            return Err(too_large(format!("scratch '{nm}'"), *bytes));
        }
    }
    Ok(())
}

/// Lay out the arena (intermediates, then scratch, sharing pages by liveness) and the
/// persistent memory (alive for the whole plan), create their buffers, and write the
/// constants once.
fn allocate(
    ctx: &Context,
    g: &Graph,
    homes: Homes,
    life: &HashMap<Var, Life>,
    scratch: &[Scratch],
    scratch_life: &[Life],
    label: &str,
) -> Result<Placement> {
    let (align, page) = (ctx.offset_align(), page_size(ctx));
    let Homes { mut slots, arena_vars, io_vars } = homes;
    let mut blocks: Vec<Block> = arena_vars
        .iter()
        .map(|&v| {
            let (first, last) = life[&v];
            Block { bytes: g.info(v).bytes(), first, last }
        })
        .collect();
    blocks.extend(scratch.iter().zip(scratch_life).map(|((_, bytes, _), &(first, last))| Block { bytes: *bytes, first, last }));
    let naive_bytes: u64 = blocks.iter().map(|b| b.bytes.div_ceil(align) * align).sum();
    let (offsets, arena_pages) = arena::allocate(&blocks, page, align);
    let io_blocks: Vec<Block> = io_vars.iter().map(|&v| Block { bytes: g.info(v).bytes(), first: 0, last: usize::MAX }).collect();
    let (io_offsets, io_pages) = arena::allocate(&io_blocks, page, align);

    let (arena_bufs, io_bufs) = ctx.scoped(&format!("allocating memory for {label}"), || {
        (make_buffers(ctx, &arena_pages, "arena"), make_buffers(ctx, &io_pages, "io"))
    })?;
    let mut scratch_slots = Vec::with_capacity(scratch.len());
    for (i, off) in offsets.iter().enumerate() {
        let slot = Slot { buffer: arena_bufs[(off / page) as usize].clone(), offset: off % page, bytes: blocks[i].bytes };
        if i < arena_vars.len() {
            slots.insert(arena_vars[i], slot);
        } else {
            scratch_slots.push(slot);
        }
    }
    for (i, off) in io_offsets.iter().enumerate() {
        let v = io_vars[i];
        slots.insert(v, Slot { buffer: io_bufs[(off / page) as usize].clone(), offset: off % page, bytes: g.info(v).bytes() });
    }
    for &v in &io_vars {
        if let Source::Const(bits) = &g.info(v).source {
            let s = &slots[&v];
            ctx.queue.write_buffer(&s.buffer, s.offset, bytemuck::cast_slice(bits));
        }
    }
    Ok(Placement {
        slots,
        scratch: scratch_slots,
        io_vars,
        arena_bufs,
        io_bufs,
        arena_bytes: arena_pages.iter().sum(),
        naive_bytes,
        io_bytes: io_pages.iter().sum(),
    })
}

/// A page of plan memory: the largest storage binding, rounded down to the binding-offset
/// alignment (a tensor never straddles two pages).
fn page_size(ctx: &Context) -> u64 {
    ctx.max_binding() / ctx.offset_align() * ctx.offset_align()
}

fn make_buffers(ctx: &Context, sizes: &[u64], label: &str) -> Vec<wgpu::Buffer> {
    sizes
        .iter()
        .map(|&s| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: s.max(16).div_ceil(16) * 16,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .collect()
}
