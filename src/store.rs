//! The parameter store: every tensor that outlives a step (parameters, their gradients,
//! optimizer slots, running statistics, counters), by name, on the GPU.
//!
//! Parameters are packed into pages (one wgpu buffer each, no larger than a storage binding),
//! in registration order. Gradients and optimizer slots mirror that layout in their own pages,
//! so an optimizer updates a whole page with one dispatch and a chunk table. Several plans
//! (train, eval, probe) compiled against one store share the same memory.

use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::tensor::{DType, check_shape};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// How a stored tensor starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Const(f32),
    Normal {
        std: f32,
    },
    /// Normal with std, cut at +-2 (absolute), as timm's `trunc_normal_(std=..)`.
    TruncNormal {
        std: f32,
    },
    Uniform {
        lo: f32,
        hi: f32,
    },
    Values(Arc<Vec<f32>>),
    /// Raw 32-bit words for U32 state, written bit for bit (packed bytes: datasets). The
    /// store drops its copy once the words are on the GPU.
    Words(Arc<Vec<u32>>),
}

impl Init {
    fn fill(&self, n: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        match self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Const(c) => vec![*c; n],
            Init::Normal { std } => {
                let d = Normal::new(0.0f64, *std as f64).unwrap();
                (0..n).map(|_| d.sample(rng) as f32).collect()
            }
            Init::TruncNormal { std } => {
                let d = Normal::new(0.0f64, *std as f64).unwrap();
                (0..n)
                    .map(|_| {
                        loop {
                            let v = d.sample(rng);
                            if (-2.0..=2.0).contains(&v) {
                                break v as f32;
                            }
                        }
                    })
                    .collect()
            }
            Init::Uniform { lo, hi } => (0..n).map(|_| rng.random_range(*lo..*hi)).collect(),
            Init::Values(v) => {
                assert_eq!(v.len(), n, "Init::Values length");
                v.as_ref().clone()
            }
            // Only reached for F32 tensors; U32 state takes the words unconverted (`init_bytes`).
            Init::Words(w) => w.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The initial bytes of a stored tensor.
    fn init_bytes(&self, dtype: DType, n: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
        match (self, dtype) {
            (Init::Words(w), DType::U32) => {
                assert_eq!(w.len(), n, "Init::Words length");
                bytemuck::cast_slice(w).to_vec()
            }
            (_, DType::F32) => bytemuck::cast_slice(&self.fill(n, rng)).to_vec(),
            (_, DType::U32) => bytemuck::cast_slice(&self.fill(n, rng).iter().map(|&x| x as u32).collect::<Vec<u32>>()).to_vec(),
        }
    }
}

struct EntryInfo {
    id: usize,
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    /// Parameters only: apply weight decay (no for norms and biases, by convention).
    decay: bool,
}

/// A trainable parameter. Cheap to clone; identity is the store id.
#[derive(Clone)]
pub struct Param(Arc<EntryInfo>);

/// A non-trainable stored tensor (running statistics, counters, frozen weights).
#[derive(Clone)]
pub struct StateRef(Arc<EntryInfo>);

macro_rules! entry_accessors {
    ($t:ty) => {
        impl $t {
            pub fn id(&self) -> usize {
                self.0.id
            }
            pub fn name(&self) -> &str {
                &self.0.name
            }
            pub fn shape(&self) -> &[usize] {
                &self.0.shape
            }
            pub fn numel(&self) -> usize {
                self.0.shape.iter().product()
            }
            pub fn dtype(&self) -> DType {
                self.0.dtype
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{:?}", self.0.name, self.0.shape)
            }
        }
        impl PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                self.0.id == o.0.id
            }
        }
    };
}
entry_accessors!(Param);
entry_accessors!(StateRef);

impl Param {
    pub fn decay(&self) -> bool {
        self.0.decay
    }
}

/// Where one stored tensor lives on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub page: usize,
    pub offset: u64,
    pub bytes: u64,
}

/// Pages of one pool plus where each entry sits.
pub(crate) struct PoolBufs {
    pub(crate) pages: Vec<wgpu::Buffer>,
    pub(crate) page_bytes: Vec<u64>,
}

