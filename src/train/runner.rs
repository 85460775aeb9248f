//! The native epoch loop around a [`Run`]: steps in chunks (reading the metrics between
//! chunks also keeps the host from running far ahead of the GPU), per-epoch evaluation,
//! checkpoints (`last`/`best` student, the resumable `state`), `config.toml`,
//! `metrics.jsonl`, charts, and `--resume`. What it has to say goes to a [`Progress`]: the CLI
//! draws a progress bar, tests and the main job's callers may stay silent.

use super::config::TrainConfig;
use super::metrics::{EvalResult, TrainMetrics};
use super::report::{self, EpochRecord, StepRecord};
use super::run::Run;
use crate::checkpoint::{self, FileTensor};
use crate::data::{DataSpec, LoadOptions, Splits};
use crate::error::{Error, Result};
use crate::gpu::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How [`run`] behaves beyond the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue the run in the output directory from its `state.safetensors`.
    pub resume: bool,
    /// Write the charts (PNG) after every epoch.
    pub plot: bool,
    /// Stop after this many epochs of this call (None: until the configured epochs).
    pub stop_after: Option<usize>,
    /// When to write the resumable state in the middle of an epoch (it is always written at
    /// the end of one).
    pub save_every: SaveEvery,
}

/// Mid-epoch checkpoints: a crash loses at most this much training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SaveEvery {
    /// Every N training steps (exactly: the step chunks end there).
    Steps(usize),
    /// At the first chunk boundary after this many seconds since the last save.
    Seconds(f32),
    /// Only at the end of each epoch.
    Never,
}

impl Default for SaveEvery {
    /// A few minutes of training.
    fn default() -> Self {
        SaveEvery::Seconds(180.0)
    }
}

/// The metadata key of a part-done epoch's sums in `state.safetensors`.
const PARTIAL_EPOCH: &str = "webdistill.partial_epoch";

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub last: EvalResult,
    pub best_top1: f32,
    pub images_per_s: f32,
    pub dir: Option<PathBuf>,
}

/// What the loop reports as it goes. Every method has a do-nothing default.
pub trait Progress {
    /// The run is built: what it is, on what.
    fn start(&mut self, run: &Run) {
        let _ = run;
    }
    /// A remark worth a line (the student was initialised from a file, ...).
    fn note(&mut self, text: &str) {
        let _ = text;
    }
    /// Epoch `epoch` (1-based) of `epochs` starts; it has `steps` steps.
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        let _ = (epoch, epochs, steps);
    }
    /// `done` steps of this epoch are finished; `m` averages the latest chunk.
    fn steps(&mut self, done: usize, m: &TrainMetrics, images_per_s: f32) {
        let _ = (done, m, images_per_s);
    }
    /// The epoch is evaluated (and saved, when the run has a directory).
    fn epoch_end(&mut self, rec: &EpochRecord, epochs: usize) {
        let _ = (rec, epochs);
    }
    /// The run stops with an error.
    fn abandon(&mut self) {}
}

/// A [`Progress`] that says nothing.
pub struct Silent;
impl Progress for Silent {}

/// Load the data a spec names at the size a config asks for.
pub fn load_data(spec: &str, cfg: &TrainConfig) -> Result<Splits> {
    let s: DataSpec = spec.parse()?;
    let d = LoadOptions::default();
    let size = if cfg.img_size == 0 { d.size } else { cfg.img_size };
    let channels = if cfg.channels == 0 { d.channels } else { cfg.channels };
    s.load(&LoadOptions { size, channels, val_split: cfg.val_split })
}

/// The teacher's tensors a config names (distillation), read from disk.
fn load_teacher(cfg: &TrainConfig) -> Result<Option<BTreeMap<String, FileTensor>>> {
    match &cfg.distill {
        Some(d) if d.method != "none" && cfg.obow.is_none() => Ok(Some(checkpoint::read(Path::new(&d.teacher_weights))?)),
        _ => Ok(None),
    }
}

