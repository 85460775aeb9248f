//! `webdistill report` (and `scripts/gpu-report`): one command that measures the adapter it
//! runs on and leaves the evidence in a folder, `report.md`, `report.json` and PNG charts.
//!
//! Sections run most valuable first, and both files are rewritten after each one, so a run
//! cut off by its time limit (or a dying machine) still leaves what it measured:
//! 1. the adapter, its limits, the kernel profile and the f32 peak ([`peak`]);
//! 2. correctness on this adapter: kernel variants against the f64 references, model logits
//!    against the committed PyTorch goldens ([`checks`]);
//! 3. benchmarks ([`crate::bench`]);
//! 4. PyTorch on the same device, when python3 has torch ([`evidence::torch`]);
//! 5. training evidence with the time left: a teacher, students by method, OBoW
//!    ([`evidence`]; each run is a child process of this binary with its own deadline).
//!
//! `--smoke` runs every section at tiny sizes (the test suite runs it on lavapipe), so the
//! report cannot rot between the rare runs on real GPUs.

mod checks;
mod evidence;
mod peak;
mod render;

use crate::error::{Error, Result};
use crate::gpu::{Context, MatmulVariant};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `webdistill report` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    /// Time for the whole report; sections scale their runs to fit.
    pub minutes: f64,
    pub smoke: bool,
    /// Data of the training section (`fashion-mnist`, `fashion-mnist:DIR`, `bundled`).
    pub data: String,
    /// The repository: goldens (`tests/golden/`), scripts, the shipped teacher.
    pub repo: PathBuf,
    /// The binary the training runs start (this one).
    pub bin: PathBuf,
    pub python: String,
}

/// The adapter section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdapterSection {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub software: bool,
    pub max_storage_binding_mib: u64,
    pub max_buffer_mib: u64,
    pub workgroup_storage_kib: u32,
    pub invocations_per_workgroup: u32,
    pub storage_buffers_per_stage: u32,
    pub subgroups: bool,
    pub profile: String,
    pub matmul_variant: String,
    pub serial_row_max: usize,
    /// The profile's workgroup reductions go through subgroup operations.
    #[serde(default)]
    pub subgroup_reductions: bool,
    /// K step of the 128x128 matmul tiles, from the workgroup storage limit.
    #[serde(default)]
    pub wide_bk: u32,
    /// A tiled linear backward cuts a long dW K into chunks (`WEBDISTILL_SPLIT_K`).
    #[serde(default)]
    pub split_k: bool,
    /// f32 peak in GFLOP/s and where the figure comes from.
    pub peak_gflops: Option<f64>,
    pub peak_source: String,
}

/// One correctness check: a kernel against its f64 reference or a model against PyTorch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Check {
    /// `kernel` or `golden`.
    pub kind: String,
    pub name: String,
    /// The kernel profile it ran under (`software`, `gpu`, or a matmul variant).
    pub profile: String,
    pub rel_error: Option<f64>,
    pub tolerance: f64,
    pub ok: bool,
    /// Why it could not run, when it did not.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MatmulResult {
    pub n: usize,
    pub variant: String,
    pub gflops: f64,
    pub pct_peak: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConvResult {
    pub label: String,
    pub forward_ms: f64,
    pub input_grad_ms: f64,
    pub weight_grad_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DispatchCost {
    pub one_submit_us: f64,
    pub submit_each_us: f64,
    pub submit_and_wait_us: f64,
}

/// A whole training (or inference) step of one model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// `resnet20 train`, `vit_micro_p4 train`, `attention fused fwd+bwd`, ...
    pub what: String,
    pub batch: usize,
    pub ms: f64,
    pub images_per_s: f64,
    pub dispatches: usize,
    pub arena_mib: f64,
}

/// The OFA distillation step (resnet20 teacher -> `student`, OFA on stages 1-3, AdamW).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DistillStep {
    pub student: String,
    pub batch: usize,
    pub dispatches: usize,
    pub ms: f64,
    pub images_per_s: f64,
    pub arena_mib: f64,
    /// Arena plus the store (weights, gradients, optimizer state), to set against PyTorch's
    /// peak allocation.
    pub memory_mib: f64,
}

