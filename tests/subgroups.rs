//! Subgroup reductions (`KernelProfile::subgroups`): the `_sg` kernel families, compiled
//! behind `shaders/wg_reduce_subgroup.wgsl`, against the f64 references and against the same
//! files behind the shared-memory tree. Both profiles are a real GPU's with
//! `serial_row_max = 0`, so every row op and reduction takes its workgroup kernel.
//!
//! On a device without `Features::SUBGROUP` these tests panic rather than pass: they would
//! prove nothing there (lavapipe and every desktop Vulkan driver have the feature).

mod common;
use common::{OpCase, assert_close, ctx, rand_tensor};
use webdistill::gpu::{KernelProfile, shader_names, shader_source};
use webdistill::graph::{CpuTensor, Graph, Plan, Var};
use webdistill::ops::BnVars;
use webdistill::{Context, Store};

/// (tree, subgroups) contexts over the shared device.
fn contexts() -> (Context, Context) {
    let c = ctx();
    assert!(
        c.device.features().contains(wgpu::Features::SUBGROUP),
        "adapter '{}' has no Features::SUBGROUP: the subgroup kernels cannot be tested here",
        c.adapter.name
    );
    let tree = KernelProfile { software: false, serial_row_max: 0, subgroups: false, ..c.profile.clone() };
    let sg = KernelProfile { subgroups: true, ..tree.clone() };
    (c.with_profile(tree), c.with_profile(sg))
}

type Build = dyn Fn(&mut Graph, &[Var]) -> webdistill::Result<Var>;

/// `f` over the case's inputs and the gradients of sum(y * r), as `OpCase` builds it; the
/// graph, its input vars and the vars to read (y, then each gradient).
fn build(case: &OpCase, f: &Build) -> (Graph, Vec<Var>, Vec<Var>) {
    let mut g = Graph::new();
    let vars: Vec<Var> = case
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = format!("x{i}");
            let v = if case.u32_inputs.contains(&i) { g.labels(&name, &t.shape, case.classes) } else { g.input(&name, &t.shape) };
            v.unwrap()
        })
        .collect();
    let y = f(&mut g, &vars).unwrap();
    g.keep(y);
    let ys = g.shape(y).to_vec();
    let r = g.constant(&ys, &rand_tensor(&ys, 99).to_f32()).unwrap();
    let yr = g.mul(y, r).unwrap();
    let l = g.sum_all(yr).unwrap();
    let wrt: Vec<Var> =
        (0..vars.len()).filter(|i| !case.u32_inputs.contains(i) && !case.data_inputs.contains(i)).map(|i| vars[i]).collect();
    let mut reads = vec![y];
    for gv in g.gradients(l, &wrt).unwrap() {
        reads.push(g.keep(gv.unwrap()));
    }
    (g, vars, reads)
}

/// Compile on `c`, run `steps` steps, read `reads`; and the plan's kernels (`family::entry`).
fn run(c: &Context, case: &OpCase, g: &Graph, vars: &[Var], reads: &[Var], steps: usize) -> (Vec<String>, Vec<Vec<f32>>) {
    let plan = Plan::compile(c, g, &mut Store::new(0), case.name).unwrap_or_else(|e| panic!("{}: compile: {e}", case.name));
    for (i, (v, t)) in vars.iter().zip(&case.inputs).enumerate() {
        if case.u32_inputs.contains(&i) {
            plan.write_u32(*v, &t.data.iter().map(|&x| x as u32).collect::<Vec<_>>()).unwrap();
        } else {
            plan.write(*v, &t.to_f32()).unwrap();
        }
    }
    plan.run(steps).unwrap();
    (plan.dispatch_kernels().to_vec(), reads.iter().map(|&v| plan.read(v).unwrap()).collect())
}

