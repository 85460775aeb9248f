//! GPU context: acquire a device (native, browser, or adopted from a host app), describe the
//! adapter, choose kernel variants for it, and turn wgpu errors into `Result`s.

mod kernels;
mod readback;

pub use kernels::{BindingKind, KernelKey, shader_names, shader_source};
pub use readback::{Readback, ReadbackSlot};

use crate::error::{Error, Result};
use std::fmt;
use std::sync::{Arc, Mutex};

/// What a user should install when no adapter shows up.
const NO_ADAPTER_HINT: &str = "webdistill needs a Vulkan, Metal or DX12 driver (a software one works too, slowly):
  Debian/Ubuntu: sudo apt install mesa-vulkan-drivers   (your GPU's Vulkan driver, or lavapipe in software)
  Fedora:        sudo dnf install mesa-vulkan-drivers
  Arch:          sudo pacman -S vulkan-radeon | vulkan-intel | nvidia-utils | vulkan-swrast (software)
  macOS:         Metal is built in (macOS 10.13 or newer on a Mac with a Metal GPU)
  Windows:       DX12 comes with Windows 10 and 11: update the GPU driver from its vendor
  Containers/servers: pass the GPU through (e.g. docker --gpus all with the NVIDIA toolkit) or install lavapipe as above.
Then `webdistill info` shows the adapter; WGPU_BACKEND=vulkan|gl|metal|dx12 picks a backend.";

/// One line describing the adapter, for logs, checkpoints' config and benchmark output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A CPU implementation (lavapipe, SwiftShader, WARP): barriers are expensive there.
    pub software: bool,
}

impl AdapterReport {
    pub fn from_info(info: &wgpu::AdapterInfo) -> Self {
        let software = matches!(info.device_type, wgpu::DeviceType::Cpu)
            || ["llvmpipe", "swiftshader", "lavapipe", "warp", "softpipe"].iter().any(|s| info.name.to_lowercase().contains(s));
        let driver =
            [info.driver.as_str(), info.driver_info.as_str()].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ");
        AdapterReport {
            name: if info.name.is_empty() { "unnamed adapter".into() } else { info.name.clone() },
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver,
            software,
        }
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// Matrix-multiply kernel family. Rankings differ wildly between software and real GPUs
/// (PLATFORM.md: barriers cost a lot on lavapipe), so the choice is per adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// Workgroup-shared tiles with barriers: the right shape for real GPUs. Each matmul
    /// takes the wide 128x128 tiles when its grid of them is large enough to fill a GPU
    /// (`WIDE_MIN_GROUPS`), else the 64x64 ones.
    Tiled,
    /// Always the 128x128 tiles, 8x8 outputs per thread (benchmarks, checks).
    TiledWide,
    /// Always the 64x64 tiles, 4x4 outputs per thread (benchmarks, checks). Both tile
    /// shapes are `shaders/matmul_wide.wgsl`; a linear layer's backward pair keeps the
    /// 64x64 `mm_tiled_pair` of `matmul.wgsl` unless either problem takes the wide tiles.
    Tiled64,
    /// Each thread keeps a block of outputs in registers, no shared memory, no barriers:
    /// software adapters. Uses vec4 loads when the shapes are 4-aligned.
    Register,
    /// The register variant without the vec4 form (benchmarks compare the two).
    RegisterScalar,
}

impl MatmulVariant {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tiled" => Some(Self::Tiled),
            "tiled-wide" => Some(Self::TiledWide),
            "tiled64" => Some(Self::Tiled64),
            "register" | "reg" => Some(Self::Register),
            "register-scalar" => Some(Self::RegisterScalar),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiled => "tiled",
            Self::TiledWide => "tiled-wide",
            Self::Tiled64 => "tiled64",
            Self::Register => "register",
            Self::RegisterScalar => "register-scalar",
        }
    }
    /// Every variant, the adapter's choices first (benchmarks and checks iterate this).
    pub const ALL: [MatmulVariant; 5] = [Self::Tiled, Self::TiledWide, Self::Tiled64, Self::Register, Self::RegisterScalar];
    /// One of the shared-memory families (convolutions follow the same choice).
    pub fn tiled(self) -> bool {
        matches!(self, Self::Tiled | Self::TiledWide | Self::Tiled64)
    }
}

/// Below this many 128x128 tiles a matmul under `MatmulVariant::Tiled` takes the 64x64
/// kernel instead: four times the workgroups, so a GPU's compute units all get work. About
/// two workgroups per unit on a large discrete GPU (an H100 has 132 units).
pub const WIDE_MIN_GROUPS: usize = 256;

