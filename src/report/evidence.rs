//! The report's evidence sections that run other programs: PyTorch on the same step
//! (`scripts/torch_distill_step.py`), and the training runs, each a child process of this
//! binary with its own deadline, so a run that hangs or outlives the budget is killed and the
//! report goes on. Every run keeps its folder (config, metrics, checkpoints) under
//! `DIR/runs/`.

use super::{RunResult, TorchResult, Writer};
use crate::error::Result;
use crate::train::report::EpochRecord;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child process ended.
struct Outcome {
    ok: bool,
    timed_out: bool,
    stdout: String,
    seconds: f64,
}

/// Run `cmd` until it exits or `limit` seconds pass (then kill it), stdout captured and
/// stderr into `log`.
fn run_child(mut cmd: Command, limit: f64, log: &Path) -> Result<Outcome> {
    let t = Instant::now();
    let err = std::fs::File::create(log).map_err(|e| crate::error::Error::file(log, e))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| crate::error::Error::usage(format!("cannot start {cmd:?}: {e}")))?;
    // Read stdout on a thread so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| crate::error::Error::usage(format!("waiting for a child: {e}")))? {
            break Some(s);
        }
        if t.elapsed().as_secs_f64() > limit {
            timed_out = true;
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    Ok(Outcome { ok: status.is_some_and(|s| s.success()), timed_out, stdout, seconds: t.elapsed().as_secs_f64() })
}

/// The PyTorch section: the same OFA step, eager and as a CUDA graph, on the device the
/// report's adapter is (CUDA when torch sees one, else the CPU).
pub(super) fn torch(w: &mut Writer) -> Result<String> {
    let script = w.opts.repo.join("scripts/torch_distill_step.py");
    let probe = Command::new(&w.opts.python).args(["-c", "import torch, timm; print(torch.cuda.is_available())"]).output();
    let cuda = match probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim() == "True",
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string();
            w.report.torch_note = format!("{} cannot import torch and timm ({why}): pip install torch timm", w.opts.python);
            return Ok("skipped: no torch".into());
        }
        Err(e) => {
            w.report.torch_note = format!("no {} to run PyTorch ({e})", w.opts.python);
            return Ok("skipped: no python".into());
        }
    };
    let (device, batch, steps) = if w.opts.smoke {
        ("cpu", 4, 1)
    } else if cuda {
        ("cuda", 64, 20)
    } else {
        ("cpu", 64, 3)
    };
    let mut results = Vec::new();
    let mut notes = Vec::new();
    // Smoke: one student (importing torch and building the models dominates on a CPU).
    let students: &[&str] = if w.opts.smoke { &["vit_micro_p4"] } else { &["vit_micro_p4", "mixer_micro_p4"] };
    for &student in students {
        let limit = w.cap(0.1, 20.0, 90.0);
        let mut cmd = Command::new(&w.opts.python);
        cmd.arg(&script).args(["--device", device, "--student", student, "--batch", &batch.to_string(), "--steps", &steps.to_string()]);
        if cuda && !w.opts.smoke {
            cmd.arg("--graphs");
        }
        let log = w.opts.out.join(format!("torch_{student}.log"));
        let o = run_child(cmd, limit, &log)?;
        if !o.ok {
            notes.push(format!("{student}: {} (see {})", if o.timed_out { "out of time" } else { "failed" }, log.display()));
        }
        for line in o.stdout.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let ms = v["ms_per_step"].as_f64().unwrap_or(f64::NAN);
            let ours = w.report.distill_step.iter().find(|d| d.student == student && d.batch == batch).map(|d| d.ms / ms);
            let r = TorchResult {
                student: student.into(),
                // The script names its graph modes with the device ("cuda graphs").
                mode: match v["mode"].as_str().unwrap_or("eager") {
                    "eager" => format!("{device} eager"),
                    m => m.to_string(),
                },
                batch,
                ms,
                images_per_s: v["images_per_s"].as_f64().unwrap_or(f64::NAN),
                peak_mib: v["peak_mib"].as_f64(),
                ours_over_torch: ours,
            };
            w.say(format!("pytorch {} {}: {:.1} ms/step", r.mode, student, r.ms));
            results.push(r);
        }
    }
    w.report.torch_note = if notes.is_empty() { format!("{device}, batch {batch}, median of {steps} steps") } else { notes.join("; ") };
    let n = results.len();
    w.report.torch = Some(results);
    Ok(format!("{n} results"))
}

