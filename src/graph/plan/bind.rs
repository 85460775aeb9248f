//! The GPU objects of each dispatch, created once: one uniform buffer holding every
//! dispatch's parameter block, the pipelines, and a bind group per dispatch over the memory
//! [`super::place`] chose.

use super::CompiledCmd;
use super::overlap::check_overlap;
use super::place::Placement;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::graph::Graph;
use crate::graph::lower::{Cmd, MAX_GROUPS};
use std::collections::HashSet;

/// The dispatches of a plan, ready to record.
pub(super) struct Bound {
    pub(super) cmds: Vec<CompiledCmd>,
    /// `op:entry` of each dispatch.
    pub(super) labels: Vec<String>,
    /// Scoped name of each dispatch's node's first output.
    pub(super) scopes: Vec<String>,
    /// `family::entry` of each dispatch (families that share a source differ only here).
    pub(super) kernels: Vec<String>,
    /// Distinct pipelines used.
    pub(super) pipelines: usize,
    /// Kept alive for the bind groups.
    pub(super) uniforms: wgpu::Buffer,
}

/// Takes the lowered dispatches and the memory placed for them; gives each its pipeline and
/// bind group (uniform block at binding 0, its tensors from binding 1), after checking its
/// workgroup count and that no two of its bindings overlap.
pub(super) fn bind(ctx: &Context, g: &Graph, cmds: &[Cmd], placed: &Placement) -> Result<Bound> {
    let (uniforms, offsets) = uniforms(ctx, cmds);
    let mut out =
        Bound { cmds: Vec::with_capacity(cmds.len()), labels: Vec::new(), kernels: Vec::new(), scopes: Vec::new(), pipelines: 0, uniforms };
    let mut keys = HashSet::new();
    for (c, &uoff) in cmds.iter().zip(&offsets) {
        out.cmds.push(bind_one(ctx, g, c, placed, &out.uniforms, uoff)?);
        keys.insert(c.key.clone());
        let op = g.nodes[c.node].op.name();
        out.labels.push(format!("{op}:{}", c.key.entry));
        out.kernels.push(format!("{}::{}", c.key.shader, c.key.entry));
        out.scopes.push(g.nodes[c.node].outputs.first().map(|v| g.tensors[v.index()].name.clone()).unwrap_or_default());
    }
    out.pipelines = keys.len();
    Ok(out)
}

/// Bytes of a dispatch's uniform binding: its parameter words, at least 16 and a multiple of
/// 16 (WGSL uniform structs are 16-byte aligned).
fn uniform_len(params: &[u32]) -> u64 {
    (params.len() as u64 * 4).max(16).div_ceil(16) * 16
}

/// One uniform buffer with every dispatch's parameter block at an offset aligned as the
/// device requires, written once; gives the buffer and each dispatch's offset.
fn uniforms(ctx: &Context, cmds: &[Cmd]) -> (wgpu::Buffer, Vec<u64>) {
    let ualign = ctx.limits.min_uniform_buffer_offset_alignment as u64;
    let mut bytes: Vec<u8> = Vec::new();
    let mut offsets = Vec::with_capacity(cmds.len());
    for c in cmds {
        let off = (bytes.len() as u64).div_ceil(ualign) * ualign;
        bytes.resize(off as usize, 0);
        offsets.push(off);
        bytes.extend_from_slice(bytemuck::cast_slice(&c.params));
        bytes.resize((off + uniform_len(&c.params)) as usize, 0);
    }
    let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("uniforms"),
        size: (bytes.len() as u64).max(16),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&buf, 0, &bytes);
    (buf, offsets)
}

/// The pipeline and bind group of dispatch `c`, whose parameter block is at `uoff` in `ubuf`.
fn bind_one(ctx: &Context, g: &Graph, c: &Cmd, placed: &Placement, ubuf: &wgpu::Buffer, uoff: u64) -> Result<CompiledCmd> {
    let Cmd { key, params, binds, groups, node } = c;
    if groups.iter().any(|&n| n as u64 > MAX_GROUPS) {
        return Err(Error::usage(format!("{}::{} dispatches {groups:?} workgroups, over the limit of 65535", key.shader, key.entry)));
    }
    let pipeline = ctx.pipeline(key)?;
    let layout = ctx.bind_layout(key);
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: ubuf,
            offset: uoff,
            size: std::num::NonZeroU64::new(uniform_len(params)),
        }),
    }];
    let bound = binds.iter().map(|b| placed.resolve(g, b, ctx.offset_align())).collect::<Result<Vec<_>>>()?;
    check_overlap(g, c, &bound)?;
    for (bi, s) in bound.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: bi as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &s.buffer,
                offset: s.offset,
                size: std::num::NonZeroU64::new(s.bytes.div_ceil(4) * 4),
            }),
        });
    }
    let bind_group = ctx.scoped(&format!("binding {}::{} for {}", key.shader, key.entry, g.nodes[*node].op.name()), || {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(key.entry), layout: &layout, entries: &entries })
    })?;
    Ok(CompiledCmd { pipeline, bind_group, groups: *groups })
}
