//! Crashes lose nothing: a training run killed at any moment (between steps, right after a
//! mid-epoch checkpoint, in the middle of writing one) and continued with `--resume DIR` ends
//! with exactly the weights and the per-epoch records of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use webdistill::checkpoint;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webdistill-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A tiny run: resnet8 on 64 bundled images, batch 8 (8 steps an epoch), 2 epochs.
fn train(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_webdistill"));
    c.args(["train", "--model", "resnet8", "--train-limit", "64", "--test-limit", "32", "--batch", "8", "--epochs", "2"])
        .args(["--lr", "0.01", "--seed", "3", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

fn resume(out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .args(["train", "--quiet", "--save-every", "3", "--resume"])
        .arg(out)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "resume failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The step a run directory's state was saved at (0 if there is none).
fn saved_step(out: &Path) -> usize {
    let Ok(bytes) = std::fs::read(out.join("state.safetensors")) else { return 0 };
    checkpoint::metadata(&bytes, "state").ok().and_then(|m| m.get("step").and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Kill the child (SIGKILL) once its saved state has reached `step`.
fn kill_after_save(mut child: Child, out: &Path, step: usize) {
    let t0 = Instant::now();
    while saved_step(out) < step {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before saving step {step}");
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no save at step {step}");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn assert_same_run(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (checkpoint::read(&a.join("last.safetensors")).unwrap(), checkpoint::read(&b.join("last.safetensors")).unwrap());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, t) in &ta {
        assert!(t.data == tb[k].data, "{what}: tensor {k} differs from the uninterrupted run");
    }
    // The per-epoch records match too (timings aside): the resumed epoch's mean loss included.
    let recs = |d: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in ["images_per_s", "elapsed_s"] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    };
    assert_eq!(recs(a), recs(b), "{what}: metrics.jsonl");
    assert_eq!(
        std::fs::read_to_string(a.join("steps.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("steps.jsonl")).unwrap(),
        "{what}: steps.jsonl"
    );
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_uninterrupted_result() {
    let straight = tmp("straight");
    let o = train(&straight, &["--save-every", "0"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // 1. SIGKILL right after the first mid-epoch checkpoint (step 3 of epoch 1's 8).
    let a = tmp("kill-mid-epoch");
    kill_after_save(train(&a, &["--save-every", "3"]).spawn().unwrap(), &a, 3);
    // (Usually inside epoch 1; case 3 below resumes from a mid-epoch state deterministically.)
    resume(&a);
    assert_same_run(&straight, &a, "killed after a mid-epoch save");

    // 2. SIGKILL inside the second epoch, after its first mid-epoch save (saves land on
    //    multiples of 3: step 9, one step into epoch 2).
    let b = tmp("kill-second-epoch");
    kill_after_save(train(&b, &["--save-every", "3"]).spawn().unwrap(), &b, 9);
    resume(&b);
    assert_same_run(&straight, &b, "killed in the second epoch");

    // 3. Killed in the middle of writing a checkpoint: the 4th atomic write of the run
    //    (config.toml, card.json, then the states at steps 3 and 6) aborts half-way through the
    //    state of step 6; the state of step 3 must still be whole and resume from there.
    let c = tmp("kill-in-write");
    let o = train(&c, &["--save-every", "3"]).env("WEBDISTILL_CRASH_IN_WRITE", "4").output().unwrap();
    assert!(!o.status.success(), "the run should have been aborted in its 4th write");
    assert_eq!(saved_step(&c), 3, "the state before the torn write is intact");
    resume(&c);
    assert_same_run(&straight, &c, "killed while writing a checkpoint");

    // 4. Killed twice: in the first epoch, then again in the second after resuming.
    let d = tmp("kill-twice");
    kill_after_save(train(&d, &["--save-every", "3"]).spawn().unwrap(), &d, 3);
    let again = Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .args(["train", "--quiet", "--save-every", "3", "--resume"])
        .arg(&d)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_after_save(again, &d, 12);
    resume(&d);
    assert_same_run(&straight, &d, "killed twice");
}

/// A device lost in the middle of a run: every later step, evaluation and checkpoint read is an
/// `Error` that says what was running and that the device was lost, never a panic; the files
/// already saved stay as they were.
#[test]
fn a_lost_device_is_an_error_not_a_panic() {
    use webdistill::gpu::Context;
    use webdistill::train::{Run, TrainConfig};
    // Its own device: destroying it must not break the other tests of this binary.
    let ctx = Context::new().unwrap();
    let cfg = TrainConfig {
        model: "resnet8".into(),
        batch: 8,
        epochs: 1,
        train_limit: 32,
        test_limit: 16,
        eval_batch: 8,
        ..TrainConfig::default()
    };
    let splits = webdistill::data::bundled().unwrap();
    let mut run = Run::new(&ctx, cfg, &splits, None).unwrap();
    run.train_steps(2).unwrap();
    assert!(run.read_train_metrics().unwrap().loss.is_finite());
    let saved = tmp("lost");
    std::fs::create_dir_all(&saved).unwrap();
    let before = pollster::block_on(run.student_bytes(&Default::default())).unwrap();
    checkpoint::write_atomic(&saved.join("last.safetensors"), &before).unwrap();

    ctx.device.destroy(); // as a driver would: the library learns it from wgpu's callback
    let step = run.train_steps(1).and_then(|_| run.read_train_metrics());
    let e = step.expect_err("a step on a destroyed device").to_string();
    println!("step: {e}");
    assert!(e.to_lowercase().contains("lost") || e.to_lowercase().contains("destroy"), "{e}");
    let e = run.evaluate().expect_err("an evaluation on a destroyed device").to_string();
    println!("eval: {e}");
    assert!(e.contains("'supervised eval'") && e.contains("device was lost"), "{e}");
    let e = pollster::block_on(run.student_bytes(&Default::default())).expect_err("a checkpoint read on a destroyed device").to_string();
    println!("checkpoint: {e}");
    assert!(e.contains("reading back") && e.contains("device was lost"), "{e}");
    assert_eq!(std::fs::read(saved.join("last.safetensors")).unwrap(), before, "the saved checkpoint is untouched");
}

/// The same through the CLI: the device is lost at step 5 of 16; `train` exits non-zero with
/// the reason, the checkpoint of step 3 is intact, and `--resume` finishes the run exactly.
#[test]
fn the_cli_stops_cleanly_on_a_lost_device_and_resumes() {
    let straight = tmp("lost-straight");
    let o = train(&straight, &["--save-every", "0"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = tmp("lost-cli");
    let o = train(&d, &["--save-every", "3"]).env("WEBDISTILL_LOSE_DEVICE_AT_STEP", "5").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a run on a lost device must fail");
    assert!(err.contains("device was lost") && !err.contains("panicked"), "{err}");
    assert_eq!(saved_step(&d), 3);
    resume(&d);
    assert_same_run(&straight, &d, "device lost at step 5");
}
