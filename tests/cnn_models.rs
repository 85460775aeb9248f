//! CNN backbones against PyTorch. Golden files (scripts/golden_cnn.py) hold the logits that
//! torchvision / timm / the CRD CIFAR ResNet give for golden_common's synthetic weights on a
//! fixed input, and the PyTorch state-dict layout. Each test checks that our state dict has
//! exactly those names and shapes, exports a checkpoint with PyTorch's names and dtypes
//! (num_batches_tracked as a 0-dim int64), runs it through `predict` (what the CLI runs) and
//! compares the logits: relative error max|ours - torch| / max|torch| < 1e-4, and the same for
//! the difference of the two samples' logits (the part that depends on the input).

mod common;
use common::ctx;
use common::golden::{self, synthetic, unit};
use safetensors::{Dtype, tensor::TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use webdistill::checkpoint::{self, FileTensor, LoadOptions};
use webdistill::data::npy::{read_npy, write_npy};
use webdistill::graph::{Graph, Plan};
use webdistill::models::{self, ModelConfig};
use webdistill::nn::Fwd;
use webdistill::train::inference::predict;
use webdistill::{Error, Store};

struct Golden {
    tensors: BTreeMap<String, FileTensor>,
    meta: HashMap<String, String>,
}

impl Golden {
    fn load(file: &str) -> Golden {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{file}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/golden_cnn.py)", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap_or_default();
        Golden { tensors: checkpoint::parse(&bytes, &path.display().to_string()).unwrap(), meta }
    }
    fn num(&self, k: &str) -> usize {
        self.meta[k].parse().unwrap()
    }
    fn get(&self, k: &str) -> &[f32] {
        &self.tensors.get(k).unwrap_or_else(|| panic!("golden has no '{k}'")).data
    }
    /// PyTorch's state-dict names and shapes.
    fn layout(&self) -> BTreeMap<String, Vec<usize>> {
        serde_json::from_str(&self.meta["state_dict"]).unwrap()
    }
}

/// The golden input: golden_common.unit("input", n) as [2, 3, size, size].
fn golden_input(size: usize) -> Vec<f32> {
    (0..(2 * 3 * size * size) as u64).map(|i| unit("input", i) as f32).collect()
}

/// max |a - b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