/// Train, distil or pre-train with OBoW (as `cfg` says) for the configured epochs, writing
/// everything into `dir` if given.
pub fn run(ctx: &Context, cfg: TrainConfig, dir: Option<&Path>, opts: &RunOptions, progress: &mut dyn Progress) -> Result<RunSummary> {
    let teacher = load_teacher(&cfg)?;
    run_with_teacher(ctx, cfg, teacher.as_ref(), dir, opts, progress)
}

/// [`run`] with the teacher's tensors already in memory (the main job embeds its teacher).
pub fn run_with_teacher(
    ctx: &Context,
    cfg: TrainConfig,
    teacher: Option<&BTreeMap<String, FileTensor>>,
    dir: Option<&Path>,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<RunSummary> {
    let splits = load_data(&cfg.data, &cfg)?;
    let init = cfg.init.clone();
    let mut r = Run::new(ctx, cfg, &splits, teacher)?;
    if !init.is_empty() && !opts.resume {
        let path = Path::new(&init);
        let n = r.load_student(&checkpoint::read(path)?, &path.display().to_string())?;
        progress.note(&format!("initialised the student from {} ({n} tensors)", path.display()));
    }
    run_loop(&mut r, dir, opts, progress)
}

/// The records of a run directory's finished epochs and the sums of the epoch it stopped in
/// (empty at an epoch's end), after restoring its state into `r`.
fn resume_from(r: &mut Run, d: &Path) -> Result<(Vec<EpochRecord>, EpochSums)> {
    let path = d.join("state.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, e))?;
    let source = path.display().to_string();
    r.load_state(&checkpoint::parse(&bytes, &source)?, &source)?;
    let partial = match checkpoint::metadata(&bytes, &source)?.get(PARTIAL_EPOCH) {
        Some(s) if r.step % r.steps_per_epoch != 0 => {
            serde_json::from_str(s).map_err(|e| Error::file(&path, format!("unreadable part-done epoch ({e})")))?
        }
        _ => EpochSums::default(),
    };
    let mp = d.join("metrics.jsonl");
    let mut records: Vec<EpochRecord> = if mp.exists() { report::read_jsonl(&mp)? } else { Vec::new() };
    // Drop records of epochs after the saved state (a crash between the writes).
    let done = r.step / r.steps_per_epoch;
    records.retain(|rec| rec.epoch <= done);
    let sp = d.join("steps.jsonl");
    if sp.exists() {
        let mut steps: Vec<StepRecord> = report::read_jsonl(&sp)?;
        steps.retain(|s| s.step <= r.step);
        report::write_jsonl(&sp, &steps)?;
    }
    Ok((records, partial))
}

/// Sums of one epoch's training metrics (kept in a mid-epoch checkpoint, so a resumed epoch
/// reports the same means as an uninterrupted one).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct EpochSums {
    loss: f64,
    steps: usize,
    terms: BTreeMap<String, f64>,
    lr: f32,
    /// One record per chunk read, for steps.jsonl.
    chunks: Vec<StepRecord>,
}

impl EpochSums {
    fn add(&mut self, m: &TrainMetrics) {
        self.loss += (m.loss * m.steps as f32) as f64;
        self.steps += m.steps;
        for (k, v) in &m.terms {
            *self.terms.entry(k.clone()).or_default() += (*v * m.steps as f32) as f64;
        }
        self.lr = m.lr;
    }
    fn mean_loss(&self) -> f32 {
        (self.loss / self.steps.max(1) as f64) as f32
    }
    fn mean_terms(&self) -> BTreeMap<String, f32> {
        self.terms.iter().map(|(k, v)| (k.clone(), (v / self.steps.max(1) as f64) as f32)).collect()
    }
}

/// Where and how often the epoch loop writes mid-epoch checkpoints.
struct Saver<'a> {
    dir: Option<&'a Path>,
    every: SaveEvery,
    last: Instant,
    /// The crash tests' device loss: with `WEBDISTILL_LOSE_DEVICE_AT_STEP=N` in the environment
    /// the device is destroyed once the run has passed step N (tests/crash.rs checks that the
    /// CLI then stops with a clear error and the last checkpoint resumes).
    lose_at: Option<usize>,
}