/// The subgroup profile against the tree and the f64 reference, for `f` over `case`:
/// - its plan runs every entry of `want` (`op:entry`, the workgroup kernels) from a `_sg`
///   family, the tree's from the tree family, with the same entries in the same order;
/// - y and every gradient agree with the tree's within `tol` (only the summation order differs);
/// - two runs give the same bits (the partials are folded in a fixed order);
/// - forward against the f64 reference and gradients against central differences (`OpCase`).
fn check(case: OpCase, want: &[&str], tol: (f64, f64), f: &Build) {
    let (tree, sg) = contexts();
    let (g, vars, reads) = build(&case, f);
    let (tree_kernels, tree_out) = run(&tree, &case, &g, &vars, &reads, 1);
    let (sg_kernels, sg_out) = run(&sg, &case, &g, &vars, &reads, 1);
    let entry = |k: &String| k.split("::").nth(1).unwrap_or_default().to_string();
    for w in want {
        let e = w.split(':').nth(1).unwrap();
        assert!(
            sg_kernels.iter().any(|k| k.ends_with(&format!("_sg::{e}"))),
            "{}: no {e} from a _sg family among the subgroup plan's kernels {sg_kernels:?}",
            case.name
        );
    }
    assert!(!tree_kernels.iter().any(|k| k.contains("_sg::")), "{}: the tree profile ran subgroups: {tree_kernels:?}", case.name);
    let entries = |ks: &[String]| ks.iter().map(entry).collect::<Vec<_>>();
    assert_eq!(entries(&tree_kernels), entries(&sg_kernels), "{}: the profiles lowered differently", case.name);
    for (k, (t, s)) in tree_out.iter().zip(&sg_out).enumerate() {
        let t64: Vec<f64> = t.iter().map(|&v| v as f64).collect();
        assert_close(&format!("{} output {k}: subgroups vs tree", case.name), s, &t64, tol.0, tol.1);
    }
    let (_, again) = run(&sg, &case, &g, &vars, &reads, 2);
    for (k, (a, b)) in sg_out.iter().zip(&again).enumerate() {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{} output {k}: not deterministic run to run", case.name);
    }
    case.check_on(&sg, f);
}

#[test]
fn every_subgroup_family_twins_a_tree_family_and_validates() {
    // foundation.rs validates families without the SUBGROUP capability; the `_sg` ones need it.
    let names = shader_names();
    let sg: Vec<&str> = names.iter().copied().filter(|n| n.ends_with("_sg")).collect();
    assert!(sg.len() >= 4, "subgroup families: {sg:?}");
    for name in sg {
        let src = shader_source(name).unwrap();
        let twin = shader_source(name.strip_suffix("_sg").unwrap()).unwrap_or_else(|| panic!("{name} has no tree twin"));
        assert!(src.contains("subgroupAdd(") && !twin.contains("subgroupAdd("), "{name}: subgroups in the wrong family");
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&src)));
        let caps = naga::valid::Capabilities::default() | naga::valid::Capabilities::SUBGROUP;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[test]
fn softmax_and_log_softmax_forward_backward() {
    for (i, shape) in [[7usize, 300], [3, 1000], [2, 4097]].into_iter().enumerate() {
        let x = rand_tensor(&shape, 10 + i as u64).map(|v| 4.0 * v);
        let want = ["softmax:softmax_wg", "softmax_grad:softmax_grad_wg"];
        check(OpCase::new("softmax", vec![x.clone()]), &want, (1e-7, 1e-4), &|g, v| g.softmax(v[0]));
        let want = ["log_softmax:softmax_wg", "softmax_grad:softmax_grad_wg"];
        check(OpCase::new("log_softmax", vec![x]), &want, (1e-5, 1e-4), &|g, v| g.log_softmax(v[0]));
    }
}

#[test]
fn layer_norm_forward_dx_dparams() {
    for (i, shape) in [[7usize, 300], [3, 1000], [1, 4097]].into_iter().enumerate() {
        let d = shape[1];
        let s = 20 + 3 * i as u64;
        let x = rand_tensor(&shape, s).map(|v| 3.0 * v + 0.5);
        let (w, b) = (rand_tensor(&[d], s + 1).map(|v| 1.0 + 0.5 * v), rand_tensor(&[d], s + 2));
        let want = ["layer_norm:ln_wg", "layer_norm_dx:ln_dx_wg"];
        let case = OpCase::new("layer_norm affine", vec![x.clone(), w, b]).tol((1e-4, 1e-4), (2e-3, 1e-2));
        check(case, &want, (1e-5, 1e-4), &|g, v| g.layer_norm(v[0], Some(v[1]), Some(v[2]), 1e-5));
        let case = OpCase::new("layer_norm", vec![x]).tol((1e-4, 1e-4), (2e-3, 1e-2));
        check(case, &want, (1e-5, 1e-4), &|g, v| g.layer_norm(v[0], None, None, 1e-5));
    }
}

