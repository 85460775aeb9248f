//! Tensors over the storage-binding limit (docs/BATCH_SPLIT.md). On a context whose binding
//! limit is lowered to 1 MiB, ops that can split their batch run as slices and give what the
//! same graph gives on the normal context; ops that cannot keep the clear error naming the
//! tensor and its size.

mod common;
use common::{ctx, rand_vec};
use std::sync::OnceLock;
use webdistill::gpu::ContextOptions;
use webdistill::graph::{Graph, Plan, Var};
use webdistill::ops::Conv2dSpec;
use webdistill::{Context, Error, Store};

const LIMIT: u64 = 1 << 20;

/// A context whose storage bindings (and buffers) are at most 1 MiB.
fn small() -> Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| {
        let opts = ContextOptions { max_storage_binding: Some(LIMIT), ..Default::default() };
        pollster::block_on(Context::new_async(opts)).expect("a GPU adapter")
    })
    .clone()
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed).into_iter().map(|v| v as f32).collect()
}

/// Compile `g` on `ctx`, write every input (seeded by its index), run a step, read `reads`;
/// also the plan's dispatch count.
fn run_on(ctx: &Context, g: &Graph, inputs: &[Var], reads: &[Var]) -> (Vec<Vec<f32>>, usize) {
    let mut store = Store::new(0);
    let plan = Plan::compile(ctx, g, &mut store, "batch split").unwrap_or_else(|e| panic!("compile: {e}"));
    for (i, &v) in inputs.iter().enumerate() {
        plan.write(v, &values(g.numel(v), 100 + i as u64)).unwrap();
    }
    plan.step().unwrap();
    let got = plan.request(reads).unwrap().wait(ctx).unwrap();
    (got, plan.stats().dispatches)
}

/// Every element within `rtol` of the largest magnitude of `want` (0: bit-identical).
fn assert_same(what: &str, got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a - b).abs() <= rtol * scale, "{what}[{i}]: split {a}, whole {b} (scale {scale})");
    }
}

/// Run `g` on both contexts, check the small one split (more dispatches) and agrees: reads
/// listed in `exact` bit for bit, the rest (sums over the batch) within 1e-5 of their scale.
fn compare(g: &Graph, inputs: &[Var], reads: &[(&str, Var, bool)]) {
    let vars: Vec<Var> = reads.iter().map(|r| r.1).collect();
    let (want, whole) = run_on(&ctx(), g, inputs, &vars);
    let (got, split) = run_on(&small(), g, inputs, &vars);
    assert!(split > whole, "the 1 MiB plan should run slices: {split} vs {whole} dispatches");
    for ((name, _, exact), (a, b)) in reads.iter().zip(got.iter().zip(&want)) {
        assert_same(name, a, b, if *exact { 0.0 } else { 1e-5 });
    }
}

#[test]
fn the_lowered_limit_is_what_the_tests_assume() {
    let c = small();
    assert!(c.max_binding() <= LIMIT, "{}", c.max_binding());
    assert!(ctx().max_binding() >= 16 * LIMIT, "{}", ctx().max_binding());
}

#[test]
fn linear_layers_and_elementwise_ops_split_their_batch() {
    let mut g = Graph::new();
    let x = g.input("x", &[512, 64]).unwrap();
    let w1 = g.input("w1", &[1024, 64]).unwrap();
    let b1 = g.input("b1", &[1024]).unwrap();
    let w2 = g.input("w2", &[16, 1024]).unwrap();
    // y, h, s: [512, 1024] = 2 MiB each, twice the limit.
    let y = g.linear(x, w1, Some(b1)).unwrap();
    let h = g.gelu(y).unwrap();
    let s = g.mul(h, y).unwrap();
    let s = g.add(s, b1).unwrap();
    let z = g.linear(s, w2, None).unwrap();
    let r = g.constant(&[512, 16], &values(512 * 16, 7)).unwrap();
    let zr = g.mul(z, r).unwrap();
    let loss = g.sum_all(zr).unwrap();
    let grads = g.gradients(loss, &[x, w1, b1, w2]).unwrap();
    let grads: Vec<Var> = grads.into_iter().map(|v| v.unwrap()).collect();
    for &v in [y, z, loss].iter().chain(&grads) {
        g.keep(v);
    }
    compare(
        &g,
        &[x, w1, b1, w2],
        &[
            ("y", y, true),
            ("z", z, true),
            ("dx", grads[0], true),
            ("dw1", grads[1], false),
            ("db1", grads[2], false),
            ("dw2", grads[3], false),
        ],
    );
}

