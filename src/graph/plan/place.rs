//! Where every tensor a plan touches lives: in the store (parameters, state, gradients,
//! pool pages), in plan-owned persistent memory (inputs, constants, kept outputs), or in the
//! arena, where intermediates and scratch share pages by liveness ([`crate::graph::arena`]).
//! A tensor over the storage-binding limit lives in equal pieces ([`super::split`]), each
//! placed like a tensor of its own with the lifetime of the slices that bind it.

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

/// A unit of placed memory: a root var and which of its pieces (0 for a tensor in one piece).
type Mem = (Var, usize);

/// The memory of a plan.
pub(super) struct Placement {
    /// Slot of every touched root var stored in one piece.
    pub(super) slots: HashMap<Var, Slot>,
    /// Slots of the pieces of every root var over the binding limit.
    pub(super) pieces: HashMap<Var, Vec<Slot>>,
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
    /// The memory a binding of a dispatch refers to; a part of a tensor stored whole must
    /// start on an offset the device can bind (`align`).
    pub(super) fn resolve(&self, g: &Graph, b: &Bind, align: u64) -> Result<Slot> {
        let name = |v: Var| g.info(v).name.clone();
        match *b {
            Bind::T(v) => self.slots.get(&g.root(v)).cloned().ok_or_else(|| {
                Error::usage(format!(
                    "tensor '{}' is over the storage-binding limit and stored in pieces: it cannot be bound whole",
                    name(v)
                ))
            }),
            Bind::Scratch(s) => Ok(self.scratch[s].clone()),
            Bind::Part { var, part, parts } => {
                let r = g.root(var);
                if let Some(p) = self.pieces.get(&r) {
                    return p
                        .get(part as usize)
                        .filter(|_| p.len() == parts as usize)
                        .cloned()
                        .ok_or_else(|| Error::usage(format!("tensor '{}' is stored in {} pieces, not {parts}", name(var), p.len())));
                }
                let s = &self.slots[&r];
                let bytes = g.info(r).bytes() / parts as u64;
                let offset = s.offset + bytes * part as u64;
                if offset % align != 0 {
                    return Err(Error::usage(format!(
                        "slice {part} of {parts} of '{}' starts at byte {offset}, not a multiple of the storage-binding offset alignment {align}",
                        name(var)
                    )));
                }
                Ok(Slot { buffer: s.buffer.clone(), offset, bytes })
            }
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
/// allocate the arena and the persistent memory and write the constants. `pieces` gives the
/// number of pieces of each root var over the binding limit. `label` names the plan in GPU
/// error scopes.
pub(super) fn place(
    ctx: &Context,
    g: &Graph,
    store: &Store,
    cmds: &[Cmd],
    scratch: &[Scratch],
    pieces: &HashMap<Var, usize>,
    label: &str,
) -> Result<Placement> {
    let (life, scratch_life) = liveness(g, cmds, scratch.len(), pieces);
    let homes = homes(g, store, &life)?;
    check_sizes(g, &homes, scratch, pieces, page_size(ctx))?;
    allocate(ctx, g, homes, &life, scratch, &scratch_life, pieces, label)
}

/// How many pieces root var `v` is stored in.
fn count(pieces: &HashMap<Var, usize>, v: Var) -> usize {
    pieces.get(&v).copied().unwrap_or(1)
}

/// Lifetimes of the root vars (each piece of one in pieces) and scratch blocks the commands
/// bind. Kept tensors and every input get one even if no command touches them (the host
/// writes inputs whether or not this plan happens to read them); so does unused scratch.
fn liveness(g: &Graph, cmds: &[Cmd], scratch: usize, pieces: &HashMap<Var, usize>) -> (HashMap<Mem, Life>, Vec<Life>) {
    let mut life: HashMap<Mem, Life> = HashMap::new();
    let mut scratch_life: Vec<Life> = vec![(usize::MAX, 0); scratch];
    let touch = |e: &mut Life, i: usize| {
        e.0 = e.0.min(i);
        e.1 = e.1.max(i);
    };
    for (ci, c) in cmds.iter().enumerate() {
        for b in &c.binds {
            match *b {
                Bind::T(v) => touch(life.entry((g.root(v), 0)).or_insert((ci, ci)), ci),
                Bind::Part { var, part, parts } => {
                    let r = g.root(var);
                    let p = if count(pieces, r) == parts as usize { part as usize } else { 0 };
                    touch(life.entry((r, p)).or_insert((ci, ci)), ci)
                }
                Bind::Scratch(s) => touch(&mut scratch_life[s], ci),
            }
        }
    }
    let kept = g.kept.iter().map(|&v| g.root(v));
    let inputs = (0..g.tensors.len() as u32).map(Var).filter(|&v| matches!(g.info(v).source, Source::Input { .. }));
    for v in kept.chain(inputs) {
        for p in 0..count(pieces, v) {
            life.entry((v, p)).or_insert((0, 0));
        }
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
fn homes(g: &Graph, store: &Store, life: &HashMap<Mem, Life>) -> Result<Homes> {
    let grad_of: HashMap<Var, &Param> = g.param_grads.iter().map(|(p, v)| (g.root(*v), p)).collect();
    let kept: HashSet<Var> = g.kept.iter().map(|&v| g.root(v)).collect();
    let mut h = Homes { slots: HashMap::new(), arena_vars: Vec::new(), io_vars: Vec::new() };
    let mut vars: Vec<Var> = life.keys().map(|m| m.0).collect();
    vars.sort();
    vars.dedup();
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

/// No plan-owned tensor (piece) or scratch block may exceed one storage binding (`page` bytes).
fn check_sizes(g: &Graph, h: &Homes, scratch: &[Scratch], pieces: &HashMap<Var, usize>, page: u64) -> Result<()> {
    let too_large = |tensor: String, bytes: u64| Error::TooLarge { tensor, bytes, limit_name: "max storage binding size", limit: page };
    for &v in h.arena_vars.iter().chain(&h.io_vars) {
        let info = g.info(v);
        if info.bytes() / count(pieces, v) as u64 > page {
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
#[allow(clippy::too_many_arguments)]
fn allocate(
    ctx: &Context,
    g: &Graph,
    homes: Homes,
    life: &HashMap<Mem, Life>,
    scratch: &[Scratch],
    scratch_life: &[Life],
    pieces: &HashMap<Var, usize>,
    label: &str,
) -> Result<Placement> {
    let (align, page) = (ctx.offset_align(), page_size(ctx));
    let Homes { mut slots, arena_vars, io_vars } = homes;
    let mems = |vars: &[Var]| -> Vec<Mem> { vars.iter().flat_map(|&v| (0..count(pieces, v)).map(move |p| (v, p))).collect() };
    let mem_bytes = |(v, _): Mem| g.info(v).bytes() / count(pieces, v) as u64;
    let (arena_mems, io_mems) = (mems(&arena_vars), mems(&io_vars));
    let mut blocks: Vec<Block> = arena_mems
        .iter()
        .map(|&m| {
            // A piece no slice binds is never used: any lifetime will do.
            let (first, last) = life.get(&m).copied().unwrap_or((0, 0));
            Block { bytes: mem_bytes(m), first, last }
        })
        .collect();
    blocks.extend(scratch.iter().zip(scratch_life).map(|((_, bytes, _), &(first, last))| Block { bytes: *bytes, first, last }));
    let naive_bytes: u64 = blocks.iter().map(|b| b.bytes.div_ceil(align) * align).sum();
    let (offsets, arena_pages) = arena::allocate(&blocks, page, align);
    let io_blocks: Vec<Block> = io_mems.iter().map(|&m| Block { bytes: mem_bytes(m), first: 0, last: usize::MAX }).collect();
    let (io_offsets, io_pages) = arena::allocate(&io_blocks, page, align);

    let (arena_bufs, io_bufs) = ctx.scoped(&format!("allocating memory for {label}"), || {
        (make_buffers(ctx, &arena_pages, "arena"), make_buffers(ctx, &io_pages, "io"))
    })?;
    let mut pieced: HashMap<Var, Vec<Slot>> = HashMap::new();
    let mut put = |(v, _): Mem, slot: Slot| {
        if pieces.contains_key(&v) {
            pieced.entry(v).or_default().push(slot);
        } else {
            slots.insert(v, slot);
        }
    };
    let mut scratch_slots = Vec::with_capacity(scratch.len());
    for (i, off) in offsets.iter().enumerate() {
        let slot = Slot { buffer: arena_bufs[(off / page) as usize].clone(), offset: off % page, bytes: blocks[i].bytes };
        match arena_mems.get(i) {
            Some(&m) => put(m, slot),
            None => scratch_slots.push(slot),
        }
    }
    for (i, off) in io_offsets.iter().enumerate() {
        let m = io_mems[i];
        put(m, Slot { buffer: io_bufs[(off / page) as usize].clone(), offset: off % page, bytes: mem_bytes(m) });
    }
    for &v in &io_vars {
        if let Source::Const(bits) = &g.info(v).source {
            let parts = pieced.get(&v).map_or_else(|| std::slice::from_ref(&slots[&v]), |p| p.as_slice());
            let per = bits.len() / parts.len();
            for (s, chunk) in parts.iter().zip(bits.chunks(per.max(1))) {
                ctx.queue.write_buffer(&s.buffer, s.offset, bytemuck::cast_slice(chunk));
            }
        }
    }
    Ok(Placement {
        slots,
        pieces: pieced,
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
pub(super) fn page_size(ctx: &Context) -> u64 {
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