/// A checkpoint as PyTorch exports it (`save_file(model.state_dict())`), synthetic values.
fn export_pytorch_style(layout: &BTreeMap<String, Vec<usize>>, path: &Path) {
    let mut items: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in layout {
        if name.ends_with("num_batches_tracked") {
            items.push((name.clone(), Dtype::I64, shape.clone(), 0i64.to_le_bytes().to_vec()));
        } else {
            let v = synthetic(name, shape);
            items.push((name.clone(), Dtype::F32, shape.clone(), bytemuck::cast_slice(&v).to_vec()));
        }
    }
    let views: Vec<(String, TensorView)> =
        items.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("webdistill-cnn-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Layout, export, predict, compare.
fn check_model(name: &str, file: &str) {
    let gold = Golden::load(file);
    let (size, classes) = (gold.num("size"), gold.num("classes"));
    let cfg = ModelConfig::new(3, size, classes);

    // 1. Same names and shapes as PyTorch (num_batches_tracked: [] there, [1] here).
    let mut store = Store::new(0);
    let net = models::build(name, &mut store, "", &cfg).unwrap();
    let (params, states) = checkpoint::entries(&store, "");
    let mut ours: BTreeMap<String, Vec<usize>> = params.iter().map(|(n, p)| (n.clone(), p.shape().to_vec())).collect();
    ours.extend(states.iter().map(|(n, s)| (n.clone(), if n.ends_with("num_batches_tracked") { vec![] } else { s.shape().to_vec() })));
    let theirs = gold.layout();
    let missing: Vec<&String> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{name}: names differ from PyTorch: missing {missing:?}, extra {extra:?}");
    for (k, s) in &theirs {
        assert_eq!(&ours[k], s, "{name}: shape of {k}");
    }
    assert_eq!(net.head_weight(), models::entry(name).unwrap().head_weight);

    // 2. A PyTorch-style checkpoint through predict (eval mode), batch 1 so padding is used too.
    let dir = tmp_dir(file);
    let weights = dir.join("weights.safetensors");
    export_pytorch_style(&theirs, &weights);
    let x = golden_input(size);
    let (shape, logits) = predict(&ctx(), name, &weights, &[2, 3, size, size], &x, 2).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(shape, vec![2, classes]);
    let want = gold.get("logits");
    let err = rel_err(&logits, want);
    let diff = |l: &[f32]| (0..classes).map(|j| l[j] - l[classes + j]).collect::<Vec<f32>>();
    let derr = rel_err(&diff(&logits), &diff(want));
    println!("{file}: logits relative error {err:.2e}, sample-difference relative error {derr:.2e}");
    assert!(err < 1e-4, "{file}: logits relative error {err:.3e}\n ours  {logits:?}\n torch {want:?}");
    assert!(derr < 1e-3, "{file}: relative error of the sample difference {derr:.3e}");
}

macro_rules! golden_tests {
    ($($test:ident: $name:literal, $file:literal;)*) => {
        $(#[test]
        fn $test() {
            check_model($name, $file);
        })*
    };
}

golden_tests! {
    resnet8_matches_pytorch: "resnet8", "resnet8";
    resnet14_matches_pytorch: "resnet14", "resnet14";
    resnet20_matches_pytorch: "resnet20", "resnet20";
    resnet32_matches_pytorch: "resnet32", "resnet32";
    resnet44_matches_pytorch: "resnet44", "resnet44";
    resnet56_matches_pytorch: "resnet56", "resnet56";
    resnet110_matches_pytorch: "resnet110", "resnet110";
    resnet18_at_64px_matches_torchvision: "resnet18", "resnet18";
    resnet18_cifar_matches_torchvision: "resnet18_cifar", "resnet18_cifar";
    resnet34_at_64px_matches_torchvision: "resnet34", "resnet34";
    resnet34_cifar_matches_torchvision: "resnet34_cifar", "resnet34_cifar";
    mobilenetv2_at_64px_matches_timm: "mobilenetv2", "mobilenetv2";
    mobilenetv2_cifar_matches_timm: "mobilenetv2_cifar", "mobilenetv2_cifar";
    convnext_atto_at_64px_matches_timm: "convnext_atto", "convnext_atto";
    convnext_atto_p2_matches_timm: "convnext_atto_p2", "convnext_atto_p2";
    convnext_tiny_at_64px_matches_timm: "convnext_tiny", "convnext_tiny";
    convnext_tiny_p2_matches_timm: "convnext_tiny_p2", "convnext_tiny_p2";
}

macro_rules! golden_tests_224 {
    ($($test:ident: $name:literal;)*) => {
        $(#[test]
        #[ignore = "224-px inputs take long on a software GPU; run with --ignored"]
        fn $test() {
            check_model($name, concat!($name, "_224"));
        })*
    };
}

golden_tests_224! {
    resnet18_at_224px_matches_torchvision: "resnet18";
    resnet34_at_224px_matches_torchvision: "resnet34";
    mobilenetv2_at_224px_matches_timm: "mobilenetv2";
    convnext_atto_at_224px_matches_timm: "convnext_atto";
    convnext_tiny_at_224px_matches_timm: "convnext_tiny";
}

#[test]
fn resnet20_train_step_matches_pytorch() {
    // One train-mode step: batch statistics, cross-entropy on fixed labels; loss, two
    // parameter gradients and the updated running stats against PyTorch.
    let gold = Golden::load("resnet20");
    let labels: Vec<u32> = serde_json::from_str(&gold.meta["train_labels"]).unwrap();
    let ctx = ctx();
    let mut store = Store::new(0);
    let net = models::build("resnet20", &mut store, "", &ModelConfig::new(3, 32, 10)).unwrap();
    store.upload(&ctx).unwrap();
    golden::fill_store(&store, "").unwrap();
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 32, 32]).unwrap();
    let y = g.labels("y", &[2], 10).unwrap();
    let step = g.input_u32("step", &[1]).unwrap();
    let out = net.forward(&mut g, x, Fwd::train(step, 0)).unwrap();
    let loss = g.cross_entropy(out.logits, y, 0.0).unwrap();
    g.keep(loss);
    g.keep(out.logits);
    g.backward(loss).unwrap();
    let plan = Plan::compile(&ctx, &g, &mut store, "resnet20 train").unwrap();
    plan.write(x, &golden_input(32)).unwrap();
    plan.write_u32(y, &labels).unwrap();
    plan.step().unwrap();

    let logits = plan.read(out.logits).unwrap();
    let l = plan.read(loss).unwrap();
    let e_logits = rel_err(&logits, gold.get("train.logits"));
    let e_loss = rel_err(&l, gold.get("train.loss"));
    let grad = |n: &str| store.read_grad(store.param_by_name(n).unwrap()).unwrap();
    let e_conv = rel_err(&grad("conv1.weight"), gold.get("train.grad.conv1.weight"));
    let e_fc = rel_err(&grad("fc.weight"), gold.get("train.grad.fc.weight"));
    let state = |n: &str| store.read_state(store.state_by_name(n).unwrap()).unwrap();
    let e_rm = rel_err(&state("bn1.running_mean"), gold.get("train.bn1.running_mean"));
    let e_rv = rel_err(&state("bn1.running_var"), gold.get("train.bn1.running_var"));
    println!(
        "train logits {e_logits:.2e}, loss {e_loss:.2e}, grad conv1 {e_conv:.2e}, grad fc {e_fc:.2e}, running stats {e_rm:.2e} {e_rv:.2e}"
    );
    assert!(e_logits < 1e-4 && e_loss < 1e-5, "train logits {e_logits:.3e}, loss {e_loss:.3e}");
    assert!(e_conv < 1e-3 && e_fc < 1e-4, "gradients: conv1 {e_conv:.3e}, fc {e_fc:.3e}");
    assert!(e_rm < 1e-4 && e_rv < 1e-4, "running stats {e_rm:.3e} {e_rv:.3e}");
    assert_eq!(state("bn1.num_batches_tracked"), vec![1.0]);
    assert_eq!(state("layer3.2.bn2.num_batches_tracked"), vec![1.0]);
}

