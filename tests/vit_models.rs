//! Token models (ViT/DeiT, Swin, MLP-Mixer, ResMLP): eval-mode logits equal timm's on the same
//! synthetic weights and input (golden files from scripts/golden_vit.py), through a
//! checkpoint written by us and read back by `predict`; parameter names and shapes equal
//! timm's state dict; stage features have the advertised shapes; a training step runs and
//! reaches every parameter.

mod common;
use common::{ctx, golden};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use webdistill::Store;
use webdistill::checkpoint;
use webdistill::data::npy;
use webdistill::graph::{Graph, Plan};
use webdistill::models::{self, Backbone, FeatureShape, ModelConfig};
use webdistill::nn::{Builder, Fwd};
use webdistill::train::inference::predict;

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.safetensors"))
}

/// Where the checkpoints we write go (scripts/golden_vit.py --check-exports loads them in timm).
fn export_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vit-export")
}

/// timm's state-dict names and shapes, stored in the golden file's metadata.
fn timm_state_dict(name: &str) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(golden_path(name)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let json = &meta.metadata().as_ref().expect("golden metadata")["state_dict"];
    serde_json::from_str(json).unwrap()
}

/// max |got - want| / max |want| (the logits' scale; elementwise ratios blow up near zero).
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(w.abs() as f64));
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs()).fold(0.0, f64::max) / scale
}

/// Build `name` as timm was built for the golden file, check names/shapes against timm, fill
/// the synthetic weights, save a checkpoint, run `predict` on it and compare with timm.
fn golden_case(name: &str) {
    let ctx = ctx();
    let gold = checkpoint::read(&golden_path(name)).unwrap();
    let want = &gold["logits"];
    let classes = want.shape[1];
    let entry = models::entry(name).unwrap();
    let img = entry.default_img;
    let mut store = Store::new(0);
    models::build(name, &mut store, "", &ModelConfig::new(3, img, classes)).unwrap();

    let ours: BTreeMap<String, Vec<usize>> = store
        .params()
        .iter()
        .map(|p| (p.name().to_string(), p.shape().to_vec()))
        .chain(store.states().iter().map(|s| (s.name().to_string(), s.shape().to_vec())))
        .collect();
    assert_eq!(ours, timm_state_dict(name), "{name}: parameter names/shapes differ from timm's state dict");

    store.upload(&ctx).unwrap();
    golden::fill_store(&store, "").unwrap();
    let path = export_dir().join(format!("{name}.safetensors"));
    checkpoint::save(&store, "", &path, &BTreeMap::from([("model".to_string(), name.to_string())])).unwrap();

    let shape = [2, 3, img, img];
    let x = golden::synthetic("input", &shape);
    let (oshape, got) = predict(&ctx, name, &path, &shape, &x, 2).unwrap();
    assert_eq!(oshape, vec![2, classes]);
    let err = rel_error(&got, &want.data);
    println!("{name}: logits rel. error vs timm {err:.2e}");
    assert!(err < 1e-4, "{name}: logits differ from timm (rel. error {err:.2e})\n got {got:?}\nwant {:?}", want.data);
}

#[test]
fn golden_vit_micro_p4() {
    golden_case("vit_micro_p4");
}

#[test]
fn golden_vit_nano_p4() {
    golden_case("vit_nano_p4");
}

#[test]
fn golden_mixer_nano_p4() {
    golden_case("mixer_nano_p4");
}

#[test]
fn golden_vit_tiny_p4() {
    golden_case("vit_tiny_p4");
}

#[test]
fn golden_vit_small_p4() {
    golden_case("vit_small_p4");
}

#[test]
fn golden_mixer_micro_p4() {
    golden_case("mixer_micro_p4");
}

#[test]
fn golden_resmlp_12_p4() {
    golden_case("resmlp_12_p4");
}

#[test]
fn golden_swin_tiny_p2w4() {
    golden_case("swin_tiny_p2w4");
}

#[test]
fn golden_swin_nano_p2w4() {
    golden_case("swin_nano_p2w4");
}

#[test]
fn golden_swin_pico_p2w4() {
    golden_case("swin_pico_p2w4");
}

#[test]
#[ignore = "224-px model, 2.5 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_deit_tiny_patch16_224() {
    golden_case("deit_tiny_patch16_224");
}

