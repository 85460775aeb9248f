//! The self-test plan (the browser parity test's reference) and the training sessions the web
//! page drives: checked natively against f64 references.

mod common;
use common::{assert_close, ctx};
use std::collections::HashMap;
use webdistill::graph::{CpuTensor, Var};
use webdistill::selftest::{self, CLASSES, IN, LR, ROWS, WEIGHT_DECAY};
use webdistill::session::{self, Assets, Metrics};

#[test]
fn selftest_matches_the_f64_reference_and_one_adamw_step() {
    let ctx = ctx();
    let report = pollster::block_on(selftest::run(&ctx)).unwrap();
    // Names are part of the contract with the browser test.
    for name in ["hidden", "gelu", "layer_norm", "logits", "softmax", "cross_entropy", "loss", "grad.fc1.weight", "param.mix"] {
        assert!(report.get(name).is_some(), "missing output {name}");
    }

    // Forward: the same graph on the CPU in f64 from the initial parameters.
    let b = selftest::build(&ctx).unwrap();
    let mut feeds: HashMap<Var, CpuTensor> = HashMap::new();
    feeds.insert(b.x, CpuTensor::from_f32(&[ROWS, IN], &selftest::fixed_values(ROWS * IN, 9, 2.0)));
    feeds.insert(b.y, CpuTensor::new(&[ROWS], selftest::fixed_labels().iter().map(|&v| v as f64).collect()));
    let mut initial = HashMap::new();
    for (p, v) in b.graph.params() {
        let vals = b.store.read_param(&p).unwrap();
        feeds.insert(v, CpuTensor::from_f32(p.shape(), &vals));
        initial.insert(p.name().to_string(), vals);
    }
    let want = b.graph.eval_cpu(&feeds).unwrap();
    for &(name, v) in &b.kept {
        assert_close(name, &report.get(name).unwrap().values, &want[&v].data, 1e-5, 1e-4);
    }

    // Gradients are far from zero, so the AdamW step (about lr * sign(g)) is well conditioned
    // and adapters that differ by float rounding give the same update.
    for p in b.net.params() {
        let g = &report.get(&format!("grad.{}", p.name())).unwrap().values;
        let min = g.iter().fold(f32::INFINITY, |m, v| m.min(v.abs()));
        assert!(min > 1e-5, "grad of {} has an element of size {min}", p.name());
        // torch.optim.AdamW, first step: p = p (1 - lr wd) - lr g / (|g| + eps).
        let decay = if p.shape().len() >= 2 { WEIGHT_DECAY as f64 } else { 0.0 };
        let want: Vec<f64> = initial[p.name()]
            .iter()
            .zip(g)
            .map(|(&w, &g)| w as f64 * (1.0 - LR as f64 * decay) - LR as f64 * g as f64 / ((g as f64).abs() + 1e-8))
            .collect();
        assert_close(&format!("param.{}", p.name()), &report.get(&format!("param.{}", p.name())).unwrap().values, &want, 1e-6, 1e-5);
    }
    assert_eq!(report.get("logits").unwrap().shape, vec![ROWS, CLASSES]);
}

#[test]
fn selftest_is_deterministic_and_its_json_round_trips() {
    let ctx = ctx();
    let a = pollster::block_on(selftest::run(&ctx)).unwrap();
    let b = pollster::block_on(selftest::run(&ctx)).unwrap();
    let back: selftest::Report = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(back, a);
    let (worst, at) = selftest::compare(&a, &b, 1e-6, 0.0).unwrap();
    assert!(worst <= 1.0, "two runs differ: {at}");
    let mut c = a.clone();
    c.outputs[3].values[2] += 0.5;
    let (worst, at) = selftest::compare(&a, &c, 1e-4, 1e-3).unwrap();
    assert!(worst > 1.0 && at.starts_with("logits[2]"), "{worst} at {at}");
    c.outputs.pop();
    assert!(selftest::compare(&a, &c, 1e-4, 1e-3).is_err());
}

fn run(s: &mut Box<dyn session::Session>, n: usize) -> Metrics {
    pollster::block_on(s.step(n)).unwrap()
}

#[test]
fn mlp_session_learns_the_spirals() {
    let ctx = ctx();
    let mut s = session::create(&ctx, "mlp", &serde_json::json!({}), &Assets::new()).unwrap();
    assert_eq!(s.kind(), "mlp");
    let d = s.describe();
    assert_eq!(d["train_examples"], 1536);
    assert!(d["parameters"].as_u64().unwrap() > 4000);
    let before = pollster::block_on(s.evaluate()).unwrap();
    let first = run(&mut s, 1);
    assert_eq!(first.step, 1);
    assert!((first.loss - (3f32).ln()).abs() < 0.3, "initial loss {}", first.loss);
    let mut last = first.clone();
    for _ in 0..10 {
        last = run(&mut s, 40);
    }
    assert_eq!(last.step, 401);
    assert_eq!(last.examples, 40 * 128);
    assert!(last.images_per_sec > 0.0 && last.steps_per_sec > 0.0);
    let after = pollster::block_on(s.evaluate()).unwrap();
    assert!(after.loss < 0.5 * before.loss, "held-out loss {} -> {}", before.loss, after.loss);
    assert!(after.accuracy.unwrap() > 0.9, "held-out accuracy {:?}", after.accuracy);
    assert_eq!(after.step, 401);
}