/// PyTorch on the same step and device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TorchResult {
    pub student: String,
    /// `cuda eager`, `cuda graphs`, `cpu eager`.
    pub mode: String,
    pub batch: usize,
    pub ms: f64,
    pub images_per_s: f64,
    pub peak_mib: Option<f64>,
    /// Our step's time over PyTorch's (above 1: PyTorch is faster).
    pub ours_over_torch: Option<f64>,
}

/// One training run of the evidence section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// `teacher`, `student`, `obow`, `probe`, `fewshot`.
    pub kind: String,
    pub model: String,
    pub method: String,
    pub seed: u64,
    pub images: usize,
    pub epochs: usize,
    /// Test top-1 (%) of the last evaluation (few-shot: 5-way 5-shot accuracy).
    pub top1: Option<f64>,
    pub seconds: f64,
    pub dir: String,
    /// Cut off, failed, or what the number means.
    pub note: String,
}

/// How long a section took and how it ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SectionLog {
    pub name: String,
    pub seconds: f64,
    pub status: String,
}

/// Everything the report measured; `report.json` is this struct.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub smoke: bool,
    pub minutes: f64,
    pub commit: String,
    pub data: String,
    pub adapter: AdapterSection,
    pub checks: Vec<Check>,
    pub matmul: Vec<MatmulResult>,
    pub conv: Vec<ConvResult>,
    pub dispatch: Option<DispatchCost>,
    pub steps: Vec<StepResult>,
    pub distill_step: Vec<DistillStep>,
    /// Dispatches per kernel of the first distillation step (label, count).
    pub distill_dispatches: Vec<(String, usize)>,
    /// PyTorch on the same step; null with `torch_note` saying why when it could not run.
    pub torch: Option<Vec<TorchResult>>,
    pub torch_note: String,
    pub runs: Vec<RunResult>,
    pub sections: Vec<SectionLog>,
    pub elapsed_s: f64,
}

/// The report being written: the clock, the budget, and where it goes.
pub(crate) struct Writer {
    pub opts: Options,
    pub report: Report,
    t0: Instant,
}

impl Writer {
    /// Seconds since the report started.
    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    /// Seconds left of the whole budget.
    pub fn left(&self) -> f64 {
        self.opts.minutes * 60.0 - self.elapsed()
    }
    /// The time limit of one child run: `share` of the time left within [lo, hi]. Under
    /// `--smoke` a fixed guard against hangs instead: the smoke run checks that every section
    /// works, so it must not cut them short on a slow or busy machine.
    pub fn cap(&self, share: f64, lo: f64, hi: f64) -> f64 {
        if self.opts.smoke { 180.0 } else { (self.left() * share).clamp(lo, hi) }
    }
    /// Less than `need` seconds left (never under `--smoke`, see [`Self::cap`]).
    pub fn out_of_time(&self, need: f64) -> bool {
        !self.opts.smoke && self.left() < need
    }
    /// A progress line on stdout.
    pub fn say(&self, msg: impl AsRef<str>) {
        println!("[report {:>5.0}s] {}", self.elapsed(), msg.as_ref());
    }
    /// Rewrite report.json and report.md with what is known so far (atomically: a kill
    /// mid-write leaves the previous version).
    pub fn save(&mut self) -> Result<()> {
        self.report.elapsed_s = self.elapsed();
        let json = serde_json::to_string_pretty(&self.report).map_err(|e| Error::usage(format!("report.json: {e}")))?;
        crate::checkpoint::write_atomic(&self.opts.out.join("report.json"), json.as_bytes())?;
        render::charts(&self.report, &self.opts.out);
        crate::checkpoint::write_atomic(&self.opts.out.join("report.md"), render::markdown(&self.report).as_bytes())
    }
    /// Run one section, log its time and status, save the files; a failing section is
    /// reported and the next one runs.
    fn section(&mut self, name: &str, f: impl FnOnce(&mut Writer) -> Result<String>) -> Result<()> {
        let t = Instant::now();
        self.say(format!("== {name}"));
        let status = match f(self) {
            Ok(s) => s,
            Err(e) => {
                self.say(format!("{name}: {e}"));
                format!("failed: {e}")
            }
        };
        self.report.sections.push(SectionLog { name: name.into(), seconds: t.elapsed().as_secs_f64(), status });
        self.save()
    }
}