/// Assign entries (byte sizes) to pages in order; `align` is the binding-offset alignment.
fn layout(names: &[&str], sizes: &[u64], page_limit: u64, align: u64) -> Result<(Vec<Loc>, Vec<u64>)> {
    let mut locs = Vec::with_capacity(sizes.len());
    let mut pages: Vec<u64> = Vec::new();
    for (i, &bytes) in sizes.iter().enumerate() {
        if bytes > page_limit {
            return Err(Error::TooLarge { tensor: names[i].to_string(), bytes, limit_name: "max storage binding size", limit: page_limit });
        }
        let padded = bytes.div_ceil(align) * align;
        let fits = pages.last().is_some_and(|&used| used + bytes <= page_limit);
        if !fits {
            pages.push(0);
        }
        let page = pages.len() - 1;
        let offset = pages[page];
        locs.push(Loc { page, offset, bytes });
        pages[page] = (offset + padded).min(page_limit);
    }
    Ok((locs, pages))
}

fn make_pool(ctx: &Context, page_bytes: &[u64], label: &str) -> PoolBufs {
    let pages = page_bytes
        .iter()
        .map(|&b| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: b.max(16).div_ceil(16) * 16,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .collect();
    PoolBufs { pages, page_bytes: page_bytes.to_vec() }
}

pub(crate) struct StoreGpu {
    pub(crate) ctx: Context,
    pub(crate) param_locs: Vec<Loc>,
    pub(crate) params: PoolBufs,
    pub(crate) grads: PoolBufs,
    /// Optimizer slots ("sgd.momentum", "adamw.m", ...) and EMA copies mirror `params`.
    pub(crate) slots: HashMap<String, PoolBufs>,
    pub(crate) state_locs: Vec<Loc>,
    pub(crate) states: PoolBufs,
}

/// All persistent tensors of a training setup.
pub struct Store {
    params: Vec<Param>,
    param_init: Vec<Init>,
    states: Vec<StateRef>,
    state_init: Vec<Init>,
    names: HashMap<String, (bool, usize)>,
    seed: u64,
    pub(crate) gpu: Option<StoreGpu>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({} params, {} states)", self.params.len(), self.states.len())
    }
}

impl Store {
    /// An empty store; `seed` makes parameter initialisation reproducible.
    pub fn new(seed: u64) -> Self {
        Store {
            params: Vec::new(),
            param_init: Vec::new(),
            states: Vec::new(),
            state_init: Vec::new(),
            names: HashMap::new(),
            seed,
            gpu: None,
        }
    }

    fn check_new(&self, name: &str, shape: &[usize]) -> Result<()> {
        if self.gpu.is_some() {
            return Err(Error::usage(format!(
                "cannot add '{name}': the store is already on the GPU; register every tensor before compiling a plan"
            )));
        }
        if self.names.contains_key(name) {
            return Err(Error::usage(format!("a tensor named '{name}' is already in the store")));
        }
        check_shape("store", name, shape)
    }

    /// Register a trainable parameter. `decay`: whether weight decay applies.
    pub fn param_with(&mut self, name: &str, shape: &[usize], init: Init, decay: bool) -> Result<Param> {
        self.check_new(name, shape)?;
        let p = Param(Arc::new(EntryInfo { id: self.params.len(), name: name.into(), shape: shape.into(), dtype: DType::F32, decay }));
        self.names.insert(name.into(), (true, p.id()));
        self.params.push(p.clone());
        self.param_init.push(init);
        Ok(p)
    }

