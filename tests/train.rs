//! End-to-end runs on the bundled Fashion-MNIST subset (tiny budgets for the software GPU):
//! a model learns, a run resumes exactly, checkpoints and reports are written.

mod common;
use common::ctx;
use webdistill::train::TrainConfig;
use webdistill::train::report::{EpochRecord, StepRecord, read_jsonl};
use webdistill::train::runner::{RunOptions, Silent, load_data, run};

fn tiny(model: &str, epochs: usize) -> TrainConfig {
    TrainConfig {
        model: model.into(),
        epochs,
        batch: 16,
        train_limit: 96,
        test_limit: 48,
        eval_batch: 20,
        lr: 2e-3,
        warmup_epochs: 0.0,
        ..TrainConfig::preset("quick").unwrap()
    }
}

#[test]
fn resume_continues_exactly_where_it_stopped() {
    let ctx = ctx();
    let base = std::env::temp_dir().join(format!("webdistill-resume-{}", std::process::id()));
    let (a, b) = (base.join("straight"), base.join("resumed"));
    let straight = run(&ctx, tiny("resnet8", 2), Some(&a), &RunOptions::default(), &mut Silent).unwrap();
    // Stop after one of the two epochs (as an interrupted run), then resume the directory.
    run(&ctx, tiny("resnet8", 2), Some(&b), &RunOptions { stop_after: Some(1), ..Default::default() }, &mut Silent).unwrap();
    let cfg_path = b.join("config.toml");
    let cfg = TrainConfig::from_toml(&std::fs::read_to_string(&cfg_path).unwrap(), "config").unwrap();
    let resumed = run(&ctx, cfg, Some(&b), &RunOptions { resume: true, plot: true, ..Default::default() }, &mut Silent).unwrap();
    let wa = webdistill::checkpoint::read(&a.join("last.safetensors")).unwrap();
    let wb = webdistill::checkpoint::read(&b.join("last.safetensors")).unwrap();
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, t) in &wa {
        assert_eq!(t.data, wb[k].data, "tensor {k} differs after resume");
    }
    assert_eq!(straight.last, resumed.last);
    let recs: Vec<EpochRecord> = read_jsonl(&b.join("metrics.jsonl")).unwrap();
    assert_eq!(recs.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    // The per-chunk loss log of the resumed run is the straight run's, line for line.
    let (sa, sb): (Vec<StepRecord>, Vec<StepRecord>) =
        (read_jsonl(&a.join("steps.jsonl")).unwrap(), read_jsonl(&b.join("steps.jsonl")).unwrap());
    assert_eq!(sa, sb);
    assert_eq!(sa.last().map(|s| s.step), Some(2 * 96 / 16));
    assert!(sa.windows(2).all(|w| w[0].step < w[1].step && w[1].lr > 0.0), "{sa:?}");
    for f in ["best.safetensors", "state.safetensors", "config.toml", "loss.png", "accuracy.png"] {
        assert!(b.join(f).exists(), "{f} missing");
    }
    // The student checkpoint holds exactly the model (PyTorch names), no optimizer or data.
    assert!(wa.keys().all(|k| !k.starts_with("opt") && !k.starts_with("data") && !k.starts_with("student.")));
    assert!(wa.contains_key("fc.weight") && wa.contains_key("layer1.0.bn1.num_batches_tracked"));
}

#[test]
fn bundled_data_loads_for_the_trainer() {
    let cfg = TrainConfig::default();
    let s = load_data("bundled", &cfg).unwrap();
    assert_eq!((s.train.n, s.test.n, s.train.classes), (5000, 1000, 10));
    let e = load_data("cifar100:/nonexistent-dir", &cfg).unwrap_err().to_string();
    assert!(e.contains("nonexistent-dir"), "{e}");
}
