//! Texture writers: compute kernels (`shaders/embed.wgsl`) that turn a tensor already on the
//! GPU into pixels of a host's `rgba8unorm` storage texture, with a colour map. They are not
//! plan ops and never read anything back to the CPU.
//!
//! A [`Panel`] is prepared once (pipelines, uniforms and bind groups are created then) for a
//! (tensor view, [`Layout`], [`Style`], texture, [`Rect`]) and recorded into any encoder each
//! frame with [`Panel::encode`]: one compute pass of one or two dispatches (a min/max
//! reduction when the range is automatic, then one thread per texel).

use super::TensorView;
use crate::error::{Error, Result};
use crate::gpu::{Context, shader_source};

/// The texture format the writers produce (core WebGPU allows it as a write-only storage
/// texture). Colours are stored sRGB-encoded, as in a PNG file.
pub const TEXTURE_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// Usages a target texture needs: written by the kernels, then sampled or copied by the host.
pub const TEXTURE_USAGE: wgpu::TextureUsages = wgpu::TextureUsages::STORAGE_BINDING;

/// Colour maps (constant tables in `shaders/embed.wgsl`, linear between the stops).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Colormap {
    /// matplotlib's viridis, 10 stops at i/9.
    Viridis,
    /// ColorBrewer RdBu reversed, 11 stops at i/10: blue low, near white at the centre, red
    /// high. Use with [`Style::symmetric`] for signed values.
    Diverging,
    /// Black to white.
    Gray,
}

const VIRIDIS: [[u8; 3]; 10] = [
    [68, 1, 84],
    [72, 40, 120],
    [62, 74, 137],
    [49, 104, 142],
    [38, 130, 142],
    [31, 158, 137],
    [53, 183, 121],
    [109, 205, 89],
    [180, 222, 44],
    [253, 231, 37],
];
const DIVERGING: [[u8; 3]; 11] = [
    [5, 48, 97],
    [33, 102, 172],
    [67, 147, 195],
    [146, 197, 222],
    [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199],
    [244, 165, 130],
    [214, 96, 77],
    [178, 24, 43],
    [103, 0, 31],
];

/// Colour of NaN and infinite values.
pub const BAD_COLOUR: [u8; 3] = [255, 0, 255];

impl Colormap {
    fn index(self) -> u32 {
        match self {
            Colormap::Viridis => 0,
            Colormap::Diverging => 1,
            Colormap::Gray => 2,
        }
    }

    /// The stops (sRGB bytes), evenly spaced over [0, 1].
    pub fn stops(self) -> &'static [[u8; 3]] {
        match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::Diverging => &DIVERGING,
            Colormap::Gray => &[[0, 0, 0], [255, 255, 255]],
        }
    }

    /// CPU reference of the kernel's mapping of `t` in [0, 1] (clamped): linear between stops.
    /// The GPU may differ by one in a channel (rounding of the storage write).
    pub fn sample(self, t: f32) -> [u8; 3] {
        let s = self.stops();
        let u = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let f = u * (s.len() - 1) as f32;
        let i = (f.floor() as usize).min(s.len() - 2);
        let w = f - i as f32;
        let mut out = [0u8; 3];
        for c in 0..3 {
            let v = s[i][c] as f32 * (1.0 - w) + s[i + 1][c] as f32 * w;
            out[c] = v.round().clamp(0.0, 255.0) as u8;
        }
        out
    }
}

/// How values map to [0, 1] before the colour map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// Values outside [lo, hi] are clamped.
    Fixed { lo: f32, hi: f32 },
    /// Minimum and maximum of all shown (finite) values, computed on the GPU each frame.
    Auto,
    /// Like `Auto`, but per tile of a grid (each feature map gets its own contrast).
    AutoPerTile,
}

/// How a panel looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    pub colormap: Colormap,
    pub range: Range,
    /// Widen the range to [-m, m] (m the larger magnitude), so zero sits at the centre of a
    /// diverging map.
    pub symmetric: bool,
    /// Colour of texels that show no value (gaps, outside a grid, above bars and curves), in
    /// the texture's 0..1 values.
    pub background: [f32; 4],
}

impl Default for Style {
    fn default() -> Self {
        Style { colormap: Colormap::Viridis, range: Range::Auto, symmetric: false, background: [0.08, 0.08, 0.1, 1.0] }
    }
}

impl Style {
    pub fn new(colormap: Colormap, range: Range) -> Self {
        Style { colormap, range, ..Default::default() }
    }
    pub fn symmetric(mut self) -> Self {
        self.symmetric = true;
        self
    }
    pub fn background(mut self, rgba: [f32; 4]) -> Self {
        self.background = rgba;
        self
    }
}

