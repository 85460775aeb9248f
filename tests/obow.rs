//! OBoW: the teacher's BoW targets, the vocabulary queue and the student's head against
//! PyTorch goldens (scripts/golden_obow.py, tests/golden/obow.safetensors), the teacher's EMA
//! and its cosine momentum, the queue pointer, and a short pre-training run.

mod common;

use common::{assert_close, ctx};
use std::collections::BTreeMap;
use std::path::Path;
use webdistill::checkpoint::FileTensor;
use webdistill::distill::obow::{Generator, Layout, Obow, Targets, Vocabulary};
use webdistill::graph::{DType, Graph, Plan};
use webdistill::nn::{BatchNorm2d, Builder, Fwd, Linear};
use webdistill::ops::obow::vocab_location;
use webdistill::optim::{Ema, Method, OptimState, Optimizer, Schedule};
use webdistill::store::{Init, Which};
use webdistill::train::Run;
use webdistill::train::{ObowConfig, TrainConfig};
use webdistill::{Store, data};

fn golden() -> BTreeMap<String, FileTensor> {
    webdistill::checkpoint::read(Path::new("tests/golden/obow.safetensors")).unwrap()
}

fn f64s(t: &FileTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

const SEED: u32 = 7;
/// Salt of level 0's location hash in `Obow::targets`.
const SALT0: u32 = 0x0B0;

/// One level over the golden vocabulary, the targets' graph, and a plan that runs it.
struct TargetRig {
    store: Store,
    plan: Plan,
    level: Vocabulary,
    feat: webdistill::graph::Var,
    bow: webdistill::graph::Var,
}

fn target_rig(gd: &BTreeMap<String, FileTensor>) -> TargetRig {
    let ctx = ctx();
    let (b, c, h, w) = (gd["feat"].shape[0], gd["feat"].shape[1], gd["feat"].shape[2], gd["feat"].shape[3]);
    let k = gd["vocab"].shape[0];
    let mut store = Store::new(0);
    let level = Vocabulary {
        stage: 0,
        channels: c,
        words: k,
        embedding: store.state("emb", &[k, c], DType::F32, Init::Values(gd["vocab"].data.clone().into())).unwrap(),
        ptr: store.state("ptr", &[1], DType::U32, Init::Zeros).unwrap(),
        mu: store.state("mu", &[1], DType::F32, Init::Const(0.5)).unwrap(),
    };
    let step = store.state("step", &[1], DType::U32, Init::Zeros).unwrap();
    let cfg = ObowConfig { words: k, inv_delta: 10.0, ..ObowConfig::default() };
    let obow = Obow { cfg, levels: vec![level.clone()], generators: vec![], monitor: None, dim: 1 };
    let mut g = Graph::new();
    let feat = g.input("feat", &[b, c, h, w]).unwrap();
    let dicts = obow.dictionaries(&mut g).unwrap();
    let st = g.state(&step);
    // A small block limit splits the batch into one distance block per image.
    let t = obow.targets(&mut g, &[feat], &dicts, st, SEED, (4 * k * (h - 2) * (w - 2)) as u64).unwrap();
    let bow = g.keep(t.bow[0]);
    let plan = Plan::compile(&ctx, &g, &mut store, "obow targets").unwrap();
    TargetRig { store, plan, level, feat, bow }
}

#[test]
fn bow_targets_and_mu_match_pytorch() {
    let gd = golden();
    let r = target_rig(&gd);
    r.plan.write(r.feat, &gd["feat"].data).unwrap();
    r.plan.step().unwrap();
    assert_close("mu", &r.store.read_state(&r.level.mu).unwrap(), &f64s(&gd["bow.mu"]), 1e-6, 1e-4);
    assert_close("bow", &r.plan.read(r.bow).unwrap(), &f64s(&gd["bow.bow"]), 1e-6, 2e-3);
}

#[test]
fn vocabulary_queue_takes_local_averages_and_wraps() {
    let gd = golden();
    let r = target_rig(&gd);
    let (b, c, h, w) = (gd["feat"].shape[0], gd["feat"].shape[1], gd["feat"].shape[2], gd["feat"].shape[3]);
    let k = gd["vocab"].shape[0];
    let avg = &gd["vocab.local_average"];
    let (ah, aw) = (h - 4, w - 4);
    r.plan.write(r.feat, &gd["feat"].data).unwrap();
    r.plan.step().unwrap();
    // Words 0..B are this batch's 3x3 averages at the hashed locations; the rest are untouched.
    let vocab = r.store.read_state(&r.level.embedding).unwrap();
    let mut want: Vec<f64> = f64s(&gd["vocab"]);
    for bi in 0..b {
        let loc = vocab_location(SEED, SALT0, 0, bi, h, w);
        for ch in 0..c {
            want[bi * c + ch] = avg.data[((bi * c + ch) * ah + loc / aw) * aw + loc % aw] as f64;
        }
    }
    assert_close("vocabulary after one step", &vocab, &want, 1e-6, 1e-4);
    assert_eq!(r.store.read_state(&r.level.ptr).unwrap(), vec![b as f32]);
    // The pointer advances by B per step and wraps at K.
    let steps = k / b;
    r.plan.run(steps - 1).unwrap();
    assert_eq!(r.store.read_state(&r.level.ptr).unwrap(), vec![0.0], "after K/B steps the queue is back at word 0");
    r.plan.step().unwrap();
    assert_eq!(r.store.read_state(&r.level.ptr).unwrap(), vec![b as f32]);
}

#[test]
fn vocabulary_size_must_be_a_multiple_of_the_batch() {
    let mut g = Graph::new();
    let mut store = Store::new(0);
    let v = store.state("emb", &[15, 8], DType::F32, Init::Zeros).unwrap();
    let p = store.state("ptr", &[1], DType::U32, Init::Zeros).unwrap();
    let s = store.state("step", &[1], DType::U32, Init::Zeros).unwrap();
    let (v, p, s) = (g.state(&v), g.state(&p), g.state(&s));
    let f = g.input("feat", &[2, 8, 7, 7]).unwrap();
    let e = g.vocab_update(v, p, f, s, 0, 0).unwrap_err().to_string();
    assert!(e.contains("multiple of the batch"), "{e}");
    let cfg = TrainConfig { batch: 64, obow: Some(ObowConfig { words: 1000, ..ObowConfig::default() }), ..TrainConfig::default() };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("multiple of the batch size"), "{e}");
}

