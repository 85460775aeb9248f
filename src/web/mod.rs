//! The wasm-bindgen API used by the demo page (`web/`): a thin shell over the library.
//!
//! ```js
//! import init_wasm, { init, selftest, Session } from './pkg/webdistill.js';
//! await init_wasm();                       // load the .wasm
//! const info = await init();               // WebGPU device; throws a named Error without one
//! const report = await selftest();         // { adapter, outputs: [{ name, shape, values }] }
//! const s = await Session.create('mlp', { hidden: 64 });
//! const m = await s.step(10);              // { step, loss, images_per_sec, steps_per_sec, ... }
//! const e = await s.evaluate();            // { ..., loss, accuracy }
//! s.free();
//! ```
//!
//! Every function that can fail rejects with a JS `Error` whose `name` says what kind of
//! failure it was (`WebGpuUnavailable`, `NoAdapterError`, `GpuError`, `UsageError`, ...) and
//! whose `message` is the library's readable message. Nothing here blocks: GPU work is
//! awaited, so the page stays responsive.

mod images;

use crate::error::Error;
use crate::gpu::{Context, ContextOptions, KernelProfile, MatmulVariant};
use crate::session::{self, Assets};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

thread_local! {
    static CTX: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Browser-side facts the library cannot get through wgpu (which leaves the name empty).
#[wasm_bindgen(inline_js = r#"
export async function probe_adapter() {
    const gpu = globalThis.navigator && globalThis.navigator.gpu;
    if (!gpu) return JSON.stringify({ webgpu: false });
    const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!a) return JSON.stringify({ webgpu: true, adapter: false });
    const i = a.info || {};
    return JSON.stringify({
        webgpu: true, adapter: true,
        vendor: i.vendor || '', architecture: i.architecture || '',
        device: i.device || '', description: i.description || '',
        fallback: !!(a.isFallbackAdapter || i.isFallbackAdapter),
    });
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn probe_adapter() -> Result<JsValue, JsValue>;
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Probe {
    webgpu: bool,
    adapter: bool,
    vendor: String,
    architecture: String,
    device: String,
    description: String,
    fallback: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct InitOptions {
    /// "tiled", "register" or "register-scalar": overrides the kernel choice.
    matmul: Option<String>,
    /// Ask for a device with storage bindings of at most this many MiB (a small GPU's limits).
    max_binding_mib: Option<f64>,
}

/// A JS `Error` named `name` carrying `msg`.
fn js_error(name: &str, msg: &str) -> JsValue {
    let e = js_sys::Error::new(msg);
    e.set_name(name);
    e.into()
}

/// The library's error as a JS `Error`, named after its kind.
fn to_js(e: Error) -> JsValue {
    let name = match &e {
        Error::Shape { .. } => "ShapeError",
        Error::NoAdapter { .. } => "NoAdapterError",
        Error::Gpu { .. } => "GpuError",
        Error::TooLarge { .. } => "TooLargeError",
        Error::BadInput { .. } => "BadInputError",
        Error::Usage(_) => "UsageError",
        Error::File { .. } => "FileError",
    };
    js_error(name, &e.to_string())
}

fn json_to_js(v: &impl serde::Serialize) -> Result<JsValue, JsValue> {
    let s = serde_json::to_string(v).map_err(|e| js_error("Error", &e.to_string()))?;
    js_sys::JSON::parse(&s)
}

fn js_to_json(v: &JsValue) -> Result<serde_json::Value, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(serde_json::Value::Null);
    }
    let s: String = js_sys::JSON::stringify(v)?.into();
    serde_json::from_str(&s).map_err(|e| js_error("UsageError", &format!("settings are not plain JSON: {e}")))
}

fn context() -> Result<Context, JsValue> {
    CTX.with(|c| c.borrow().clone()).ok_or_else(|| js_error("UsageError", "call init() before using the GPU"))
}

const ENABLE_HINT: &str = "Use a recent Chrome or Edge (113 or newer; on Linux start it with \
--enable-unsafe-webgpu or turn on chrome://flags/#enable-unsafe-webgpu), or in Firefox set \
dom.webgpu.enabled to true in about:config (and gfx.webgpu.ignore-blocklist if your GPU is \
blocked), then reload.";

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Session kinds `Session.create` accepts.
#[wasm_bindgen(js_name = sessionKinds)]
pub fn session_kinds() -> Vec<String> {
    session::KINDS.iter().map(|s| s.to_string()).collect()
}