/// A rectangle of texels in the target texture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Rect { x, y, width, height }
    }
}

/// How the values of a tensor are arranged into a picture. Element indices are in `f32`
/// units from the start of the [`TensorView`].
#[derive(Clone, Debug, PartialEq)]
pub enum Layout {
    /// `tiles` tiles of `h x w` cells; cell (t, y, x) shows element
    /// `base + t*tile_stride + y*row_stride + x*col_stride`. Tiles are placed left to right,
    /// `columns` per row (0: chosen to fill the rectangle best), one background cell apart.
    /// Cells are scaled by a common factor (nearest neighbour) and the grid is centred.
    Grid { base: usize, tiles: usize, h: usize, w: usize, tile_stride: usize, row_stride: usize, col_stride: usize, columns: usize },
    /// `n` values `base + i*stride` as vertical bars (a histogram).
    Bars { base: usize, n: usize, stride: usize },
    /// `n` values `base + i*stride` as a curve, first value on the left.
    Curve { base: usize, n: usize, stride: usize },
    /// The values of a [`super::LossHistory`] ring, oldest on the left, as a curve.
    Ring { capacity: usize },
}

impl Layout {
    /// A row-major `[rows, cols]` matrix (a CKA matrix, an attention map, logits) as one tile.
    pub fn matrix(rows: usize, cols: usize) -> Self {
        Layout::Grid { base: 0, tiles: 1, h: rows, w: cols, tile_stride: 0, row_stride: cols, col_stride: 1, columns: 1 }
    }

    /// Sample `sample` of an NCHW tensor `[B, C, H, W]`: each channel a tile.
    pub fn nchw(shape: &[usize], sample: usize) -> Result<Self> {
        let [b, c, h, w] = shape[..] else {
            return Err(Error::usage(format!("Layout::nchw needs a [B, C, H, W] shape, got {shape:?}")));
        };
        if sample >= b {
            return Err(Error::usage(format!("sample {sample} is out of range for a batch of {b}")));
        }
        Ok(Layout::Grid { base: sample * c * h * w, tiles: c, h, w, tile_stride: h * w, row_stride: w, col_stride: 1, columns: 0 })
    }

    /// Sample `sample` of a token tensor `[B, N, D]` whose first `prefix` tokens are class
    /// tokens and the rest a square grid of patches: each of the D channels a tile.
    pub fn tokens(shape: &[usize], prefix: usize, sample: usize) -> Result<Self> {
        let [b, n, d] = shape[..] else {
            return Err(Error::usage(format!("Layout::tokens needs a [B, N, D] shape, got {shape:?}")));
        };
        let patches = n.saturating_sub(prefix);
        let g = (patches as f64).sqrt().round() as usize;
        if g * g != patches || g == 0 {
            return Err(Error::usage(format!("{patches} patch tokens (of {n}, {prefix} class tokens) are not a square grid")));
        }
        if sample >= b {
            return Err(Error::usage(format!("sample {sample} is out of range for a batch of {b}")));
        }
        Ok(Layout::Grid {
            base: sample * n * d + prefix * d,
            tiles: d,
            h: g,
            w: g,
            tile_stride: 1,
            row_stride: g * d,
            col_stride: d,
            columns: 0,
        })
    }

    /// Show at most `k` tiles of a grid (the first ones).
    pub fn first_tiles(mut self, k: usize) -> Self {
        if let Layout::Grid { tiles, .. } = &mut self {
            *tiles = (*tiles).min(k).max(1);
        }
        self
    }

    /// The largest element index (exclusive) the layout reads.
    fn extent(&self) -> usize {
        match *self {
            Layout::Grid { base, tiles, h, w, tile_stride, row_stride, col_stride, .. } => {
                if tiles == 0 || h == 0 || w == 0 {
                    0
                } else {
                    base + (tiles - 1) * tile_stride + (h - 1) * row_stride + (w - 1) * col_stride + 1
                }
            }
            Layout::Bars { base, n, stride } | Layout::Curve { base, n, stride } => {
                if n == 0 {
                    0
                } else {
                    base + (n - 1) * stride + 1
                }
            }
            Layout::Ring { capacity } => 4 + capacity,
        }
    }
}