/// Workgroup storage the wide matmul needs for a K step of 16 (two 16 x 132-float tiles);
/// below it the step is 8 (half that, inside WebGPU's guaranteed 16 KiB).
pub const WIDE_BK16_BYTES: u32 = 2 * 16 * 132 * 4;

/// Kernel choices made once per adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelProfile {
    /// Kernel choices for a software adapter (barriers expensive, lanes serial): reductions
    /// stay in one thread where a GPU would use a workgroup.
    pub software: bool,
    pub matmul: MatmulVariant,
    /// Prefer one thread per row over a workgroup reduction for rows up to this length.
    pub serial_row_max: usize,
    /// Let naga insert index clamps into every storage access. On Vulkan the driver's
    /// robustBufferAccess already confines accesses to their bindings and our kernels clamp
    /// their own indices, so the clamps are dropped there: it doubles matmul throughput on
    /// lavapipe. `WEBDISTILL_BOUNDS_CHECKS=1` puts them back.
    pub bounds_checks: bool,
    /// Workgroup reductions (row ops on real GPUs) use subgroup operations: native only, when
    /// the device has `Features::SUBGROUP`; `WEBDISTILL_SUBGROUPS=0` keeps the shared-memory
    /// tree. (Browsers differ on the `enable subgroups;` directive naga rejects, so the page
    /// keeps the tree.)
    pub subgroups: bool,
    /// K step of the wide matmul's tiles, from the adapter's workgroup storage: 16 where
    /// `WIDE_BK16_BYTES` fit, else 8.
    pub wide_bk: u32,
    /// Cut a tiled linear-backward pair's long dW K into chunks summed by a second dispatch
    /// (only the tiled pair ever does, see `pair_kper`); `WEBDISTILL_SPLIT_K=0` keeps one
    /// dispatch, to measure what the cut buys on a GPU.
    pub split_k: bool,
}

impl KernelProfile {
    /// Whether linear backward pairs get cut along dW's K: `split_k` where the pair is the
    /// tiled one (the register pairs of software adapters never split).
    pub fn splits_k(&self) -> bool {
        self.split_k && !matches!(self.matmul, MatmulVariant::Register | MatmulVariant::RegisterScalar)
    }

    pub fn for_adapter(report: &AdapterReport) -> Self {
        let bounds_checks = report.backend != "Vulkan";
        // `WEBDISTILL_PROFILE=gpu` gives a software adapter every choice a real GPU gets (and
        // `software` the reverse), so CI checks the real-GPU kernels end to end on lavapipe.
        #[cfg(not(target_arch = "wasm32"))]
        let software = match std::env::var("WEBDISTILL_PROFILE").as_deref() {
            Ok("gpu") => false,
            Ok("software") => true,
            _ => report.software,
        };
        #[cfg(target_arch = "wasm32")]
        let software = report.software;
        // Device-dependent choices are made in `for_device`.
        let (subgroups, wide_bk) = (false, 8);
        #[cfg(not(target_arch = "wasm32"))]
        let split_k = !std::env::var("WEBDISTILL_SPLIT_K").is_ok_and(|v| v == "0");
        #[cfg(target_arch = "wasm32")]
        let split_k = true;
        // Mutated only by the native overrides below.
        #[allow(unused_mut)]
        let mut p = if software {
            KernelProfile { software, matmul: MatmulVariant::Register, serial_row_max: 4096, bounds_checks, subgroups, wide_bk, split_k }
        } else {
            KernelProfile { software, matmul: MatmulVariant::Tiled, serial_row_max: 256, bounds_checks, subgroups, wide_bk, split_k }
        };
        // An override for benchmarks and for users who know their adapter better.
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(v) = std::env::var("WEBDISTILL_MATMUL").ok().and_then(|s| MatmulVariant::parse(&s)) {
            p.matmul = v;
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Ok(v) = std::env::var("WEBDISTILL_BOUNDS_CHECKS") {
            p.bounds_checks = v != "0";
        }
        p
    }

    /// `for_adapter`, plus the choices that depend on the device: subgroup reductions where
    /// it has them and the profile is a real GPU's, the wide matmul's K step from its limits.
    pub fn for_device(report: &AdapterReport, features: wgpu::Features, limits: &wgpu::Limits) -> Self {
        let mut p = Self::for_adapter(report);
        p.subgroups = !p.software && cfg!(not(target_arch = "wasm32")) && features.contains(wgpu::Features::SUBGROUP);
        #[cfg(not(target_arch = "wasm32"))]
        if std::env::var("WEBDISTILL_SUBGROUPS").is_ok_and(|v| v == "0") {
            p.subgroups = false;
        }
        p.wide_bk = if limits.max_compute_workgroup_storage_size >= WIDE_BK16_BYTES { 16 } else { 8 };
        p
    }
}

/// Options for acquiring a device.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Case-insensitive substring of the adapter name; overrides `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
    /// Ask for a device whose storage bindings are at most this many bytes (below the
    /// adapter's own limit): how a small GPU behaves, on a large one (the page's
    /// `?max_binding_mib=N`, its tests).
    pub max_storage_binding: Option<u64>,
}