#[test]
fn feature_shapes_match_the_forward_pass() {
    // Every model reports the shapes its forward pass gives, at its default size.
    let cnns = models::resnet::entries().into_iter().chain(models::mobilenetv2::entries()).chain(models::convnext::entries());
    for e in cnns {
        let cfg = e.default_config();
        let cfg = ModelConfig { img_size: cfg.img_size.min(64), ..cfg };
        let mut store = Store::new(0);
        let net = (e.build)(&mut webdistill::nn::Builder::new(&mut store, "student"), &cfg).unwrap();
        assert_eq!(net.family(), webdistill::models::Family::Cnn, "{}", e.name);
        let mut g = Graph::new();
        let x = g.input("x", &[2, 3, cfg.img_size, cfg.img_size]).unwrap();
        let out = net.forward(&mut g, x, Fwd::eval()).unwrap();
        assert_eq!(out.features.len(), net.feature_shapes().len(), "{}", e.name);
        for (f, s) in out.features.iter().zip(net.feature_shapes()) {
            let webdistill::models::FeatureShape::Map { c, h, w } = s else { panic!("{}: CNN features are maps", e.name) };
            assert_eq!(g.shape(*f), [2, c, h, w], "{}", e.name);
        }
        assert_eq!(g.shape(out.pooled), [2, net.pooled_dim()], "{}", e.name);
        assert_eq!(g.shape(out.logits), [2, cfg.num_classes], "{}", e.name);
        assert_eq!(net.prefix(), "student.");
        assert!(store.params().iter().all(|p| p.name().starts_with("student.")));
        // A wrong channel count is a clear error, not a panic. (ResNets take any image size:
        // OBoW feeds them half-size patches.)
        let mut g = Graph::new();
        let x = g.input("x", &[2, 4, cfg.img_size, cfg.img_size]).unwrap();
        let e2 = net.forward(&mut g, x, Fwd::eval()).err().unwrap().to_string();
        assert!(e2.contains(e.name) && (e2.contains("built for") || e2.contains("takes [B, 3, H, W]")), "{e2}");
    }
}