/// The model registry: `[{ name, img_size, in_chans }]` (the sizes are each model's
/// defaults; a run builds it for its data's channels and size).
#[wasm_bindgen]
pub fn models() -> Result<JsValue, JsValue> {
    let list: Vec<serde_json::Value> = crate::models::registry()
        .iter()
        .map(|e| {
            let c = e.default_config();
            serde_json::json!({ "name": e.name, "img_size": c.img_size, "in_chans": c.in_chans })
        })
        .collect();
    json_to_js(&list)
}

/// The bundled Fashion-MNIST subset's file names (`data/fashion-mnist-subset/`): the page
/// fetches them (web/build copies them next to it) and passes them to `Session.create` as
/// assets of the same names; the wasm does not hold the data.
#[wasm_bindgen(js_name = bundledFiles)]
pub fn bundled_files() -> Vec<String> {
    crate::data::BUNDLED_FILES.iter().map(|s| s.to_string()).collect()
}

/// Open the WebGPU device. Resolves to `{ name, vendor, architecture, backend, software,
/// matmul, maxStorageBindingMiB, ... }`. Rejects with an `Error` named `WebGpuUnavailable`
/// (no `navigator.gpu`) or `NoAdapterError` (WebGPU present, no adapter granted), whose
/// message says what to enable. `options`: `{ matmul: "tiled" | "register" }` (optional).
#[wasm_bindgen]
pub async fn init(options: JsValue) -> Result<JsValue, JsValue> {
    let opts: InitOptions = match js_to_json(&options)? {
        serde_json::Value::Null => InitOptions::default(),
        v => serde_json::from_value(v).map_err(|e| js_error("UsageError", &format!("init options: {e}")))?,
    };
    let probe: Probe = match probe_adapter().await {
        Ok(v) => serde_json::from_str(&v.as_string().unwrap_or_default()).unwrap_or_default(),
        Err(_) => Probe { webgpu: true, adapter: true, ..Default::default() },
    };
    if !probe.webgpu {
        return Err(js_error(
            "WebGpuUnavailable",
            &format!("This browser does not offer WebGPU (navigator.gpu is missing). {ENABLE_HINT}"),
        ));
    }
    if !probe.adapter {
        return Err(js_error(
            "NoAdapterError",
            &format!("WebGPU is present but the browser granted no GPU adapter (it may be blocked or disabled). {ENABLE_HINT}"),
        ));
    }
    // wgpu leaves the adapter's name empty on the web: use the browser's words to spot
    // software adapters (SwiftShader, lavapipe), where barrier-free kernels win.
    let words = format!("{} {} {} {}", probe.vendor, probe.architecture, probe.device, probe.description).to_lowercase();
    let software = probe.fallback || ["swiftshader", "llvmpipe", "lavapipe", "warp", "softpipe"].iter().any(|s| words.contains(s));
    let ctx = match CTX.with(|c| c.borrow().clone()) {
        Some(c) => c,
        None => {
            let copts = ContextOptions { max_storage_binding: opts.max_binding_mib.map(|m| (m * 1048576.0) as u64), ..Default::default() };
            let ctx = Context::new_async(copts).await.map_err(|e| match e {
                Error::NoAdapter { .. } => js_error("NoAdapterError", &format!("No WebGPU adapter was granted. {ENABLE_HINT}")),
                e => to_js(e),
            })?;
            let mut report = ctx.adapter.clone();
            report.software |= software;
            let mut profile = KernelProfile::for_device(&report, ctx.device.features(), &ctx.limits);
            if let Some(m) = &opts.matmul {
                profile.matmul = MatmulVariant::parse(m).ok_or_else(|| {
                    js_error("UsageError", &format!("unknown matmul variant '{m}' (tiled, tiled-wide, tiled64, register, register-scalar)"))
                })?;
            }
            let ctx = if profile != ctx.profile { ctx.with_profile(profile) } else { ctx };
            CTX.with(|c| *c.borrow_mut() = Some(ctx.clone()));
            ctx
        }
    };
    let browser_name = [probe.vendor.as_str(), probe.architecture.as_str(), probe.device.as_str(), probe.description.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let l = &ctx.limits;
    json_to_js(&serde_json::json!({
        "name": if browser_name.is_empty() { "not disclosed by the browser".to_string() } else { browser_name },
        "vendor": probe.vendor,
        "architecture": probe.architecture,
        "description": probe.description,
        "fallback": probe.fallback,
        "backend": ctx.adapter.backend,
        "software": software || ctx.adapter.software,
        "matmul": ctx.profile.matmul.name(),
        "maxStorageBindingMiB": l.max_storage_buffer_binding_size as f64 / 1048576.0,
        "maxWorkgroupStorageKiB": l.max_compute_workgroup_storage_size as f64 / 1024.0,
        "maxInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
        "version": version(),
    }))
}

/// Destroy the GPU device (what a driver reset or an unplugged GPU does to a page): every
/// later call rejects with a `GpuError` that says the device was lost. For the page's tests
/// and for hosts that want the GPU's memory back at once; reload to start again.
#[wasm_bindgen(js_name = destroyDevice)]
pub fn destroy_device() -> Result<(), JsValue> {
    context()?.destroy("destroyed by destroyDevice()");
    Ok(())
}

/// Why the GPU device was lost, or `undefined` while it is fine. The browser reports a loss a
/// moment after the call that first failed because of it, so the page asks again after errors.
#[wasm_bindgen(js_name = deviceLost)]
pub fn device_lost() -> Option<String> {
    CTX.with(|c| c.borrow().as_ref().and_then(|c| c.lost()))
}

/// Run the fixed self-test plan (`webdistill selftest --json` natively) and resolve to
/// `{ adapter, outputs: [{ name, shape, values }] }`.
#[wasm_bindgen]
pub async fn selftest() -> Result<JsValue, JsValue> {
    let ctx = context()?;
    let report = crate::selftest::run(&ctx).await.map_err(to_js)?;
    json_to_js(&report)
}

/// A training session (see `src/session`): `Session.create(kind, settings, assets)`, then
/// `step(n)`, `evaluate()`, `query(what, args)`, `describe()`, `free()`.
#[wasm_bindgen]
pub struct Session {
    inner: Rc<RefCell<Box<dyn session::Session>>>,
    kind: &'static str,
}

/// `{ name: Uint8Array }` -> named files.
fn assets_of(assets: &JsValue) -> Assets {
    let mut files = Assets::new();
    if assets.is_object() {
        let obj: &js_sys::Object = assets.unchecked_ref();
        for entry in js_sys::Object::entries(obj).iter() {
            let pair: js_sys::Array = entry.unchecked_into();
            let name = pair.get(0).as_string().unwrap_or_default();
            let bytes = js_sys::Uint8Array::new(&pair.get(1)).to_vec();
            files.insert(name, bytes);
        }
    }
    files
}

fn busy() -> JsValue {
    js_error("UsageError", "this session is busy with another step or evaluation: await it first")
}

#[wasm_bindgen]
impl Session {
    /// Build a session of `kind` (`sessionKinds()`) with `settings` (a plain object; missing
    /// fields take their defaults) and `assets` (an optional `{ name: Uint8Array }` of files
    /// the session needs, such as a dataset or a teacher's weights).
    pub async fn create(kind: String, settings: JsValue, assets: JsValue) -> Result<Session, JsValue> {
        let ctx = context()?;
        let config = js_to_json(&settings)?;
        let files = assets_of(&assets);
        let s = session::create(&ctx, &kind, &config, &files).map_err(to_js)?;
        // Surface validation errors of the plan compilation now rather than at the first step.
        ctx.scoped_async("creating the session", || ()).await.map_err(to_js)?;
        let kind = s.kind();
        Ok(Session { inner: Rc::new(RefCell::new(s)), kind })
    }

    /// The session kind.
    #[wasm_bindgen(getter)]
    pub fn kind(&self) -> String {
        self.kind.to_string()
    }

    /// Settings and sizes: `{ kind, config, parameters, dispatches_per_step, ... }`.
    pub fn describe(&self) -> Result<JsValue, JsValue> {
        let s = self.inner.try_borrow().map_err(|_| busy())?;
        json_to_js(&s.describe())
    }

    /// Run `n` training steps; resolves to `{ step, loss, images_per_sec, steps_per_sec,
    /// seconds, examples }`.
    pub fn step(&self, n: u32) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
            let m = s.step(n as usize).await.map_err(to_js)?;
            json_to_js(&m)
        })
    }

    /// A session-specific query (`query('cka', {})`, ...); resolves to its JSON answer.
    pub fn query(&self, what: String, args: JsValue) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let args = js_to_json(&args)?;
            let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
            let v = s.query(&what, &args).await.map_err(to_js)?;
            json_to_js(&v)
        })
    }

    /// Loss and accuracy on the held-out set; resolves to `{ step, loss, accuracy, ... }`.
    pub fn evaluate(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
            let m = s.evaluate().await.map_err(to_js)?;
            json_to_js(&m)
        })
    }
}