/// Tiles per row that make the cells largest in a `dw x dh` rectangle.
fn best_columns(tiles: usize, h: usize, w: usize, gap: usize, dw: u32, dh: u32) -> usize {
    let mut best = (0.0f64, 1usize);
    for cols in 1..=tiles.max(1) {
        let rows = tiles.div_ceil(cols);
        let gw = (cols * w + (cols - 1) * gap) as f64;
        let gh = (rows * h + (rows - 1) * gap) as f64;
        let s = (dw as f64 / gw).min(dh as f64 / gh);
        if s > best.0 {
            best = (s, cols);
        }
    }
    best.1
}

/// The uniform block of `shaders/embed.wgsl` (`View`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ViewParams {
    mode: u32,
    cmap: u32,
    range_mode: u32,
    symmetric: u32,
    lo: f32,
    hi: f32,
    base: u32,
    tiles: u32,
    tile_stride: u32,
    row_stride: u32,
    col_stride: u32,
    h: u32,
    w: u32,
    columns: u32,
    gap: u32,
    _pad0: u32,
    dst_x: u32,
    dst_y: u32,
    dst_w: u32,
    dst_h: u32,
    background: [f32; 4],
}

impl ViewParams {
    /// The parameters of the loss-ring recorder: metrics at `base`, ring of `capacity`.
    pub(crate) fn recorder(base: usize, capacity: usize) -> Self {
        ViewParams { base: base as u32, w: capacity as u32, ..Default::default() }
    }
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::usage(format!("{what} {v} does not fit in 32 bits")))
}

/// Compiled pipelines of the texture writers (and the loss recorder). Create one per device
/// and make any number of [`Panel`]s from it.
pub struct TextureWriter {
    ctx: Context,
    layout: wgpu::BindGroupLayout,
    aux_layout: wgpu::BindGroupLayout,
    draw: wgpu::ComputePipeline,
    minmax: wgpu::ComputePipeline,
    pub(crate) record: wgpu::ComputePipeline,
}

fn buffer_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }
}