impl Saver<'_> {
    /// Steps the next chunk may take so that a `Steps(n)` save lands exactly on its step.
    fn limit(&self, step: usize) -> usize {
        match (self.dir, self.every) {
            (Some(_), SaveEvery::Steps(n)) if n > 0 => n - step % n,
            _ => usize::MAX,
        }
    }

    /// Write the resumable state with the part-done epoch's sums, if one is due.
    fn maybe_save(&mut self, r: &Run, sums: &EpochSums) -> Result<()> {
        let Some(d) = self.dir else { return Ok(()) };
        let due = match self.every {
            SaveEvery::Steps(n) => n > 0 && r.step % n == 0,
            SaveEvery::Seconds(s) => self.last.elapsed().as_secs_f32() >= s,
            SaveEvery::Never => false,
        };
        // The epoch's own end writes everything (`save_epoch`).
        if due && r.step % r.steps_per_epoch != 0 {
            let json = serde_json::to_string(sums).map_err(|e| Error::usage(format!("saving the epoch's sums: {e}")))?;
            let meta = BTreeMap::from([(PARTIAL_EPOCH.to_string(), json)]);
            checkpoint::write_atomic(&d.join("state.safetensors"), &pollster::block_on(r.state_bytes_with(&meta))?)?;
            self.last = Instant::now();
        }
        Ok(())
    }
}

/// Train the rest of an epoch (all of it, or what a resumed checkpoint left, whose sums are
/// `sums`) in chunks, each chunk's metrics read (and checked) before the next is submitted.
fn train_epoch(r: &mut Run, progress: &mut dyn Progress, mut sums: EpochSums, saver: &mut Saver<'_>) -> Result<EpochSums> {
    let spe = r.steps_per_epoch;
    let t0 = Instant::now();
    let chunk = (spe / 20).clamp(1, 50);
    let mut done = r.step % spe;
    let first = done;
    while done < spe {
        let n = chunk.min(spe - done).min(saver.limit(r.step));
        r.train_steps(n)?;
        let m = r.read_train_metrics()?;
        done += n;
        sums.add(&m);
        sums.chunks.push(StepRecord { step: r.step, loss: m.loss, lr: m.lr });
        progress.steps(done, &m, ((done - first) * r.cfg.batch) as f32 / t0.elapsed().as_secs_f32());
        if !m.loss.is_finite() {
            return Err(Error::usage(format!("the loss diverged (NaN/inf) at step {}: lower --lr or add --clip-grad", r.step)));
        }
        saver.maybe_save(r, &sums)?;
        if saver.lose_at.is_some_and(|n| r.step >= n) {
            r.ctx.destroy(&format!("destroyed after step {} by WEBDISTILL_LOSE_DEVICE_AT_STEP", r.step));
        }
    }
    Ok(sums)
}

/// Write the epoch's checkpoints and records into `d`: the student (`last`, and `best` when it
/// is the best so far), the resumable state, the metrics line, the epoch's loss chunks, the charts.
fn save_epoch(r: &Run, d: &Path, rec: &EpochRecord, chunks: &[StepRecord], records: &[EpochRecord], best: bool, plot: bool) -> Result<()> {
    let meta = BTreeMap::from([
        ("adapter".to_string(), r.cfg.adapter.clone()),
        ("epoch".to_string(), rec.epoch.to_string()),
        ("top1".to_string(), format!("{:.2}", rec.test_top1)),
    ]);
    let student = pollster::block_on(r.student_bytes(&meta))?;
    checkpoint::write_atomic(&d.join("last.safetensors"), &student)?;
    if best {
        checkpoint::write_atomic(&d.join("best.safetensors"), &student)?;
    }
    report::append_jsonl(&d.join("metrics.jsonl"), std::slice::from_ref(rec))?;
    report::append_jsonl(&d.join("steps.jsonl"), chunks)?;
    if plot {
        report::plot_run(d, records)?;
    }
    // The state last: it is what a resume starts from, so a crash before it redoes the epoch
    // (and resume drops the records written for it), and one after it loses nothing.
    checkpoint::write_atomic(&d.join("state.safetensors"), &pollster::block_on(r.state_bytes())?)
}

