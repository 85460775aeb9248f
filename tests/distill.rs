//! OFA-KD end to end: branch shapes for each student family, FitNet's refusal of heterogeneous
//! pairs, and short runs on the bundled data where every family learns and distillation
//! lowers its loss. Budgets are tiny (the CI adapter is lavapipe).

mod common;
use common::ctx;
use webdistill::Store;
use webdistill::distill::fitnet::Hints;
use webdistill::distill::ofa::OfaBranches;
use webdistill::graph::Graph;
use webdistill::models::{self, ModelConfig};
use webdistill::nn::{Builder, Fwd};
use webdistill::train::Run;
use webdistill::train::main_job::{SHIPPED_TEACHER_MODEL, shipped_teacher};
use webdistill::train::runner::load_data;
use webdistill::train::{DistillConfig, TrainConfig};

/// Student name, image side, and for each branch the parameter-name fragments that must exist
/// (the OFAKD structure at that size).
const FAMILIES: &[(&str, usize, &[&[&str]])] = &[
    // CNN, 3 stages: stage 1 gets two stride-2 SepConvs, stage 2 one, the last a 1x1 conv.
    ("resnet8", 28, &[&["branch1.sep.0.", "branch1.sep.1."], &["branch2.sep.0."], &["branch3.conv."]]),
    ("mobilenetv2_cifar", 28, &[&["branch1.sep.2."], &["branch2.sep.1."], &["branch3.sep.0."]]),
    // ViT at 28 px with patch 4: a 7x7 grid (odd) is never merged; one transformer block per
    // later stage.
    ("vit_micro_p4", 28, &[&["branch1.blocks.2."], &["branch2.blocks.1."], &["branch3.blocks.0."]]),
    ("mixer_micro_p4", 28, &[&["branch1.blocks.2."], &["branch2.blocks.0."], &["branch3.fc."]]),
    // Swin at 32 px with patch 2: stage 1's 16x16 tokens are merged twice down to 4x4.
    ("swin_pico_p2w4", 32, &[&["branch1.merge.1."], &["branch2.merge.0."], &["branch3.blocks.0."]]),
];

#[test]
fn ofa_branches_give_class_logits_for_every_student_family() {
    for &(name, size, want) in FAMILIES {
        let cfg = ModelConfig::new(1, size, 10);
        let mut store = Store::new(0);
        let student = models::build(name, &mut store, "student.", &cfg).unwrap();
        let teacher = models::build("resnet20", &mut store, "teacher.", &cfg).unwrap();
        let branches = OfaBranches::new(&mut Builder::new(&mut store, "distill."), student.as_ref(), teacher.as_ref(), &[1, 2, 3], 10)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut g = Graph::new();
        let x = g.input("x", &[2, 1, size, size]).unwrap();
        let out = student.forward(&mut g, x, Fwd::eval()).unwrap();
        let logits = branches.forward(&mut g, &out.features, Fwd::eval()).unwrap();
        assert_eq!(logits.len(), 3, "{name}");
        for l in &logits {
            assert_eq!(g.shape(*l), [2, 10], "{name}: branch logits");
        }
        let names: Vec<&str> = store.params().iter().map(|p| p.name()).filter(|n| n.starts_with("distill.")).collect();
        for (stage, frags) in want.iter().enumerate() {
            for f in *frags {
                assert!(names.iter().any(|n| n.contains(f)), "{name}: branch {} lacks {f}; has {names:?}", stage + 1);
            }
        }
        // The branches live outside the student: nothing of them is saved with it.
        assert!(store.params().iter().filter(|p| p.name().starts_with("student.")).all(|p| !p.name().contains("branch")));
    }
    // Out-of-range stages are refused with the model's stage count.
    let cfg = ModelConfig::new(1, 28, 10);
    let mut store = Store::new(0);
    let s = models::build("resnet8", &mut store, "s.", &cfg).unwrap();
    let t = models::build("resnet20", &mut store, "t.", &cfg).unwrap();
    let e = OfaBranches::new(&mut Builder::new(&mut store, "d."), s.as_ref(), t.as_ref(), &[4], 10).err().unwrap().to_string();
    assert!(e.contains("stage 4") && e.contains("1..=3"), "{e}");
}