#[test]
fn bow_head_forward_backward_match_pytorch() {
    let gd = golden();
    let ctx = ctx();
    let (k, c) = (gd["vocab"].shape[0], gd["vocab"].shape[1]);
    let (n, d) = (gd["head.pooled"].shape[0], gd["head.pooled"].shape[1]);
    let b = gd["bow.bow"].shape[0];
    let mut store = Store::new(0);
    let mut bld = Builder::new(&mut store, "head");
    let gen_ = Generator {
        fc: Linear::new(&mut bld, "fc", c, 2 * d, false).unwrap(),
        bn: BatchNorm2d::new(&mut bld, "bn", 2 * d).unwrap(),
        last: Linear::new(&mut bld, "last", 2 * d, d, true).unwrap(),
    };
    let step = store.state("step", &[1], DType::U32, Init::Zeros).unwrap();
    let obow =
        Obow { cfg: ObowConfig { kappa: 5.0, ..ObowConfig::default() }, levels: vec![], generators: vec![gen_], monitor: None, dim: d };
    let params = [
        ("fc.weight", obow.generators[0].fc.weight.clone()),
        ("bn.weight", obow.generators[0].bn.weight.clone()),
        ("bn.bias", obow.generators[0].bn.bias.clone()),
        ("last.weight", obow.generators[0].last.weight.clone()),
        ("last.bias", obow.generators[0].last.bias.clone().unwrap()),
    ];
    let mut g = Graph::new();
    let dict = g.input("dict", &[k, c]).unwrap();
    let pooled = g.input("pooled", &[n, d]).unwrap();
    let target = g.input("bow", &[b, k]).unwrap();
    let entropy = g.input("entropy", &[1]).unwrap();
    let st = g.state(&step);
    let w = obow.word_weights(&mut g, &[dict], Fwd::train(st, 0)).unwrap();
    let wk = g.keep(w[0]);
    let t = Targets { bow: vec![target], entropy: vec![entropy] };
    let l = obow.crop_loss(&mut g, pooled, &w, &t, Layout::CropMajor(n / b)).unwrap();
    let (ce, kl) = (g.keep(l.ce), g.keep(l.kl));
    let mut wrt = vec![pooled];
    wrt.extend(params.iter().map(|(_, p)| g.param(p)));
    let grads: Vec<_> = g.gradients(l.ce, &wrt).unwrap().into_iter().map(|v| g.keep(v.unwrap())).collect();
    let plan = Plan::compile(&ctx, &g, &mut store, "obow head").unwrap();
    for (name, p) in &params {
        store.write_param(p, Which::Value, &gd[*name].data).unwrap();
    }
    let h = gd["head.ce"].data[0] - gd["head.kl"].data[0];
    plan.write(dict, &gd["vocab"].data).unwrap();
    plan.write(pooled, &gd["head.pooled"].data).unwrap();
    plan.write(target, &gd["bow.bow"].data).unwrap();
    plan.write(entropy, &[h]).unwrap();
    plan.step().unwrap();
    assert_close("generated weights", &plan.read(wk).unwrap(), &f64s(&gd["head.weights"]), 1e-5, 1e-3);
    assert_close("ce", &plan.read(ce).unwrap(), &f64s(&gd["head.ce"]), 1e-5, 1e-4);
    assert_close("kl", &plan.read(kl).unwrap(), &f64s(&gd["head.kl"]), 1e-4, 1e-3);
    assert_close("d pooled", &plan.read(grads[0]).unwrap(), &f64s(&gd["head.grad.pooled"]), 1e-5, 2e-3);
    for (i, (name, _)) in params.iter().enumerate() {
        assert_close(&format!("d {name}"), &plan.read(grads[i + 1]).unwrap(), &f64s(&gd[&format!("head.grad.{name}")]), 1e-5, 2e-3);
    }
}

