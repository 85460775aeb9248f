//! `scripts/gpu-report --smoke`: every section of the GPU report at tiny sizes, through the
//! script a GPU machine runs (with this build's binary), so the report cannot rot between
//! the rare runs on real GPUs. Checks the files and the fields report.json promises.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

#[test]
fn gpu_report_smoke_writes_every_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("webdistill-report-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let status = Command::new(root.join("scripts/gpu-report"))
        .args(["--smoke", "--out"])
        .arg(&out)
        .env("BIN", env!("CARGO_BIN_EXE_webdistill"))
        .env_remove("DATA")
        .current_dir(root)
        .status()
        .expect("scripts/gpu-report runs");
    assert!(status.success(), "scripts/gpu-report --smoke failed: {status}");

    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    let r: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert_eq!(r["smoke"], true);
    // 1. The adapter, its limits and a peak.
    assert!(!r["adapter"]["name"].as_str().unwrap().is_empty());
    assert!(r["adapter"]["backend"].is_string() && r["adapter"]["software"].is_boolean());
    assert!(r["adapter"]["peak_gflops"].as_f64().unwrap() > 0.0, "{}", r["adapter"]);
    // 2. Correctness: kernels under at least two profiles, the three goldens, all passing.
    let checks = r["checks"].as_array().unwrap();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "correctness checks failed: {failed:#?}");
    let profiles: std::collections::BTreeSet<&str> =
        checks.iter().filter(|c| c["kind"] == "kernel").map(|c| c["profile"].as_str().unwrap()).collect();
    assert!(profiles.len() >= 3, "kernels checked under {profiles:?}");
    assert!(checks.iter().any(|c| c["name"].as_str().unwrap().ends_with("(gradient)")));
    for m in ["resnet20", "vit_micro_p4", "mixer_micro_p4"] {
        assert!(checks.iter().any(|c| c["kind"] == "golden" && c["name"].as_str().unwrap().starts_with(m)), "no golden check of {m}");
    }
    // 3. Benchmarks: matmul per variant, steps and both distillation steps with dispatches.
    let matmul = r["matmul"].as_array().unwrap();
    for v in ["tiled", "register"] {
        assert!(
            matmul.iter().any(|m| m["variant"] == v && m["n"].as_u64().unwrap() > 0 && m["gflops"].as_f64().unwrap() > 0.0),
            "matmul {v}"
        );
    }
    let steps = r["distill_step"].as_array().unwrap();
    for s in ["vit_micro_p4", "mixer_micro_p4"] {
        let d = steps.iter().find(|d| d["student"] == s).unwrap_or_else(|| panic!("no distill step for {s}"));
        assert!(d["dispatches"].as_u64().unwrap() > 0 && d["ms"].as_f64().unwrap() > 0.0 && d["images_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(!r["steps"].as_array().unwrap().is_empty() && !r["conv"].as_array().unwrap().is_empty());
    // 4. PyTorch: results, or null with the reason.
    assert!(r["torch"].is_array() || (r["torch"].is_null() && !r["torch_note"].as_str().unwrap().is_empty()), "{}", r["torch_note"]);
    // 5. Runs: the teacher, eight students, OBoW and its probes, each with a number.
    let runs = r["runs"].as_array().unwrap();
    let kinds = |k: &str| runs.iter().filter(|x| x["kind"] == k).count();
    assert_eq!(kinds("teacher"), 1);
    assert_eq!(kinds("student"), 8, "{runs:#?}");
    assert_eq!(kinds("obow"), 1);
    assert!(kinds("probe") >= 2 && kinds("fewshot") >= 2, "{runs:#?}");
    for x in runs {
        assert!(x["top1"].as_f64().is_some(), "run without a result: {x:#}");
        for k in ["model", "method", "seed", "images", "epochs"] {
            assert!(!x[k].is_null(), "run without {k}: {x:#}");
        }
    }
    assert!(Path::new(runs[0]["dir"].as_str().unwrap()).join("config.toml").exists(), "the teacher run keeps its config");

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for h in ["## 1. Adapter", "## 2. Correctness", "## 3. Benchmarks", "## 4. PyTorch", "## 5. Training evidence"] {
        assert!(md.contains(h), "report.md lacks {h}");
    }
    for png in ["matmul.png", "students.png"] {
        assert!(std::fs::metadata(out.join(png)).map(|m| m.len() > 1000).unwrap_or(false), "{png} missing");
    }
    std::fs::remove_dir_all(&out).ok();
}