#[test]
fn sessions_report_bad_settings_readably() {
    let ctx = ctx();
    let err = |kind: &str, cfg: serde_json::Value| session::create(&ctx, kind, &cfg, &Assets::new()).err().unwrap().to_string();
    assert!(err("nope", serde_json::json!({})).contains("unknown session kind 'nope' (known: mlp, distill, obow, run)"));
    let e = err("mlp", serde_json::json!({ "hiden": 3 }));
    assert!(e.contains("settings of the 'mlp' session") && e.contains("hiden"), "{e}");
    let e = err("mlp", serde_json::json!({ "batch": 100000 }));
    assert!(e.contains("larger than the training set"), "{e}");
    let mut s = session::create(&ctx, "mlp", &serde_json::Value::Null, &Assets::new()).unwrap();
    assert!(pollster::block_on(s.step(0)).unwrap_err().to_string().contains("n >= 1"));
    let e = pollster::block_on(s.query("cka", &serde_json::Value::Null)).unwrap_err().to_string();
    assert_eq!(e, "the 'mlp' session has no query named 'cka'");
}

#[test]
fn distill_session_steps_report_their_loss_terms() {
    // The Distil tab plots the distilled run's cross-entropy term next to the labels-only
    // run's loss: step() carries the named terms (none for one-part losses such as the MLP's).
    let ctx = ctx();
    let cfg = serde_json::json!({ "student": "mixer_micro_p4", "method": "none", "batch": 2, "train_limit": 4, "test_limit": 4 });
    let mut s = session::create(&ctx, "distill", &cfg, &Assets::new()).unwrap();
    let m = run(&mut s, 2);
    assert_eq!(m.step, 2);
    assert_eq!(m.terms.keys().collect::<Vec<_>>(), ["gt"]);
    assert!((m.terms["gt"] - m.loss).abs() < 1e-5 * m.loss.abs().max(1.0), "{:?} vs loss {}", m.terms, m.loss);
    let json = serde_json::to_value(&m).unwrap();
    assert!(json["terms"]["gt"].is_number(), "{json}");
    let mut mlp = session::create(&ctx, "mlp", &serde_json::json!({}), &Assets::new()).unwrap();
    let json = serde_json::to_value(run(&mut mlp, 1)).unwrap();
    assert!(json.get("terms").is_none(), "{json}");
    // Sizes that would overflow or fill the memory are refused before anything is made.
    let huge = serde_json::json!({ "classes": 1u64 << 40, "train_per_class": 1u64 << 40 });
    let e = session::create(&ctx, "mlp", &huge, &Assets::new()).err().unwrap().to_string();
    assert!(e.contains("more than the 10000000 a toy session makes"), "{e}");
}

#[test]
fn run_sessions_take_any_config_and_answer_the_run_s_queries() {
    // The `run` kind: any TrainConfig as JSON, here a tiny supervised resnet8.
    let ctx = ctx();
    let config = serde_json::json!({ "config": { "model": "resnet8", "batch": 4, "epochs": 1, "train_limit": 8, "test_limit": 8, "eval_batch": 8 } });
    let mut s = session::create(&ctx, "run", &config, &Assets::new()).unwrap();
    assert_eq!(s.kind(), "run");
    let d = s.describe();
    assert_eq!((d["recipe"].as_str(), d["student"].as_str()), (Some("supervised"), Some("resnet8")), "{d}");
    assert_eq!(d["terms"], serde_json::json!(["gt"]));
    let m = run(&mut s, 1);
    assert!(m.loss.is_finite() && m.step == 1, "{m:?}");
    let classes = pollster::block_on(s.query("classes", &serde_json::Value::Null)).unwrap();
    assert_eq!(classes.as_array().map(|a| a.len()), Some(10));
    let e = pollster::block_on(s.query("cka", &serde_json::Value::Null)).unwrap_err().to_string();
    assert!(e.contains("CKA needs a teacher"), "{e}");
    let e = pollster::block_on(s.query("nope", &serde_json::Value::Null)).unwrap_err().to_string();
    assert_eq!(e, "the 'supervised' run has no query named 'nope' (known: classes, teacher_eval, card, cka, sample, predict)");
    // Only the bundled data reaches a page.
    let bad = serde_json::json!({ "config": { "data": "cifar10:/x" } });
    let e = session::create(&ctx, "run", &bad, &Assets::new()).err().unwrap().to_string();
    assert!(e.contains("bundled data"), "{e}");
}

#[test]
fn the_binary_prints_no_driver_noise_without_a_runtime_dir() {
    // Mesa 22.x prints "XDG_RUNTIME_DIR is invalid or not set" twice when the variable is
    // missing (servers, containers); the binary points it at a temporary folder first.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webdistill")).arg("info").env_remove("XDG_RUNTIME_DIR").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("adapter:"), "{stdout}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "driver noise on stderr: {stderr}");
}

#[test]
fn without_any_adapter_the_binary_says_what_to_install() {
    // No Vulkan driver to load (and the Vulkan backend only): no adapter at all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .arg("info")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for line in ["no GPU adapter found", "Debian/Ubuntu: sudo apt install mesa-vulkan-drivers", "Fedora:", "macOS:", "Windows:"] {
        assert!(stderr.contains(line), "missing '{line}' in: {stderr}");
    }
}