#[test]
fn teacher_ema_follows_the_cosine_momentum() {
    let ctx = ctx();
    let mut store = Store::new(0);
    let s = store.param("student.w", &[3], Init::Values(vec![1.0, -2.0, 0.5].into())).unwrap();
    let t = store.param("teacher.w", &[3], Init::Values(vec![0.0, 0.0, 4.0].into())).unwrap();
    let state = OptimState::register(&mut store, "opt").unwrap();
    store.upload(&ctx).unwrap();
    let total = 4;
    let mut opt = Optimizer {
        method: Method::Sgd { momentum: 0.0, nesterov: false },
        lr: 0.0,
        weight_decay: 0.0,
        schedule: Schedule::Constant,
        clip: None,
        ema: Some(Ema { pairs: vec![(s.clone(), t.clone())], base: 0.99, cosine_steps: Some(total) }),
    };
    let mut g = Graph::new();
    opt.apply_ema(&mut g, &mut store, &state).unwrap();
    // The student's own update (lr 0: unchanged) ticks the step, and must leave alpha alone.
    let sv = g.param(&s);
    let sq = g.square(sv).unwrap();
    let loss = g.sum_all(sq).unwrap();
    let grads = g.backward(loss).unwrap();
    opt.ema = None;
    opt.apply(&mut g, &mut store, &state, &grads).unwrap();
    let plan = Plan::compile(&ctx, &g, &mut store, "ema").unwrap();
    let (sw, mut tw) = ([1.0f64, -2.0, 0.5], [0.0f64, 0.0, 4.0]);
    for it in 0..total + 2 {
        plan.step().unwrap();
        let p = (it as f64 / total as f64).min(1.0);
        let a = 1.0 - (1.0 - 0.99) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        for i in 0..3 {
            tw[i] = a * tw[i] + (1.0 - a) * sw[i];
        }
        assert_close(&format!("teacher after step {it}"), &store.read_param(&t).unwrap(), &tw, 1e-6, 1e-5);
        assert_close(&format!("alpha at step {it}"), &store.read_state(&state.scalars).unwrap()[3..4], &[a], 1e-7, 1e-6);
    }
    assert!((store.read_state(&state.scalars).unwrap()[3] - 1.0).abs() < 1e-7, "alpha reaches 1 at the end of the schedule");
}