#[test]
fn checkpoint_round_trip_keeps_outputs_and_running_stats() {
    // Train one step (moves running stats and the counter), save, load into a fresh store:
    // every tensor and the eval logits are identical.
    let ctx = ctx();
    let cfg = ModelConfig::new(3, 16, 7);
    let mut a = Store::new(42);
    let net = models::build("resnet8", &mut a, "", &cfg).unwrap();
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 16, 16]).unwrap();
    let step = g.input_u32("step", &[1]).unwrap();
    let out = net.forward(&mut g, x, Fwd::train(step, 0)).unwrap();
    g.keep(out.logits);
    let plan = Plan::compile(&ctx, &g, &mut a, "train").unwrap();
    let xv = golden_input(16)[..2 * 3 * 16 * 16].to_vec();
    plan.write(x, &xv).unwrap();
    plan.run(2).unwrap();

    let eval = |store: &mut Store, net: &dyn models::Backbone| {
        let mut g = Graph::new();
        let x = g.input("x", &[2, 3, 16, 16]).unwrap();
        let out = net.forward(&mut g, x, Fwd::eval()).unwrap();
        g.keep(out.logits);
        let plan = Plan::compile(&ctx, &g, store, "eval").unwrap();
        plan.write(x, &xv).unwrap();
        plan.step().unwrap();
        plan.read(out.logits).unwrap()
    };
    let la = eval(&mut a, net.as_ref());
    let dir = tmp_dir("roundtrip");
    let path = dir.join("resnet8.safetensors");
    checkpoint::save(&a, "", &path, &BTreeMap::from([("model".to_string(), "resnet8".to_string())])).unwrap();

    let mut b = Store::new(7);
    let net_b = models::build("resnet8", &mut b, "", &cfg).unwrap();
    b.upload(&ctx).unwrap();
    let n = checkpoint::load(&b, "", &path, &LoadOptions::default()).unwrap();
    assert_eq!(n, a.params().len() + a.states().len());
    for (pa, pb) in a.params().iter().zip(b.params()) {
        assert_eq!(a.read_param(pa).unwrap(), b.read_param(pb).unwrap(), "{}", pa.name());
    }
    for (sa, sb) in a.states().iter().zip(b.states()) {
        assert_eq!(a.read_state(sa).unwrap(), b.read_state(sb).unwrap(), "{}", sa.name());
    }
    assert_eq!(b.read_state(b.state_by_name("bn1.num_batches_tracked").unwrap()).unwrap(), vec![2.0]);
    assert_eq!(eval(&mut b, net_b.as_ref()), la);

    // The file has PyTorch's dtypes: f32 tensors and a 0-dim int64 counter.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let c = st.tensor("layer1.0.bn1.num_batches_tracked").unwrap();
    assert_eq!((c.dtype(), c.shape()), (Dtype::I64, &[][..]));
    assert_eq!(st.tensor("conv1.weight").unwrap().dtype(), Dtype::F32);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn loading_a_bad_checkpoint_lists_every_problem() {
    let ctx = ctx();
    let cfg = ModelConfig::new(3, 32, 10);
    let gold = Golden::load("resnet8");
    let mut layout = gold.layout();
    layout.remove("layer2.0.bn1.running_var");
    layout.insert("layer3.0.conv1.weight".into(), vec![64, 32, 5, 5]);
    layout.insert("head.weight".into(), vec![3]);
    let dir = tmp_dir("bad");
    let path = dir.join("bad.safetensors");
    export_pytorch_style(&layout, &path);
    let mut store = Store::new(0);
    models::build("resnet8", &mut store, "", &cfg).unwrap();
    store.upload(&ctx).unwrap();
    let e = checkpoint::load(&store, "", &path, &LoadOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::File { .. }), "{msg}");
    assert!(msg.contains("3 problem(s)"), "{msg}");
    assert!(msg.contains("missing tensor 'layer2.0.bn1.running_var'"), "{msg}");
    assert!(msg.contains("'layer3.0.conv1.weight' has shape [64, 32, 5, 5]") && msg.contains("[64, 32, 3, 3]"), "{msg}");
    assert!(msg.contains("unexpected tensor 'head.weight'"), "{msg}");
    // predict reports the same, and unknown models and bad inputs get one-line errors.
    let x = golden_input(32);
    let e = predict(&ctx, "resnet8", &path, &[2, 3, 32, 32], &x, 2).unwrap_err().to_string();
    assert!(e.contains("missing tensor 'layer2.0.bn1.running_var'"), "{e}");
    let e = predict(&ctx, "resnet9", &path, &[2, 3, 32, 32], &x, 2).unwrap_err().to_string();
    assert!(e.contains("unknown model 'resnet9'") && e.contains("resnet20") && !e.contains('\n'), "{e}");
    let e = predict(&ctx, "resnet8", &path, &[2, 3, 32 * 32], &x, 2).unwrap_err().to_string();
    assert!(e.contains("[N, C, H, W]") && !e.contains('\n'), "{e}");
    let e = predict(&ctx, "resnet8", &dir.join("nope.safetensors"), &[2, 3, 32, 32], &x, 2).unwrap_err().to_string();
    assert!(e.contains("nope.safetensors") && !e.contains('\n'), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn predict_command_line_end_to_end() {
    // The binary on a PyTorch-style checkpoint and a float32 .npy batch of 3 (padded batch).
    let gold = Golden::load("resnet8");
    let dir = tmp_dir("cli");
    let (weights, input, out) = (dir.join("w.safetensors"), dir.join("x.npy"), dir.join("logits.npy"));
    export_pytorch_style(&gold.layout(), &weights);
    let mut x = golden_input(32);
    x.extend_from_within(..3 * 32 * 32);
    write_npy(&input, &[3, 3, 32, 32], &x).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .args(["predict", "--model", "resnet8", "--batch", "2", "--weights"])
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (shape, logits) = read_npy(&out).unwrap();
    assert_eq!(shape, vec![3, 10]);
    let want = gold.get("logits");
    assert!(rel_err(&logits[..20], want) < 1e-4);
    assert!(rel_err(&logits[20..], &want[..10]) < 1e-4, "third image = first image");
    // A bad model name: exit status 1 and one line on stderr.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_webdistill"))
        .args(["predict", "--model", "nope", "--weights"])
        .arg(&weights)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("unknown model 'nope'"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