#[test]
#[ignore = "224-px model, 25 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_mixer_b16_224() {
    golden_case("mixer_b16_224");
}

#[test]
#[ignore = "224-px model, 6 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_resmlp_12_224() {
    golden_case("resmlp_12_224");
}

#[test]
#[ignore = "224-px model, 9 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_swin_tiny_224() {
    golden_case("swin_tiny_224");
}

#[test]
#[ignore = "224-px model, 2.8 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_swin_nano_224() {
    golden_case("swin_nano_224");
}

#[test]
#[ignore = "224-px model, 1.6 GFLOPs/image: slow on lavapipe; run with --ignored"]
fn golden_swin_pico_224() {
    golden_case("swin_pico_224");
}

#[test]
fn every_token_model_has_a_golden_file() {
    for e in models::registry() {
        if is_token_model(e.name) {
            assert!(golden_path(e.name).exists(), "{}: no golden file; run scripts/golden_vit.py", e.name);
        }
    }
}

fn is_token_model(name: &str) -> bool {
    ["vit_", "deit_", "swin_", "mixer_", "resmlp_"].iter().any(|p| name.starts_with(p))
}

#[test]
fn predict_cli_reads_a_timm_written_checkpoint() {
    // timm -> webdistill: a float16 state dict written by timm/safetensors, through the binary.
    let name = "mixer_micro_p4";
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.timm_f16.safetensors"));
    let want = checkpoint::read(&golden_path(name)).unwrap().remove("logits_f16_weights").unwrap();
    let dir = export_dir().join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, out) = (dir.join("x.npy"), dir.join("logits.npy"));
    npy::write_npy(&input, &[2, 3, 32, 32], &golden::synthetic("input", &[2, 3, 32, 32])).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .args(["predict", "--model", name, "--weights"])
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .status()
        .unwrap();
    assert!(status.success());
    let (shape, got) = npy::read_npy(&out).unwrap();
    assert_eq!(shape, vec![2, 10]);
    let err = rel_error(&got, &want.data);
    assert!(err < 1e-4, "predict on timm's checkpoint: rel. error {err:.2e}");
}

#[test]
fn stage_features_have_the_advertised_shapes() {
    // Every token model, at its default size: graph building only (nothing runs).
    for e in models::registry().into_iter().filter(|e| is_token_model(e.name)) {
        let cfg = e.default_config();
        let mut store = Store::new(0);
        let net = (e.build)(&mut webdistill::nn::Builder::new(&mut store, ""), &cfg).unwrap();
        let mut g = Graph::new();
        let x = g.input("x", &[2, 3, cfg.img_size, cfg.img_size]).unwrap();
        let out = net.forward(&mut g, x, Fwd::eval()).unwrap();
        let shapes = net.feature_shapes();
        assert_eq!(shapes.len(), 4, "{}", e.name);
        assert_eq!(out.features.len(), 4, "{}", e.name);
        for (v, s) in out.features.iter().zip(&shapes) {
            let FeatureShape::Tokens { n, d, .. } = *s else { panic!("{}: token models report token features", e.name) };
            assert_eq!(g.shape(*v), [2, n, d], "{}", e.name);
        }
        assert_eq!(g.shape(out.pooled), [2, net.pooled_dim()], "{}", e.name);
        assert_eq!(g.shape(out.logits), [2, cfg.num_classes], "{}", e.name);
        assert_eq!(store.param_by_name(net.head_weight()).map(|p| p.shape()[0]), Some(cfg.num_classes), "{}", e.name);
    }
}

#[test]
fn ofa_feature_taps() {
    use webdistill::models::feature_blocks;
    assert_eq!(feature_blocks(12), [1, 3, 9, 11]);
    assert_eq!(feature_blocks(6), [1, 2, 4, 5]);
    assert_eq!(feature_blocks(8), [1, 3, 5, 7]);
    // Swin-T's stage features at 224 px are OFA-KD's (3136,96), (784,192), (196,384), (49,768).
    let mut store = Store::new(0);
    let net = models::build("swin_tiny_224", &mut store, "", &ModelConfig::new(3, 224, 1000)).unwrap();
    let want: Vec<FeatureShape> =
        [(3136, 96), (784, 192), (196, 384), (49, 768)].iter().map(|&(n, d)| FeatureShape::Tokens { n, d, prefix: 0 }).collect();
    assert_eq!(net.feature_shapes(), want);
}