#[test]
fn short_obow_run_lowers_the_bow_loss() {
    let ctx = ctx();
    let splits = data::bundled().unwrap();
    let mut cfg = TrainConfig::preset("obow").unwrap();
    cfg.model = "resnet8".into();
    cfg.batch = 8;
    cfg.lr = 0.1;
    cfg.epochs = 1;
    cfg.train_limit = 8 * 24;
    cfg.test_limit = 50;
    cfg.obow = Some(ObowConfig { words: 64, crops: 1, patches: 2, ..ObowConfig::default() });
    let mut s = Run::new(&ctx, cfg, &splits, None).unwrap();
    let mut bow = Vec::new();
    for _ in 0..s.steps_per_epoch / 4 {
        s.train_steps(4).unwrap();
        let m = s.parse_train_metrics(&s.request_train_metrics().unwrap().wait(&ctx).unwrap());
        assert_eq!(m.steps, 4);
        let v = m.terms.iter().find(|(k, _)| k == "bow").unwrap().1;
        assert!(v.is_finite(), "BoW loss {v}");
        bow.push(v);
    }
    eprintln!("BoW loss per 4 steps: {bow:?}");
    assert!(bow.last().unwrap() < &(bow[0] * 0.9), "the BoW loss did not go down: {bow:?}");
    // The student backbone saves under PyTorch names and loads into a classifier run.
    let bytes = pollster::block_on(s.student_bytes(&BTreeMap::new())).unwrap();
    let tensors = webdistill::checkpoint::parse(&bytes, "student").unwrap();
    assert!(tensors.contains_key("conv1.weight"), "{:?}", tensors.keys().take(5).collect::<Vec<_>>());
}

#[test]
fn web_session_steps_and_answers_probe_and_words() {
    use webdistill::session::{self, Assets};
    let ctx = ctx();
    let settings = serde_json::json!({"model": "resnet8", "batch": 8, "words": 64, "epochs": 1, "train_limit": 64, "test_limit": 50});
    let mut s = session::create(&ctx, "obow", &settings, &Assets::new()).unwrap();
    assert_eq!(s.kind(), "obow");
    let m = pollster::block_on(s.step(2)).unwrap();
    assert!(m.loss.is_finite() && m.loss > 0.0 && m.step == 2, "{m:?}");
    let p = pollster::block_on(s.query("probe", &serde_json::json!({"train_images": 100, "test_images": 50, "epochs": 2}))).unwrap();
    for k in ["obow", "random"] {
        let a = p[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{p}");
    }
    let w = pollster::block_on(s.query("words", &serde_json::json!({"words": 3, "per_word": 2, "test_images": 20}))).unwrap();
    let (width, height) = (w["width"].as_u64().unwrap() as usize, w["height"].as_u64().unwrap() as usize);
    assert_eq!(w["pixels"].as_array().unwrap().len(), width * height * 4);
    assert!(height > 3 * 4 && width > 2 * 4, "{width}x{height}");
    let e = session::create(&ctx, "obow", &serde_json::json!({"batch": 8, "words": 60}), &Assets::new()).err().unwrap().to_string();
    assert!(e.contains("multiple of the batch"), "{e}");
}