/// The commit the binary's repository is at, if git can say (GPU machines may lack git; the
/// prepared kit leaves `.gpu/commit`).
fn commit_of(repo: &Path) -> String {
    let git = std::process::Command::new("git").arg("-C").arg(repo).args(["rev-parse", "--short", "HEAD"]).output();
    if let Ok(o) = git {
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).trim().to_string();
        }
    }
    std::fs::read_to_string(repo.join(".gpu/commit")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// The adapter section (no GPU work but the peak kernel).
fn adapter_section(w: &mut Writer, ctx: &Context) -> Result<String> {
    let l = &ctx.limits;
    let a = &ctx.adapter;
    let (peak, source) = peak::peak(ctx, w.opts.smoke)?;
    w.report.adapter = AdapterSection {
        name: a.name.clone(),
        backend: a.backend.clone(),
        device_type: a.device_type.clone(),
        driver: a.driver.clone(),
        software: a.software,
        max_storage_binding_mib: l.max_storage_buffer_binding_size >> 20,
        max_buffer_mib: l.max_buffer_size >> 20,
        workgroup_storage_kib: l.max_compute_workgroup_storage_size >> 10,
        invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
        subgroups: ctx.device.features().contains(wgpu::Features::SUBGROUP),
        profile: if ctx.profile.software { "software" } else { "gpu" }.into(),
        matmul_variant: ctx.profile.matmul.name().into(),
        serial_row_max: ctx.profile.serial_row_max,
        subgroup_reductions: ctx.profile.subgroups,
        wide_bk: ctx.profile.wide_bk,
        split_k: ctx.profile.splits_k(),
        peak_gflops: peak,
        peak_source: source,
    };
    w.say(format!("adapter: {}; kernel profile {}", ctx.adapter, w.report.adapter.profile));
    Ok("done".into())
}

/// The benchmark section, scaled to `--smoke` and cut when its share of the time is spent.
fn bench_section(w: &mut Writer, ctx: &Context) -> Result<String> {
    use crate::bench;
    let smoke = w.opts.smoke;
    let stop_at = if smoke { f64::INFINITY } else { w.elapsed() + (w.left() * 0.3).clamp(60.0, 200.0) };
    let mut skipped = Vec::new();
    let sizes: &[usize] = if smoke { &[64, 96] } else { &[256, 1024, 2048, 4096] };
    let peak = w.report.adapter.peak_gflops;
    'sizes: for &n in sizes {
        for v in MatmulVariant::ALL {
            if w.elapsed() > stop_at {
                skipped.push(format!("matmul {n}"));
                break 'sizes;
            }
            let gflops = bench::matmul_gflops(ctx, v, n)?;
            w.say(format!("matmul {n} {}: {gflops:.1} GFLOP/s", v.name()));
            w.report.matmul.push(MatmulResult { n, variant: v.name().into(), gflops, pct_peak: peak.map(|p| 100.0 * gflops / p) });
        }
        w.save()?;
    }
    let batch = if smoke { 4 } else { 64 };
    for b in bench::conv_benches().into_iter().take(if smoke { 2 } else { usize::MAX }) {
        if w.elapsed() > stop_at {
            skipped.push("conv".into());
            break;
        }
        let b = bench::ConvBench { x: [batch, b.x[1], b.x[2], b.x[3]], ..b };
        let t = bench::conv_times(ctx, &b)?;
        w.report.conv.push(ConvResult {
            label: b.label.into(),
            forward_ms: t[0] * 1e3,
            input_grad_ms: t[1] * 1e3,
            weight_grad_ms: t[2] * 1e3,
        });
    }
    let (one, each, wait) = bench::dispatch_cost(ctx, if smoke { 20 } else { 300 })?;
    w.report.dispatch = Some(DispatchCost { one_submit_us: one, submit_each_us: each, submit_and_wait_us: wait });
    w.save()?;
    let mib = |b: u64| b as f64 / 1048576.0;
    if w.elapsed() < stop_at {
        let r = bench::model_step(ctx, "resnet20", batch)?;
        w.say(format!("resnet20 train step: {:.1} ms, {}", r.train_s * 1e3, r.train));
        w.report.steps.push(StepResult {
            what: "resnet20 train (SGD)".into(),
            batch,
            ms: r.train_s * 1e3,
            images_per_s: batch as f64 / r.train_s,
            dispatches: r.train.dispatches,
            arena_mib: mib(r.train.arena_bytes),
        });
    } else {
        skipped.push("resnet20 step".into());
    }
    for model in ["vit_micro_p4", "mixer_micro_p4"] {
        if w.elapsed() > stop_at {
            skipped.push(format!("{model} step"));
            continue;
        }
        let r = bench::model_step(ctx, model, batch)?;
        w.report.steps.push(StepResult {
            what: format!("{model} train (SGD)"),
            batch,
            ms: r.train_s * 1e3,
            images_per_s: batch as f64 / r.train_s,
            dispatches: r.train.dispatches,
            arena_mib: mib(r.train.arena_bytes),
        });
    }
    w.save()?;
    for student in ["vit_micro_p4", "mixer_micro_p4"] {
        if w.elapsed() > stop_at {
            skipped.push(format!("{student} distill step"));
            continue;
        }
        let r = bench::distill_step(ctx, student, batch, if smoke { 1 } else { 5 })?;
        w.say(format!("OFA step resnet20 -> {student}: {:.1} ms, {}", r.seconds * 1e3, r.stats));
        if w.report.distill_dispatches.is_empty() {
            w.report.distill_dispatches = r.by_kernel.clone();
        }
        w.report.distill_step.push(DistillStep {
            student: student.into(),
            batch,
            dispatches: r.stats.dispatches,
            ms: r.seconds * 1e3,
            images_per_s: batch as f64 / r.seconds,
            arena_mib: mib(r.stats.arena_bytes),
            memory_mib: mib(r.stats.arena_bytes + r.store_bytes),
        });
        w.save()?;
    }
    Ok(if skipped.is_empty() { "done".into() } else { format!("out of time for: {}", skipped.join(", ")) })
}