/// Sizes of the training section.
struct Plan {
    train_limit: Option<usize>,
    test_limit: Option<usize>,
    teacher_epochs: usize,
    student_images: usize,
    student_epochs: usize,
    seeds: u64,
    obow_images: usize,
    obow_epochs: usize,
    batch: usize,
}

/// Seconds per image of a step, from the benchmark section (or a guess for a slow adapter).
fn per_image(w: &Writer, what: &str) -> f64 {
    w.report.steps.iter().find(|s| s.what.starts_with(what)).map(|s| 1.0 / s.images_per_s.max(1e-6)).unwrap_or(0.02)
}

fn plan(w: &Writer) -> Plan {
    if w.opts.smoke {
        return Plan {
            train_limit: Some(32),
            test_limit: Some(32),
            teacher_epochs: 1,
            student_images: 32,
            student_epochs: 1,
            seeds: 1,
            obow_images: 32,
            obow_epochs: 1,
            batch: 16,
        };
    }
    // The time left: 35% teacher, 45% students, 20% OBoW, each sized from the measured step
    // speed (with 1.5x for data, evaluation and plan compiles).
    let left = w.left().max(60.0);
    let teacher_epoch = 1.5 * 70_000.0 * per_image(w, "resnet20");
    let teacher_epochs = ((0.35 * left / teacher_epoch) as usize).clamp(1, 15);
    let student_img =
        1.5 * w.report.distill_step.iter().map(|d| d.ms / 1e3 / d.batch as f64).fold(0.0f64, f64::max).max(per_image(w, "vit_micro_p4"));
    let runs = 2.0 * 4.0;
    // 20,000 images x 3 epochs per run when it fits, fewer images when not (at least 2,000).
    let mut images = 20_000usize;
    while images > 2_000 && runs * 3.0 * images as f64 * student_img > 0.45 * left {
        images /= 2;
    }
    let seeds = if 2.0 * runs * 3.0 * images as f64 * student_img < 0.45 * left { 2 } else { 1 };
    let obow_img = 4.0 * per_image(w, "resnet20");
    let obow_images = ((0.2 * left / 2.0 / obow_img) as usize).clamp(1_000, 60_000);
    Plan {
        train_limit: None,
        test_limit: None,
        teacher_epochs,
        student_images: images,
        student_epochs: 3,
        seeds,
        obow_images,
        obow_epochs: 2,
        batch: 128,
    }
}

/// Test top-1 of a run's last evaluation.
fn last_top1(dir: &Path) -> Option<(f64, usize)> {
    let recs: Vec<EpochRecord> = crate::train::report::read_jsonl(&dir.join("metrics.jsonl")).ok()?;
    recs.last().map(|r| (r.test_top1 as f64, r.epoch))
}

/// One training child: `args` after the binary, deadline `limit`; the result from the run's
/// metrics (a run cut off keeps the epochs it finished).
fn train_run(w: &mut Writer, mut r: RunResult, args: &[String], limit: f64) -> Result<RunResult> {
    let dir = PathBuf::from(&r.dir);
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::file(&dir, e))?;
    let mut cmd = Command::new(&w.opts.bin);
    cmd.args(args).arg("--out").arg(&dir).arg("--quiet");
    w.say(format!("{} {} {} (seed {}): up to {:.0}s", r.kind, r.model, r.method, r.seed, limit));
    let o = run_child(cmd, limit, &dir.join("stderr.txt"))?;
    r.seconds = o.seconds;
    if let Some((top1, epochs)) = last_top1(&dir) {
        r.top1 = Some(top1);
        r.epochs = epochs;
    }
    if o.timed_out {
        r.note = format!("cut off at {:.0}s after {} epoch(s)", o.seconds, r.epochs);
    } else if !o.ok {
        let err = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
        r.note = format!("failed: {}", err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message"));
    }
    w.say(format!("  -> top-1 {} in {:.0}s {}", r.top1.map(|t| format!("{t:.2}%")).unwrap_or("-".into()), r.seconds, r.note));
    w.report.runs.push(r.clone());
    w.save()?;
    Ok(r)
}