/// The epoch loop over a built [`Run`].
pub fn run_loop(r: &mut Run, dir: Option<&Path>, opts: &RunOptions, progress: &mut dyn Progress) -> Result<RunSummary> {
    let mut records: Vec<EpochRecord> = Vec::new();
    let mut partial = EpochSums::default();
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::file(d, e))?;
        if opts.resume {
            (records, partial) = resume_from(r, d)?;
        } else {
            let _ = std::fs::remove_file(d.join("metrics.jsonl"));
            let _ = std::fs::remove_file(d.join("steps.jsonl"));
        }
        checkpoint::write_atomic(&d.join("config.toml"), r.cfg.to_toml()?.as_bytes())?;
        // The card (class names, input, normalisation) as last.safetensors carries it.
        checkpoint::write_atomic(&d.join("card.json"), r.card().to_json().as_bytes())?;
    }
    let spe = r.steps_per_epoch;
    let (start_epoch, epochs) = (r.step / spe, r.cfg.epochs);
    let mut best = records.iter().map(|rec| rec.test_top1).fold(0.0f32, f32::max);
    progress.start(r);
    // The teacher's own accuracy first: a teacher that does not fit the data cannot teach it.
    if !opts.resume && r.teacher.is_some() && r.cfg.distill.as_ref().is_some_and(|d| d.method != "none") && r.cfg.obow.is_none() {
        let t = r.evaluate_teacher()?;
        let name = r.cfg.distill.as_ref().map(|d| d.teacher.clone()).unwrap_or_default();
        progress.note(&format!(
            "teacher {name} on the {} test images: top-1 {:.2}%, top-5 {:.2}%, loss {:.4}",
            t.images, t.top1, t.top5, t.loss
        ));
        if let Some(d) = dir {
            let json = serde_json::json!({ "teacher": name, "images": t.images, "top1": t.top1, "top5": t.top5, "loss": t.loss });
            checkpoint::write_atomic(&d.join("teacher_eval.json"), serde_json::to_string_pretty(&json).unwrap().as_bytes())?;
        }
    }
    let t_run = Instant::now();
    let mut ips = 0.0f32;
    let mut last = EvalResult::default();
    let end_epoch = opts.stop_after.map(|n| (start_epoch + n).min(epochs)).unwrap_or(epochs);
    let lose_at = std::env::var("WEBDISTILL_LOSE_DEVICE_AT_STEP").ok().and_then(|v| v.parse::<usize>().ok());
    let mut saver = Saver { dir, every: opts.save_every, last: Instant::now(), lose_at };
    for epoch in start_epoch..end_epoch {
        progress.epoch_start(epoch + 1, epochs, spe);
        let t0 = Instant::now();
        let steps_now = spe - r.step % spe;
        let sums = match train_epoch(r, progress, std::mem::take(&mut partial), &mut saver) {
            Ok(s) => s,
            Err(e) => {
                progress.abandon();
                return Err(e);
            }
        };
        ips = (steps_now * r.cfg.batch) as f32 / t0.elapsed().as_secs_f32();
        last = r.evaluate()?;
        let rec = EpochRecord {
            epoch: epoch + 1,
            step: r.step,
            lr: sums.lr,
            train_loss: sums.mean_loss(),
            test_loss: last.loss,
            test_top1: last.top1,
            test_top5: last.top5,
            images_per_s: ips,
            elapsed_s: t_run.elapsed().as_secs_f32(),
            // Supervised runs keep their records as before; OBoW's terms go to terms.png.
            terms: if r.cfg.obow.is_some() { sums.mean_terms() } else { BTreeMap::new() },
        };
        progress.epoch_end(&rec, epochs);
        records.push(rec.clone());
        if let Some(d) = dir {
            save_epoch(r, d, &rec, &sums.chunks, &records, rec.test_top1 >= best, opts.plot)?;
        }
        best = best.max(rec.test_top1);
    }
    if start_epoch >= end_epoch {
        last = r.evaluate()?;
    }
    Ok(RunSummary { last, best_top1: best, images_per_s: ips, dir: dir.map(|d| d.to_path_buf()) })
}