/// Small members of each family (the registry's are too slow to train in a test on lavapipe).
fn small_models(store: &mut Store, cfg: &ModelConfig) -> Vec<Box<dyn Backbone>> {
    use webdistill::models::mixer::{Mixer, MixerArch, MixerKind};
    use webdistill::models::swin::{Swin, SwinArch};
    use webdistill::models::vit::{Vit, VitArch};
    let mixer = MixerKind::Mixer { tokens_ratio: 0.5, channels_ratio: 4.0 };
    let resmlp = MixerKind::ResMlp { mlp_ratio: 4.0, init_values: 0.1 };
    let swin = SwinArch { patch: 2, window: 4, embed_dim: 16, depths: [2, 2, 2, 2], heads: [1, 2, 2, 4], mlp_ratio: 4.0 };
    let vit = VitArch { patch: 4, dim: 32, depth: 2, heads: 2, mlp_ratio: 4.0 };
    vec![
        Box::new(Vit::new(&mut Builder::new(store, "vit."), "vit", vit, cfg).unwrap()),
        Box::new(
            Mixer::new(&mut Builder::new(store, "mixer."), "mixer", MixerArch { patch: 4, dim: 32, depth: 2, kind: mixer }, cfg).unwrap(),
        ),
        Box::new(
            Mixer::new(&mut Builder::new(store, "resmlp."), "resmlp", MixerArch { patch: 4, dim: 32, depth: 2, kind: resmlp }, cfg)
                .unwrap(),
        ),
        Box::new(Swin::new(&mut Builder::new(store, "swin."), "swin", swin, cfg).unwrap()),
    ]
}

#[test]
fn training_steps_reach_every_parameter() {
    // One small model per family, in training mode with drop path: the backward pass reaches
    // every parameter with a finite, non-zero gradient, and steps with different step
    // counters draw different drop-path masks (so different losses).
    let ctx = ctx();
    let mut cfg = ModelConfig::new(3, 32, 10);
    cfg.drop_path = 0.3;
    let mut store = Store::new(1);
    let nets = small_models(&mut store, &cfg);
    for net in &nets {
        let t0 = std::time::Instant::now();
        let name = net.name();
        let mut g = Graph::new();
        let x = g.input("x", &[4, 3, 32, 32]).unwrap();
        let y = g.labels("y", &[4], 10).unwrap();
        let step = g.input_u32("step", &[1]).unwrap();
        let out = net.forward(&mut g, x, Fwd::train(step, 5)).unwrap();
        let loss = g.cross_entropy(out.logits, y, 0.0).unwrap();
        g.keep(loss);
        let grads = g.backward(loss).unwrap();
        let mine = store.params().iter().filter(|p| p.name().starts_with(net.prefix())).count();
        assert_eq!(grads.len(), mine, "{name}: some parameters get no gradient");
        let plan = Plan::compile(&ctx, &g, &mut store, name).unwrap();
        golden::fill_store(&store, net.prefix()).unwrap();
        plan.write(x, &golden::synthetic("input", &[4, 3, 32, 32])).unwrap();
        plan.write_u32(y, &[1, 2, 3, 4]).unwrap();
        let mut losses = Vec::new();
        for s in 1..=4u32 {
            plan.write_u32(step, &[s]).unwrap();
            plan.step().unwrap();
            losses.push(plan.read(loss).unwrap()[0]);
        }
        for (p, _) in &grads {
            let gv = store.read_grad(p).unwrap();
            assert!(gv.iter().all(|v| v.is_finite()), "{name}: non-finite gradient of {}", p.name());
            assert!(gv.iter().any(|&v| v != 0.0), "{name}: zero gradient of {}", p.name());
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
        assert!(losses.iter().any(|&l| l != losses[0]), "{name}: drop path drew the same mask for every step: {losses:?}");
        println!("{name}: {} dispatches/step, losses {losses:?}, {:.1} s", plan.stats().dispatches, t0.elapsed().as_secs_f64());
    }
}