impl TextureWriter {
    /// Compile the kernels on `ctx`'s device (an adopted host device or the library's own).
    pub fn new(ctx: &Context) -> Result<Self> {
        let src = shader_source("embed").ok_or_else(|| Error::usage("the embed shader is missing"))?;
        let device = &ctx.device;
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let base = [buffer_entry(0, wgpu::BufferBindingType::Uniform), buffer_entry(1, storage(true)), buffer_entry(2, storage(false))];
        let tex = wgpu::BindGroupLayoutEntry {
            binding: 3,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::StorageTexture {
                access: wgpu::StorageTextureAccess::WriteOnly,
                format: TEXTURE_FORMAT,
                view_dimension: wgpu::TextureViewDimension::D2,
            },
            count: None,
        };
        ctx.scoped("compiling the embed kernels", || {
            let module = device
                .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("embed"), source: wgpu::ShaderSource::Wgsl(src.into()) });
            let mut with_tex = base.to_vec();
            with_tex.push(tex);
            let layout =
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("embed draw"), entries: &with_tex });
            let aux_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("embed aux"), entries: &base });
            let pipe = |l: &wgpu::BindGroupLayout, entry: &str| {
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(entry),
                    bind_group_layouts: &[Some(l)],
                    immediate_size: 0,
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pl),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
            };
            let draw = pipe(&layout, "draw");
            let minmax = pipe(&aux_layout, "minmax");
            let record = pipe(&aux_layout, "record_loss");
            TextureWriter { ctx: ctx.clone(), layout, aux_layout, draw, minmax, record }
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn aux_bind_group(&self, label: &str, uniform: &wgpu::Buffer, src: &TensorView, aux: &wgpu::Buffer) -> wgpu::BindGroup {
        self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.aux_layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: src.binding() },
                wgpu::BindGroupEntry { binding: 2, resource: aux.as_entire_binding() },
            ],
        })
    }

    /// Prepare a panel that draws `src` arranged by `layout` into `rect` of `target`.
    ///
    /// `target` must be [`TEXTURE_FORMAT`] with [`TEXTURE_USAGE`] among its usages; `src`'s
    /// offset must be a multiple of the device's `min_storage_buffer_offset_alignment` (the
    /// views [`super::HostTrainer`] hands out are).
    pub fn panel(&self, src: &TensorView, layout: &Layout, style: &Style, target: &wgpu::Texture, rect: Rect) -> Result<Panel> {
        let device = &self.ctx.device;
        if target.format() != TEXTURE_FORMAT || !target.usage().contains(TEXTURE_USAGE) {
            return Err(Error::usage(format!(
                "texture writers need an {TEXTURE_FORMAT:?} texture with STORAGE_BINDING usage, got {:?} with {:?}",
                target.format(),
                target.usage()
            )));
        }
        let size = target.size();
        if rect.width == 0 || rect.height == 0 || rect.x + rect.width > size.width || rect.y + rect.height > size.height {
            return Err(Error::usage(format!("{rect:?} is empty or outside the {}x{} texture", size.width, size.height)));
        }
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        if src.offset % align != 0 {
            return Err(Error::usage(format!(
                "tensor '{}' starts at byte {} of its buffer, not a multiple of the storage offset alignment {align}",
                src.name, src.offset
            )));
        }
        let need = layout.extent();
        if need == 0 {
            return Err(Error::usage(format!("the layout for '{}' shows no values", src.name)));
        }
        if need > src.numel() {
            return Err(Error::usage(format!("the layout reads {need} values but '{}' has {} ({:?})", src.name, src.numel(), src.shape)));
        }
        let gap = 1usize;
        let (range_mode, lo, hi) = match style.range {
            Range::Fixed { lo, hi } => (0, lo, hi),
            Range::Auto => (1, 0.0, 0.0),
            Range::AutoPerTile => (2, 0.0, 0.0),
        };
        let mut v = ViewParams {
            cmap: style.colormap.index(),
            range_mode,
            symmetric: style.symmetric as u32,
            lo,
            hi,
            gap: gap as u32,
            dst_x: rect.x,
            dst_y: rect.y,
            dst_w: rect.width,
            dst_h: rect.height,
            background: style.background,
            ..Default::default()
        };
        let mut ranges = 1usize;
        match *layout {
            Layout::Grid { base, tiles, h, w, tile_stride, row_stride, col_stride, columns } => {
                let columns = if columns == 0 { best_columns(tiles, h, w, gap, rect.width, rect.height) } else { columns.min(tiles) };
                v.mode = 0;
                v.base = u32_of("base", base)?;
                v.tiles = u32_of("tiles", tiles)?;
                v.tile_stride = u32_of("tile stride", tile_stride)?;
                v.row_stride = u32_of("row stride", row_stride)?;
                v.col_stride = u32_of("column stride", col_stride)?;
                v.h = u32_of("tile height", h)?;
                v.w = u32_of("tile width", w)?;
                v.columns = u32_of("columns", columns.max(1))?;
                if style.range == Range::AutoPerTile {
                    ranges = tiles;
                }
            }
            Layout::Bars { base, n, stride } | Layout::Curve { base, n, stride } => {
                v.mode = if matches!(layout, Layout::Bars { .. }) { 1 } else { 2 };
                v.base = u32_of("base", base)?;
                v.w = u32_of("count", n)?;
                v.col_stride = u32_of("stride", stride)?;
            }
            Layout::Ring { capacity } => {
                v.mode = 3;
                v.w = u32_of("capacity", capacity)?;
            }
        }
        if ranges > self.ctx.limits.max_compute_workgroups_per_dimension as usize {
            return Err(Error::usage(format!("{ranges} tiles with a range each is over the workgroup limit")));
        }
        let label = format!("panel '{}'", src.name);
        self.ctx.scoped(&format!("preparing {label}"), || {
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: std::mem::size_of::<ViewParams>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.ctx.queue.write_buffer(&uniform, 0, bytemuck::bytes_of(&v));
            let aux = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: (ranges * 8).max(16) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let view = target.create_view(&wgpu::TextureViewDescriptor::default());
            let draw_bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: src.binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: aux.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&view) },
                ],
            });
            let minmax = (range_mode != 0).then(|| (self.minmax.clone(), self.aux_bind_group(&label, &uniform, src, &aux), ranges as u32));
            Panel {
                draw: self.draw.clone(),
                draw_bg,
                groups: [rect.width.div_ceil(8), rect.height.div_ceil(8)],
                minmax,
                _uniform: uniform,
                _aux: aux,
            }
        })
    }
}

/// One prepared drawing of a tensor into a texture rectangle. Record it every frame.
pub struct Panel {
    draw: wgpu::ComputePipeline,
    draw_bg: wgpu::BindGroup,
    groups: [u32; 2],
    minmax: Option<(wgpu::ComputePipeline, wgpu::BindGroup, u32)>,
    _uniform: wgpu::Buffer,
    _aux: wgpu::Buffer,
}

impl Panel {
    /// Record the panel into `encoder` (one compute pass; nothing is submitted). The tensor is
    /// read as it is when the GPU reaches this point of the queue.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("webdistill panel"), timestamp_writes: None });
        if let Some((pipe, bg, n)) = &self.minmax {
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(*n, 1, 1);
        }
        pass.set_pipeline(&self.draw);
        pass.set_bind_group(0, &self.draw_bg, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], 1);
    }
}