#[test]
fn a_big_input_is_written_and_read_in_pieces() {
    // 600 x 512 floats = 1.2 MB: the input and the output live in pieces.
    let mut g = Graph::new();
    let x = g.input("x", &[600, 512]).unwrap();
    let y = g.relu(x).unwrap();
    g.keep(y);
    let (got, _) = run_on(&small(), &g, &[x], &[x, y]);
    let want = values(600 * 512, 100);
    assert_eq!(got[0], want);
    assert_eq!(got[1], want.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
    let mut store = Store::new(0);
    let plan = Plan::compile(&small(), &g, &mut store, "pieces").unwrap();
    let e = plan.buffer_of(y).unwrap_err().to_string();
    assert!(e.contains("pieces"), "{e}");
}

#[test]
fn convolutions_split_forward_and_backward() {
    for (k, pad) in [(3, 1), (1, 0)] {
        let mut g = Graph::new();
        let x = g.input("x", &[64, 8, 16, 16]).unwrap();
        let w = g.input("w", &[32, 8, k, k]).unwrap();
        let b = g.input("b", &[32]).unwrap();
        // y: [64, 32, 16, 16] = 2 MiB.
        let y = g.conv2d(x, w, Some(b), Conv2dSpec::new(1, pad, 1)).unwrap();
        let a = g.relu(y).unwrap();
        let r = g.constant(&[64, 32, 16, 16], &values(64 * 32 * 256, 9)).unwrap();
        let ar = g.mul(a, r).unwrap();
        let loss = g.sum_all(ar).unwrap();
        let grads: Vec<Var> = g.gradients(loss, &[x, w, b]).unwrap().into_iter().map(|v| v.unwrap()).collect();
        for &v in [y].iter().chain(&grads) {
            g.keep(v);
        }
        compare(
            &g,
            &[x, w, b],
            &[("conv y", y, true), ("conv dx", grads[0], true), ("conv dw", grads[1], false), ("conv db", grads[2], false)],
        );
    }
}

#[test]
fn attention_splits_its_batch() {
    let mut g = Graph::new();
    // qkv [32, 65, 192] = 1.6 MB; o [32, 65, 64].
    let qkv = g.input("qkv", &[32, 65, 192]).unwrap();
    let o = g.attention(qkv, 4, None).unwrap();
    let r = g.constant(&[32, 65, 64], &values(32 * 65 * 64, 11)).unwrap();
    let or = g.mul(o, r).unwrap();
    let loss = g.sum_all(or).unwrap();
    let d = g.gradients(loss, &[qkv]).unwrap()[0].unwrap();
    g.keep(o);
    g.keep(d);
    compare(&g, &[qkv], &[("attention o", o, true), ("attention dqkv", d, true)]);
}

#[test]
fn ops_that_cannot_split_keep_the_clear_error() {
    // Softmax declares no batch split: its 2 MiB input is refused by name.
    let mut g = Graph::new();
    let x = g.input("logits", &[512, 1024]).unwrap();
    let y = g.softmax(x).unwrap();
    g.keep(y);
    match Plan::compile(&small(), &g, &mut Store::new(0), "softmax") {
        Err(e @ Error::TooLarge { .. }) => {
            let Error::TooLarge { tensor, bytes, limit, .. } = &e else { unreachable!() };
            assert_eq!((tensor.as_str(), *bytes), ("logits", 2 << 20), "{e}");
            assert!(*limit <= LIMIT, "{e}");
            assert!(e.to_string().contains("'logits' needs 2097152 bytes"), "{e}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A batch of one cannot be cut into slices.
    let mut g = Graph::new();
    let x = g.input("one", &[1, 300_000]).unwrap();
    let y = g.relu(x).unwrap();
    g.keep(y);
    let e = Plan::compile(&small(), &g, &mut Store::new(0), "one").unwrap_err();
    assert!(matches!(&e, Error::TooLarge { tensor, .. } if tensor == "one" || tensor.starts_with("relu")), "{e}");
    assert!(e.to_string().contains("equal slices"), "{e}");
}

#[test]
fn a_vit_trains_with_a_batch_over_the_limit() {
    use webdistill::train::TrainConfig;
    use webdistill::train::report::{StepRecord, read_jsonl};
    use webdistill::train::run::Run;
    use webdistill::train::runner::{RunOptions, Silent, load_data, run};
    // vit_nano_p4 on 28-px images: 50 tokens; at batch 64 its qkv (1.2 MB) and MLP hidden
    // (1.6 MB) activations are over the 1 MiB limit.
    let cfg = TrainConfig {
        model: "vit_nano_p4".into(),
        epochs: 1,
        batch: 64,
        train_limit: 128,
        test_limit: 64,
        eval_batch: 64,
        warmup_epochs: 0.0,
        ..TrainConfig::preset("quick").unwrap()
    };
    // The training step runs slices on the small context.
    let data = load_data("bundled", &cfg).unwrap();
    let dispatches = |c: &Context| Run::new(c, cfg.clone(), &data, None).unwrap().train_stats().dispatches;
    let (whole, split) = (dispatches(&ctx()), dispatches(&small()));
    eprintln!("dispatches per step: {whole} whole, {split} in slices");
    assert!(split > whole, "{split} vs {whole} dispatches per step");
    let base = std::env::temp_dir().join(format!("webdistill-batch-split-{}", std::process::id()));
    let mut out = Vec::new();
    for (name, c) in [("whole", ctx()), ("split", small())] {
        let dir = base.join(name);
        let s = run(&c, cfg.clone(), Some(&dir), &RunOptions::default(), &mut Silent).unwrap_or_else(|e| panic!("{name}: {e}"));
        let steps: Vec<StepRecord> = read_jsonl(&dir.join("steps.jsonl")).unwrap();
        out.push((s, steps));
    }
    let _ = std::fs::remove_dir_all(&base);
    let ((a, sa), (b, sb)) = (&out[0], &out[1]);
    eprintln!("whole: {:?} {sa:?}\nsplit: {:?} {sb:?}", a.last, b.last);
    // The first step's loss is a forward pass: the same to the bit.
    assert_eq!(sa[0].loss.to_bits(), sb[0].loss.to_bits(), "first step loss {} vs {}", sa[0].loss, sb[0].loss);
    // Later values went through weight gradients summed over slices in another order.
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-3 * x.abs().max(1.0);
    assert!(sa.iter().zip(sb).all(|(x, y)| close(x.loss, y.loss)), "{sa:?} vs {sb:?}");
    assert!(close(a.last.loss, b.last.loss), "eval loss {} vs {}", a.last.loss, b.last.loss);
}