/// A probe or few-shot child printing JSON: (accuracy, note).
fn json_run(w: &mut Writer, mut r: RunResult, args: &[String], limit: f64, key: &str) -> Result<()> {
    let mut cmd = Command::new(&w.opts.bin);
    cmd.args(args).arg("--json");
    let log = PathBuf::from(&r.dir).join(format!("{}_{}.stderr.txt", r.kind, r.method.replace(' ', "_")));
    let o = run_child(cmd, limit, &log)?;
    r.seconds = o.seconds;
    let v: Option<serde_json::Value> = o.stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok());
    r.top1 = v.as_ref().and_then(|v| match key {
        "top1" => v["top1"].as_f64(),
        // The last shot count asked for: 5-way 5-shot (1-shot under --smoke).
        _ => v["results"].as_array().and_then(|a| a.last()).and_then(|x| x["accuracy"].as_f64()),
    });
    if r.top1.is_none() {
        r.note = if o.timed_out { "out of time".into() } else { format!("failed (see {})", log.display()) };
    }
    w.say(format!("{} {}: {}", r.kind, r.method, r.top1.map(|t| format!("{t:.2}%")).unwrap_or(r.note.clone())));
    w.report.runs.push(r);
    w.save()
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// The training section: a resnet20 teacher, students by method, OBoW with probes.
pub(super) fn training(w: &mut Writer) -> Result<String> {
    let p = plan(w);
    let runs = w.opts.out.join("runs");
    let data = w.opts.data.clone();
    let limits = |a: &mut Vec<String>, train: Option<usize>| {
        if let Some(n) = train.or(p.train_limit) {
            a.extend([s("--train-limit"), s(n)]);
        }
        if let Some(n) = p.test_limit {
            a.extend([s("--test-limit"), s(n)]);
        }
    };
    let dataset_images = if p.train_limit.is_some() { p.train_limit.unwrap_or(0) } else { 60_000 };
    // 1. The teacher: SGD 0.1, momentum 0.9, wd 5e-4, cosine.
    let t_dir = runs.join("teacher");
    let mut a = vec![s("train"), s("--model"), s("resnet20"), s("--data"), data.clone(), s("--epochs"), s(p.teacher_epochs)];
    a.extend(["--batch", "128", "--opt", "sgd", "--lr", "0.1", "--momentum", "0.9", "--wd", "5e-4", "--seed", "0"].map(s));
    limits(&mut a, None);
    let teacher_limit = w.cap(0.4, 30.0, f64::INFINITY);
    let base = RunResult { seed: 0, images: dataset_images, ..RunResult::default() };
    let teacher = train_run(
        w,
        RunResult {
            kind: "teacher".into(),
            model: "resnet20".into(),
            method: "supervised".into(),
            dir: t_dir.display().to_string(),
            ..base.clone()
        },
        &a,
        teacher_limit,
    )?;
    // The students learn from the stronger of the new teacher and the shipped one.
    let shipped = w.opts.repo.join("assets/teacher/resnet20_fmnist.safetensors");
    let shipped_top1 = 93.95;
    let new_best = t_dir.join("best.safetensors");
    let use_new = !shipped.exists() || (teacher.top1.unwrap_or(0.0) > shipped_top1 && new_best.exists());
    let teacher_file = if use_new { new_best.clone() } else { shipped.clone() };
    w.say(format!("students distil from {}", teacher_file.display()));
    // 2. Students: none, kd (T=4), dkd, ofa (eps 1), AdamW 1e-3 wd 0.05, cosine.
    for seed in 0..p.seeds {
        for student in ["vit_micro_p4", "mixer_micro_p4"] {
            for method in ["none", "kd", "dkd", "ofa"] {
                // An equal share of 55% of what is left for each run still to come.
                let to_come = ((p.seeds - seed) as f64 * 8.0).max(1.0);
                if w.out_of_time(20.0) {
                    break;
                }
                let dir = runs.join(format!("{student}-{method}-s{seed}"));
                let mut a = vec![s("distill"), s("--teacher"), s("resnet20"), s("--teacher-weights"), teacher_file.display().to_string()];
                a.extend([s("--student"), s(student), s("--method"), s(method), s("--data"), data.clone()]);
                a.extend([s("--epochs"), s(p.student_epochs), s("--batch"), s(p.batch), s("--seed"), s(seed)]);
                a.extend(["--opt", "adamw", "--lr", "1e-3", "--wd", "0.05"].map(s));
                if method == "kd" {
                    a.extend(["--temperature", "4"].map(s));
                }
                limits(&mut a, Some(p.student_images));
                let r = RunResult {
                    kind: "student".into(),
                    model: student.into(),
                    method: method.into(),
                    seed,
                    images: p.student_images.min(dataset_images),
                    dir: dir.display().to_string(),
                    ..base.clone()
                };
                let limit = w.cap(0.55 / to_come, 15.0, f64::INFINITY);
                train_run(w, r, &a, limit)?;
            }
        }
    }
    if w.out_of_time(30.0) {
        return Ok("out of time before OBoW".into());
    }
    // 3. OBoW pre-training, then linear probe and few-shot against random init and supervised.
    let o_dir = runs.join("obow");
    let mut a = vec![s("obow"), s("--model"), s("resnet20"), s("--data"), data.clone(), s("--epochs"), s(p.obow_epochs)];
    a.extend([s("--batch"), s(if w.opts.smoke { 16 } else { 64 }), s("--seed"), s(0)]);
    if w.opts.smoke {
        a.extend(["--words", "64"].map(s));
    }
    limits(&mut a, Some(p.obow_images));
    let obow = RunResult {
        kind: "obow".into(),
        model: "resnet20".into(),
        method: "obow".into(),
        images: p.obow_images.min(dataset_images),
        dir: o_dir.display().to_string(),
        ..base.clone()
    };
    let limit = w.cap(0.6, 20.0, f64::INFINITY);
    train_run(w, obow, &a, limit)?;
    let backbones = [("obow", Some(o_dir.join("last.safetensors"))), ("random init", None), ("supervised", Some(teacher_file.clone()))];
    // Few-shot episodes draw from the test images: enough per class even when smoking.
    let (probe_train, probe_test) = if w.opts.smoke { (64, 200) } else { (10_000, 5_000) };
    for (name, weights) in backbones {
        if weights.as_ref().is_some_and(|p| !p.exists()) {
            continue;
        }
        for (kind, key) in [("probe", "top1"), ("fewshot", "accuracy")] {
            if w.out_of_time(5.0) {
                return Ok("out of time in the probes".into());
            }
            let mut a = vec![s(kind), s("--model"), s("resnet20"), s("--data"), data.clone()];
            if let Some(wt) = &weights {
                a.extend([s("--weights"), wt.display().to_string()]);
            }
            a.extend([s("--train-limit"), s(probe_train), s("--test-limit"), s(probe_test)]);
            if kind == "probe" {
                a.extend([s("--epochs"), s(if w.opts.smoke { 1 } else { 10 })]);
            } else if w.opts.smoke {
                a.extend(["--episodes", "20", "--queries", "4", "--shots", "1"].map(s));
            }
            let r = RunResult {
                kind: kind.into(),
                model: "resnet20".into(),
                method: name.into(),
                images: probe_train,
                dir: runs.display().to_string(),
                ..RunResult::default()
            };
            let limit = w.cap(0.3, 5.0, 120.0);
            json_run(w, r, &a, limit, key)?;
        }
    }
    Ok("done".into())
}