#[test]
fn fitnet_refuses_heterogeneous_pairs_and_unequal_maps() {
    let cfg = ModelConfig::new(1, 28, 10);
    let mut store = Store::new(0);
    let t = models::build("resnet20", &mut store, "t.", &cfg).unwrap();
    for student in ["vit_micro_p4", "mixer_micro_p4"] {
        let s = models::build(student, &mut store, &format!("{student}."), &cfg).unwrap();
        let e = Hints::new(&mut Builder::new(&mut store, "h."), s.as_ref(), t.as_ref()).err().unwrap().to_string();
        assert!(e.contains("heterogeneous") && e.contains(student) && e.contains("resnet20") && e.contains("use ofa"), "{e}");
    }
    // CNN -> CNN with different spatial sizes per stage (MobileNetV2 downsamples in its stem).
    let s = models::build("mobilenetv2_cifar", &mut store, "m.", &cfg).unwrap();
    let e = Hints::new(&mut Builder::new(&mut store, "h2."), s.as_ref(), t.as_ref()).err().unwrap().to_string();
    assert!(e.contains("equal spatial sizes"), "{e}");
    // A same-family pair builds.
    let s = models::build("resnet8", &mut store, "r.", &cfg).unwrap();
    Hints::new(&mut Builder::new(&mut store, "h3."), s.as_ref(), t.as_ref()).unwrap();
}

fn tiny(student: &str, method: &str, seed: u64) -> TrainConfig {
    TrainConfig {
        model: student.into(),
        epochs: 40,
        batch: 16,
        train_limit: 32,
        test_limit: 32,
        eval_batch: 32,
        lr: 2e-3,
        warmup_epochs: 0.0,
        seed,
        distill: Some(DistillConfig { method: method.into(), teacher: SHIPPED_TEACHER_MODEL.into(), ..DistillConfig::default() }),
        ..TrainConfig::preset("quick").unwrap()
    }
}

/// Mean training loss (and its terms) of the first `n` steps and of `n` steps after `gap` more.
fn loss_before_after(cfg: TrainConfig, n: usize, gap: usize) -> (f32, f32, Vec<String>) {
    let ctx = ctx();
    let splits = load_data("bundled", &cfg).unwrap();
    let teacher = shipped_teacher().unwrap();
    let mut s = Run::new(&ctx, cfg, &splits, Some(&teacher)).unwrap();
    let mean = |s: &mut Run, steps: usize| {
        s.train_steps(steps).unwrap();
        let m = s.parse_train_metrics(&s.request_train_metrics().unwrap().wait(&ctx).unwrap());
        assert_eq!(m.steps, steps);
        assert!(m.loss.is_finite());
        (m.loss, m.terms.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
    };
    let (before, terms) = mean(&mut s, n);
    mean(&mut s, gap);
    let (after, _) = mean(&mut s, n);
    (before, after, terms)
}

#[test]
fn every_student_family_learns_on_the_bundled_data() {
    // 32 images seen again and again: the training loss must fall clearly.
    for student in ["resnet8", "vit_micro_p4", "mixer_micro_p4"] {
        let (before, after, _) = loss_before_after(tiny(student, "none", 1), 4, 24);
        eprintln!("{student}: loss {before} -> {after}");
        assert!(after < 0.7 * before, "{student}: training loss {before} -> {after}");
    }
}

#[test]
fn a_short_ofa_distillation_lowers_the_loss() {
    // The shipped CNN teacher into a ViT student with the full OFA objective (three branches).
    let (before, after, terms) = loss_before_after(tiny("vit_micro_p4", "ofa", 2), 4, 24);
    eprintln!("ofa: loss {before} -> {after}");
    assert!(after < 0.9 * before, "ofa loss {before} -> {after}");
    assert!(terms.iter().any(|t| t.contains("ofa")), "terms {terms:?}");
}

#[test]
fn the_shipped_teacher_is_accurate_on_the_bundled_test_images() {
    let ctx = ctx();
    let cfg = TrainConfig { model: SHIPPED_TEACHER_MODEL.into(), test_limit: 200, eval_batch: 100, ..TrainConfig::default() };
    let splits = load_data("bundled", &cfg).unwrap();
    let mut s = Run::new(&ctx, cfg, &splits, None).unwrap();
    let t = shipped_teacher().unwrap();
    webdistill::checkpoint::load_into(&s.store, webdistill::train::STUDENT, &t, "shipped teacher", &Default::default()).unwrap();
    let r = s.evaluate().unwrap();
    eprintln!("shipped teacher: top-1 {}% on 200 bundled test images", r.top1);
    // 95.0% here (93.95% on all 10,000 test images: assets/teacher/README.md).
    assert!(r.top1 >= 92.0, "shipped teacher: top-1 {}% on 200 bundled test images", r.top1);
}