/// Errors wgpu reports outside error scopes (and device loss) land here instead of panicking.
#[derive(Default)]
pub(crate) struct ErrorSink {
    errors: Mutex<Vec<String>>,
    /// Why the device was lost, once it is (destroyed included).
    lost: Mutex<Option<String>>,
}

impl ErrorSink {
    pub(crate) fn set_lost(&self, why: String) {
        self.lost.lock().unwrap().get_or_insert(why);
    }
    pub(crate) fn push(&self, msg: String) {
        self.errors.lock().unwrap().push(msg);
    }
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}

pub struct ContextInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterReport,
    pub limits: wgpu::Limits,
    pub profile: KernelProfile,
    /// True when the device belongs to a host application (`Context::adopt`).
    pub adopted: bool,
    pub(crate) sink: Arc<ErrorSink>,
    pub(crate) cache: Mutex<kernels::PipelineCache>,
}

/// A handle to the device the library works on. Cheap to clone.
#[derive(Clone)]
pub struct Context(Arc<ContextInner>);

impl std::ops::Deref for Context {
    type Target = ContextInner;
    fn deref(&self) -> &ContextInner {
        &self.0
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Context({})", self.adapter)
    }
}

impl Context {
    /// Native: pick an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`,
    /// `WGPU_POWER_PREF`) and open a device with the adapter's real limits. Blocks until the
    /// device exists; never used on wasm.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(ContextOptions::default()))
    }

    /// Acquire an adapter and device. On wasm this goes through the browser's WebGPU.
    pub async fn new_async(opts: ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance, &opts).await?;
        let info = adapter.get_info();
        let mut features = wgpu::Features::empty();
        if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Subgroup reductions (KernelProfile::subgroups); native only, see there.
        if cfg!(not(target_arch = "wasm32")) && adapter.features().contains(wgpu::Features::SUBGROUP) {
            features |= wgpu::Features::SUBGROUP;
        }
        // The adapter's real limits: storage binding size and workgroup storage matter here.
        let mut limits = adapter.limits();
        if let Some(b) = opts.max_storage_binding {
            let b = b.min(limits.max_storage_buffer_binding_size as u64);
            limits.max_storage_buffer_binding_size = b as _;
            limits.max_buffer_size = limits.max_buffer_size.min(b.max(limits.max_uniform_buffer_binding_size as u64));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("webdistill"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::gpu(format!("opening a device on {}", info.name), e))?;
        let report = AdapterReport::from_info(&info);
        let sink = Arc::new(ErrorSink::default());
        // We own this device: route errors wgpu would otherwise panic on into our sink.
        let s = sink.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| s.push(e.to_string())));
        let s = sink.clone();
        device.set_device_lost_callback(move |reason, msg| {
            s.set_lost(if msg.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {msg}") });
            if !matches!(reason, wgpu::DeviceLostReason::Destroyed) {
                s.push(format!("device lost ({reason:?}): {msg}"))
            }
        });
        Ok(Self::wrap(device, queue, report, limits, false, sink))
    }

    /// Adopt a host application's device and queue, so training shares its GPU.
    ///
    /// The library installs no global error handler on an adopted device (that belongs to the
    /// host); it catches its own errors with error scopes instead. It never blocks in `poll`
    /// unless a method that says so is called.
    pub fn adopt(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let limits = device.limits();
        let report = AdapterReport::from_info(&info);
        Self::wrap(device, queue, report, limits, true, Arc::new(ErrorSink::default()))
    }

    fn wrap(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter: AdapterReport,
        limits: wgpu::Limits,
        adopted: bool,
        sink: Arc<ErrorSink>,
    ) -> Self {
        let profile = KernelProfile::for_device(&adapter, device.features(), &limits);
        Context(Arc::new(ContextInner {
            device,
            queue,
            adapter,
            limits,
            profile,
            adopted,
            sink,
            cache: Mutex::new(kernels::PipelineCache::default()),
        }))
    }

    /// Replace the kernel profile (benchmarks compare variants on one device).
    pub fn with_profile(&self, profile: KernelProfile) -> Self {
        Context(Arc::new(ContextInner {
            device: self.device.clone(),
            queue: self.queue.clone(),
            adapter: self.adapter.clone(),
            limits: self.limits.clone(),
            profile,
            adopted: self.adopted,
            sink: self.sink.clone(),
            cache: Mutex::new(kernels::PipelineCache::default()),
        }))
    }

    /// Largest byte size one storage binding may have: one tensor, or one piece of a tensor
    /// whose ops run in batch slices (docs/BATCH_SPLIT.md).
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Byte alignment of storage-binding offsets.
    pub fn offset_align(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment.max(self.limits.min_uniform_buffer_offset_alignment) as u64
    }

    /// Run `f` with error scopes pushed and return wgpu's errors as an `Error` naming `what`.
    /// On native the scopes resolve at once (wgpu-core validates synchronously).
    pub async fn scoped_async<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let e_val = val.pop().await;
        let e_oom = oom.pop().await;
        if let Some(e) = e_val.or(e_oom) {
            return Err(self.gpu_error(what, e));
        }
        self.check(what)?;
        Ok(out)
    }

    /// Synchronous form of [`Self::scoped_async`]. On wasm the scope's result arrives later:
    /// it is recorded and reported by the next call to [`Self::check`].
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.scoped_async(what, f))
        }
        #[cfg(target_arch = "wasm32")]
        {
            self.check(what)?;
            let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f();
            let sink = self.sink.clone();
            let what = what.to_string();
            let fut = val.pop();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(e) = fut.await {
                    sink.push(format!("while {what}: {e}"));
                }
            });
            Ok(out)
        }
    }

    /// Why the device was lost, once it is (the browser reports it a moment after the fact).
    pub fn lost(&self) -> Option<String> {
        self.sink.lost.lock().unwrap().clone()
    }

    /// Destroy the device on purpose (`why` is what later errors will say).
    pub fn destroy(&self, why: &str) {
        self.sink.set_lost(why.to_string());
        self.device.destroy();
    }

    /// A GPU error while `what` ran, saying so first when the cause is a lost device (a
    /// driver reset, the device destroyed, the GPU removed): then nothing on it can be used
    /// again, and the run must restart from its last checkpoint.
    pub fn gpu_error(&self, what: &str, detail: impl fmt::Display) -> Error {
        match self.sink.lost.lock().unwrap().as_ref() {
            Some(why) => Error::gpu(
                what,
                format!(
                    "the GPU device was lost ({why}); its buffers are gone, so restart (a run: --resume DIR from its last checkpoint). Detail: {detail}"
                ),
            ),
            None => Error::gpu(what, detail),
        }
    }

    /// Report errors that reached the device outside a scope (including device loss).
    pub fn check(&self, what: &str) -> Result<()> {
        let errs = self.sink.take();
        if errs.is_empty() { Ok(()) } else { Err(self.gpu_error(what, errs.join("; "))) }
    }

    /// Non-blocking poll: lets finished readbacks deliver their data. No-op on the web.
    pub fn poll(&self) {
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Block until all submitted work is done. Only called where the caller asked to wait.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| self.gpu_error("waiting for the GPU", e))
    }

    pub(crate) fn pipeline(&self, key: &KernelKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self.cache.lock().unwrap();
        cache.get(self, key)
    }

    pub(crate) fn bind_layout(&self, key: &KernelKey) -> Arc<wgpu::BindGroupLayout> {
        self.cache.lock().unwrap().bind_layout(&self.device, key)
    }

    /// How many pipelines this context has compiled (for plan statistics).
    pub fn pipeline_count(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

async fn pick_adapter(instance: &wgpu::Instance, opts: &ContextOptions) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    let wanted = opts.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
    #[cfg(target_arch = "wasm32")]
    let wanted = opts.adapter_name.clone();

    #[cfg(not(target_arch = "wasm32"))]
    if let Some(want) = wanted.as_ref().map(|w| w.to_lowercase()) {
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&want)).ok_or_else(|| Error::NoAdapter {
            detail: format!(" whose name contains '{want}' (available: {})", names.join(", ")),
            hint: NO_ADAPTER_HINT,
        });
    }
    let _ = &wanted;
    let power_preference = wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions { power_preference, ..Default::default() })
        .await
        .map_err(|e| Error::NoAdapter { detail: format!(" ({e})"), hint: NO_ADAPTER_HINT })
}