/// `webdistill report`.
pub fn run(ctx: &Context, opts: Options) -> Result<()> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::file(&opts.out, e))?;
    let report = Report {
        version: 1,
        smoke: opts.smoke,
        minutes: opts.minutes,
        commit: commit_of(&opts.repo),
        data: opts.data.clone(),
        torch_note: "not run yet".into(),
        ..Report::default()
    };
    let mut w = Writer { opts, report, t0: Instant::now() };
    w.say(format!("writing {} (budget {:.1} min{})", w.opts.out.display(), w.opts.minutes, if w.opts.smoke { ", smoke" } else { "" }));
    w.section("adapter", |w| adapter_section(w, ctx))?;
    w.section("correctness", |w| checks::run(w, ctx))?;
    w.section("benchmarks", |w| bench_section(w, ctx))?;
    w.section("pytorch", evidence::torch)?;
    w.section("training", evidence::training)?;
    let failed = w.report.checks.iter().filter(|c| !c.ok).count();
    w.say(format!(
        "done in {:.0}s: {} checks ({} failed), {} runs; read {}",
        w.elapsed(),
        w.report.checks.len(),
        failed,
        w.report.runs.len(),
        w.opts.out.join("report.md").display()
    ));
    if failed > 0 {
        return Err(Error::usage(format!(
            "{failed} correctness check(s) failed on this adapter: see {}",
            w.opts.out.join("report.md").display()
        )));
    }
    Ok(())
}