    /// Register a trainable parameter; weight decay applies to tensors of rank >= 2 (weights),
    /// not to vectors (biases, norm scales), as the usual per-group recipe does.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Param> {
        self.param_with(name, shape, init, shape.len() >= 2)
    }

    /// Register non-trainable state. State may be added after the upload (optimizer counters,
    /// say): it then gets a page of its own.
    pub fn state(&mut self, name: &str, shape: &[usize], dtype: DType, init: Init) -> Result<StateRef> {
        if self.names.contains_key(name) {
            return Err(Error::usage(format!("a tensor named '{name}' is already in the store")));
        }
        check_shape("store", name, shape)?;
        let s = StateRef(Arc::new(EntryInfo { id: self.states.len(), name: name.into(), shape: shape.into(), dtype, decay: false }));
        if let Some(gpu) = self.gpu.as_mut() {
            let ctx = gpu.ctx.clone();
            let bytes = (s.numel() * 4) as u64;
            if bytes > ctx.max_binding() {
                return Err(Error::TooLarge {
                    tensor: name.into(),
                    bytes,
                    limit_name: "max storage binding size",
                    limit: ctx.max_binding(),
                });
            }
            let pool = ctx.scoped("allocating state", || make_pool(&ctx, &[bytes], "state"))?;
            gpu.state_locs.push(Loc { page: gpu.states.pages.len(), offset: 0, bytes });
            gpu.states.pages.extend(pool.pages);
            gpu.states.page_bytes.extend(pool.page_bytes);
            self.names.insert(name.into(), (false, s.id()));
            self.states.push(s.clone());
            self.state_init.push(init.clone());
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0xA5A5 ^ (s.id() as u64) << 20);
            let bytes = init.init_bytes(dtype, s.numel(), &mut rng);
            let (buf, l) = self.state_binding(&s)?;
            self.gpu()?.ctx.queue.write_buffer(&buf, l.offset, &bytes);
            // Raw words are on the GPU now; keep no second copy.
            let init = if matches!(init, Init::Words(_)) { Init::Zeros } else { init };
            *self.state_init.last_mut().expect("just pushed") = init;
            return Ok(s);
        }
        self.names.insert(name.into(), (false, s.id()));
        self.states.push(s.clone());
        self.state_init.push(init);
        Ok(s)
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }
    pub fn states(&self) -> &[StateRef] {
        &self.states
    }
    pub fn param_by_name(&self, name: &str) -> Option<&Param> {
        match self.names.get(name) {
            Some(&(true, i)) => Some(&self.params[i]),
            _ => None,
        }
    }
    pub fn state_by_name(&self, name: &str) -> Option<&StateRef> {
        match self.names.get(name) {
            Some(&(false, i)) => Some(&self.states[i]),
            _ => None,
        }
    }
    pub fn is_uploaded(&self) -> bool {
        self.gpu.is_some()
    }

    /// Total trainable elements.
    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.numel()).sum()
    }

    /// Lay out and create the GPU buffers, and write the initial values.
    pub fn upload(&mut self, ctx: &Context) -> Result<()> {
        if self.gpu.is_some() {
            return Ok(());
        }
        let limit = ctx.max_binding() / ctx.offset_align() * ctx.offset_align();
        let align = ctx.offset_align();
        let pnames: Vec<&str> = self.params.iter().map(|p| p.name()).collect();
        let psizes: Vec<u64> = self.params.iter().map(|p| (p.numel() * 4) as u64).collect();
        let (param_locs, ppages) = layout(&pnames, &psizes, limit, align)?;
        let snames: Vec<&str> = self.states.iter().map(|p| p.name()).collect();
        let ssizes: Vec<u64> = self.states.iter().map(|p| (p.numel() * 4) as u64).collect();
        let (state_locs, spages) = layout(&snames, &ssizes, limit, align)?;
        let gpu = ctx.scoped("allocating the parameter store", || StoreGpu {
            ctx: ctx.clone(),
            params: make_pool(ctx, &ppages, "params"),
            grads: make_pool(ctx, &ppages, "grads"),
            param_locs,
            slots: HashMap::new(),
            states: make_pool(ctx, &spages, "state"),
            state_locs,
        })?;
        // Initial values, drawn in registration order from one seeded generator per tensor.
        for (i, p) in self.params.iter().enumerate() {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)));
            let v = self.param_init[i].fill(p.numel(), &mut rng);
            let l = gpu.param_locs[i];
            ctx.queue.write_buffer(&gpu.params.pages[l.page], l.offset, bytemuck::cast_slice(&v));
        }
        for (i, s) in self.states.iter().enumerate() {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0xA5A5 ^ (i as u64) << 20);
            let bytes = self.state_init[i].init_bytes(s.dtype(), s.numel(), &mut rng);
            let l = gpu.state_locs[i];
            ctx.queue.write_buffer(&gpu.states.pages[l.page], l.offset, &bytes);
        }
        // Raw words are on the GPU now; keep no second copy.
        for init in &mut self.state_init {
            if matches!(init, Init::Words(_)) {
                *init = Init::Zeros;
            }
        }
        self.gpu = Some(gpu);
        Ok(())
    }

    /// Bytes the store holds on the GPU: parameters, gradients, optimizer slots and state
    /// (0 before [`Self::upload`]).
    pub fn gpu_bytes(&self) -> u64 {
        let Some(g) = &self.gpu else { return 0 };
        let pool = |p: &PoolBufs| p.page_bytes.iter().sum::<u64>();
        pool(&g.params) + pool(&g.grads) + pool(&g.states) + g.slots.values().map(pool).sum::<u64>()
    }

    pub(crate) fn gpu(&self) -> Result<&StoreGpu> {
        self.gpu.as_ref().ok_or_else(|| Error::usage("the store is not on the GPU yet: call Store::upload first"))
    }

    /// Make sure an optimizer slot pool (mirroring the parameters, zero-initialised) exists.
    pub fn ensure_slot(&mut self, slot: &str) -> Result<()> {
        let gpu = self.gpu.as_mut().ok_or_else(|| Error::usage("upload the store before adding optimizer slots"))?;
        if !gpu.slots.contains_key(slot) {
            let ctx = gpu.ctx.clone();
            let pool = ctx.scoped("allocating optimizer state", || make_pool(&ctx, &gpu.params.page_bytes, slot))?;
            // wgpu zero-initialises new buffers.
            gpu.slots.insert(slot.to_string(), pool);
        }
        Ok(())
    }

    pub fn has_slot(&self, slot: &str) -> bool {
        self.gpu.as_ref().is_some_and(|g| g.slots.contains_key(slot))
    }

    /// Slot names present (for checkpoints of the optimizer state).
    pub fn slot_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.gpu.as_ref().map(|g| g.slots.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }

    pub(crate) fn param_binding(&self, p: &Param, which: Which) -> Result<(wgpu::Buffer, Loc)> {
        let gpu = self.gpu()?;
        let l = gpu.param_locs[p.id()];
        let pool = match which {
            Which::Value => &gpu.params,
            Which::Grad => &gpu.grads,
            Which::Slot(s) => gpu.slots.get(s).ok_or_else(|| Error::usage(format!("optimizer slot '{s}' was not allocated")))?,
        };
        Ok((pool.pages[l.page].clone(), l))
    }

    pub(crate) fn state_binding(&self, s: &StateRef) -> Result<(wgpu::Buffer, Loc)> {
        let gpu = self.gpu()?;
        let l = gpu.state_locs[s.id()];
        Ok((gpu.states.pages[l.page].clone(), l))
    }

    /// Pages of the parameter pool (or a mirror) with their used byte sizes.
    pub(crate) fn pages(&self, which: Which) -> Result<Vec<(wgpu::Buffer, u64)>> {
        let gpu = self.gpu()?;
        let pool = match which {
            Which::Value => &gpu.params,
            Which::Grad => &gpu.grads,
            Which::Slot(s) => gpu.slots.get(s).ok_or_else(|| Error::usage(format!("optimizer slot '{s}' was not allocated")))?,
        };
        Ok(pool.pages.iter().cloned().zip(pool.page_bytes.iter().cloned()).collect())
    }

    pub(crate) fn param_loc(&self, p: &Param) -> Result<Loc> {
        Ok(self.gpu()?.param_locs[p.id()])
    }

    /// Read a parameter (or its gradient / an optimizer slot) back to the CPU.
    pub async fn read_param_async(&self, p: &Param, which: Which<'_>) -> Result<Vec<f32>> {
        let (buf, l) = self.param_binding(p, which)?;
        let ctx = &self.gpu()?.ctx;
        let bytes = crate::gpu::Readback::read(ctx, &buf, l.offset, l.bytes).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn read_state_async(&self, s: &StateRef) -> Result<Vec<f32>> {
        let (buf, l) = self.state_binding(s)?;
        let ctx = &self.gpu()?.ctx;
        let bytes = crate::gpu::Readback::read(ctx, &buf, l.offset, l.bytes).await?;
        Ok(match s.dtype() {
            DType::F32 => bytemuck::pod_collect_to_vec(&bytes),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes).into_iter().map(|v| v as f32).collect(),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_param(&self, p: &Param) -> Result<Vec<f32>> {
        pollster::block_on(self.read_param_async(p, Which::Value))
    }
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_grad(&self, p: &Param) -> Result<Vec<f32>> {
        pollster::block_on(self.read_param_async(p, Which::Grad))
    }
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_slot(&self, p: &Param, slot: &str) -> Result<Vec<f32>> {
        pollster::block_on(self.read_param_async(p, Which::Slot(slot)))
    }
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_state(&self, s: &StateRef) -> Result<Vec<f32>> {
        pollster::block_on(self.read_state_async(s))
    }

    /// Overwrite a parameter (or slot) with values from the CPU.
    pub fn write_param(&self, p: &Param, which: Which<'_>, values: &[f32]) -> Result<()> {
        if values.len() != p.numel() {
            return Err(Error::BadInput { tensor: p.name().into(), msg: format!("{} values for shape {:?}", values.len(), p.shape()) });
        }
        let (buf, l) = self.param_binding(p, which)?;
        self.gpu()?.ctx.queue.write_buffer(&buf, l.offset, bytemuck::cast_slice(values));
        Ok(())
    }

    /// Copy parameter values `src -> dst` for each pair on the GPU (one submit; nothing is
    /// read back, so it works in the browser too): an EMA teacher starts as its student.
    pub fn copy_params(&self, pairs: &[(Param, Param)]) -> Result<()> {
        let gpu = self.gpu()?;
        let mut total = 0u64;
        for (s, d) in pairs {
            if s.shape() != d.shape() {
                return Err(Error::shape(
                    "copy_params",
                    format!("'{}' {:?} and '{}' {:?} differ", s.name(), s.shape(), d.name(), d.shape()),
                ));
            }
            total += (s.numel() * 4) as u64;
        }
        if total == 0 {
            return Ok(());
        }
        // WebGPU copies never stay within one buffer: go through a temporary one.
        let tmp = gpu.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("parameter copy"),
            size: total.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy parameters") });
        let mut at = 0;
        for (s, _) in pairs {
            let (sb, sl) = self.param_binding(s, Which::Value)?;
            enc.copy_buffer_to_buffer(&sb, sl.offset, &tmp, at, sl.bytes);
            at += sl.bytes;
        }
        at = 0;
        for (_, d) in pairs {
            let (db, dl) = self.param_binding(d, Which::Value)?;
            enc.copy_buffer_to_buffer(&tmp, at, &db, dl.offset, dl.bytes);
            at += dl.bytes;
        }
        gpu.ctx.scoped("copying parameters", || gpu.ctx.queue.submit([enc.finish()]))?;
        Ok(())
    }

    /// Overwrite stored state; U32 state takes values as f32 and converts.
    pub fn write_state(&self, s: &StateRef, values: &[f32]) -> Result<()> {
        if values.len() != s.numel() {
            return Err(Error::BadInput { tensor: s.name().into(), msg: format!("{} values for shape {:?}", values.len(), s.shape()) });
        }
        let (buf, l) = self.state_binding(s)?;
        let q = &self.gpu()?.ctx.queue;
        match s.dtype() {
            DType::F32 => q.write_buffer(&buf, l.offset, bytemuck::cast_slice(values)),
            DType::U32 => q.write_buffer(&buf, l.offset, bytemuck::cast_slice(&values.iter().map(|&v| v as u32).collect::<Vec<u32>>())),
        }
        Ok(())
    }
}

/// A pool of the store, by owner (an owned form of [`Which`] for graphs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    Params,
    Grads,
    Slot(String),
}

impl Pool {
    pub fn which(&self) -> Which<'_> {
        match self {
            Pool::Params => Which::Value,
            Pool::Grads => Which::Grad,
            Pool::Slot(s) => Which::Slot(s),
        }
    }
}

/// Which mirror of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which<'a> {
    Value,
    Grad,
    Slot(&'a str),
}