#[test]
fn sums_and_means_over_long_rows() {
    // Last axis, a strided leading axis, and two axes at once; odd row counts.
    let cases: [(&'static str, Vec<usize>, Vec<isize>, bool); 5] = [
        ("sum", vec![5, 4097], vec![-1], false),
        ("mean", vec![3, 1000], vec![-1], true),
        ("sum", vec![300, 7], vec![0], false),
        ("mean", vec![1, 4097], vec![1], true),
        ("sum", vec![3, 101, 5], vec![0, 2], false),
    ];
    for (i, (op, shape, axes, mean)) in cases.into_iter().enumerate() {
        let x = rand_tensor(&shape, 40 + i as u64);
        let want = [format!("{op}:reduce_wg")];
        let want: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
        let case = OpCase::new(op, vec![x]).tol((1e-5, 1e-4), (1e-3, 1e-2));
        let f = move |g: &mut Graph, v: &[Var]| if mean { g.mean(v[0], &axes, false) } else { g.sum(v[0], &axes, false) };
        check(case, &want, (1e-5, 1e-4), &f);
    }
}

#[test]
fn batch_norm_train_forward_backward() {
    // 189 elements per channel (fewer than the workgroup's threads) and 4356.
    for (i, shape) in [vec![3usize, 5, 7, 9], vec![4, 3, 33, 33]].into_iter().enumerate() {
        let s = 60 + 10 * i as u64;
        let c = shape[1];
        let inputs = vec![
            rand_tensor(&shape, s).map(|v| 2.0 * v + 0.5),
            rand_tensor(&[c], s + 1).map(|v| 1.0 + 0.5 * v),
            rand_tensor(&[c], s + 2),
            rand_tensor(&[c], s + 3).map(|v| 0.2 * v),
            rand_tensor(&[c], s + 4).map(|v| 1.0 + 0.5 * v),
            CpuTensor::new(&[1], vec![3.0]),
        ];
        let case = OpCase::new("batch_norm train", inputs).data(3).data(4).labels(5, 1000).tol((1e-5, 1e-4), (2e-3, 1e-2));
        let want = ["batch_norm_train:bn_train", "batch_norm_backward:bn_backward"];
        check(case, &want, (1e-5, 1e-4), &|g, v| {
            let vars = BnVars { weight: Some(v[1]), bias: Some(v[2]), running_mean: v[3], running_var: v[4], num_batches_tracked: v[5] };
            g.batch_norm(v[0], &vars, 1e-5, 0.1, true)
        });
    }
}

#[test]
fn cross_entropy_mean_over_many_rows() {
    // Past the one-workgroup form: per-row losses, then their mean through reduce_wg.
    for (i, rows) in [2049usize, 3001].into_iter().enumerate() {
        let classes = 10;
        let logits = rand_tensor(&[rows, classes], 80 + i as u64).map(|v| 3.0 * v);
        let labels = CpuTensor::new(&[rows], (0..rows).map(|r| ((r * 7) % classes) as f64).collect());
        let case = OpCase::new("cross_entropy", vec![logits, labels]).labels(1, classes);
        check(case, &["cross_entropy:reduce_wg"], (1e-6, 1e-5), &|g, v| g.cross_entropy(v[0], v[1], 0.1));
    }
}

/// That the subgroup family computes differently, not only that it is dispatched: a row
/// that the tree sums exactly and a subgroup reduction cannot. 1e8 and -1e8 land in
/// different subgroups (of 8 lanes on lavapipe, 32 or 64 on GPUs), where each absorbs ones
/// that f32 cannot hold: ulp(1e8) = 8.
#[test]
fn a_sum_only_the_tree_gets_exact() {
    let (tree, sg) = contexts();
    let mut row = vec![1.0; 256];
    (row[0], row[128]) = (1e8, -1e8);
    let case = OpCase::new("sum", vec![CpuTensor::new(&[1, 256], row)]);
    let mut g = Graph::new();
    let x = g.input("x", &[1, 256]).unwrap();
    let y = g.sum(x, &[-1], false).unwrap();
    g.keep(y);
    let (kernels, t) = run(&tree, &case, &g, &[x], &[y], 1);
    assert_eq!(kernels, ["reduce::reduce_wg"]);
    // The tree adds element i + 128 to element i first: 1e8 meets -1e8 before any one.
    assert_eq!(t[0][0], 254.0, "tree");
    let (_, s) = run(&sg, &case, &g, &[x], &[y], 1);
    assert_ne!(s[0][0], 254.0, "subgroups: exact, as if the tree had run");
}
