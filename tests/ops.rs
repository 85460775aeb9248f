//! Every op: GPU forward vs the f64 CPU reference, GPU backward vs central differences, on
//! odd sizes that do not divide the kernels' tiles.

mod common;
use common::{OpCase, rand_tensor};
use webdistill::graph::CpuTensor;
use webdistill::ops::Unary;

#[test]
fn matmul_plain_odd_sizes() {
    OpCase::new("matmul 67x45 @ 45x33", vec![rand_tensor(&[67, 45], 1), rand_tensor(&[45, 33], 2)]).check(|g, x| g.matmul(x[0], x[1]));
}

#[test]
fn matmul_transposes_and_bias() {
    for (ta, tb) in [(true, false), (false, true), (true, true)] {
        let a = if ta { rand_tensor(&[45, 67], 3) } else { rand_tensor(&[67, 45], 3) };
        let b = if tb { rand_tensor(&[33, 45], 4) } else { rand_tensor(&[45, 33], 4) };
        OpCase::new("matmul transposed + bias", vec![a, b, rand_tensor(&[33], 5)])
            .check(|g, x| g.matmul_ex(x[0], x[1], ta, tb, Some(x[2])));
    }
}

#[test]
fn matmul_vec4_path_with_ragged_tiles() {
    // 4-aligned K (and M when A is transposed, N when B is not) take the vec4 kernel on
    // software adapters; sizes are not multiples of its 64x64 tile.
    for (m, k, n, ta, tb) in [
        (67, 44, 36, false, false),
        (68, 44, 33, false, true),
        (68, 44, 36, true, false),
        (68, 44, 33, true, true),
        (5, 8, 4, false, false),
    ] {
        let a = if ta { rand_tensor(&[k, m], 15) } else { rand_tensor(&[m, k], 15) };
        let b = if tb { rand_tensor(&[n, k], 16) } else { rand_tensor(&[k, n], 16) };
        OpCase::new("matmul vec4", vec![a, b]).check(|g, x| g.matmul_ex(x[0], x[1], ta, tb, None));
    }
    OpCase::new("batched vec4", vec![rand_tensor(&[3, 12, 8], 17), rand_tensor(&[3, 8, 20], 18)]).check(|g, x| g.matmul(x[0], x[1]));
}

#[test]
fn matmul_batched_and_broadcast() {
    OpCase::new("batched matmul", vec![rand_tensor(&[3, 5, 7], 6), rand_tensor(&[3, 7, 9], 7)]).check(|g, x| g.matmul(x[0], x[1]));
    OpCase::new("broadcast matmul", vec![rand_tensor(&[2, 3, 5, 7], 8), rand_tensor(&[7, 9], 9)]).check(|g, x| g.matmul(x[0], x[1]));
    OpCase::new("broadcast lhs", vec![rand_tensor(&[5, 7], 10), rand_tensor(&[4, 7, 9], 11)]).check(|g, x| g.matmul(x[0], x[1]));
    OpCase::new("linear", vec![rand_tensor(&[2, 5, 7], 12), rand_tensor(&[9, 7], 13), rand_tensor(&[9], 14)])
        .check(|g, x| g.linear(x[0], x[1], Some(x[2])));
}

#[test]
fn unary_maps() {
    let x = rand_tensor(&[7, 13], 20);
    let pos = x.map(|v| v.abs() + 0.2);
    for (u, input) in [
        (Unary::Relu, &x),
        (Unary::Relu6, &x.map(|v| v * 8.0)),
        (Unary::Gelu, &x.map(|v| v * 3.0)),
        (Unary::Tanh, &x),
        (Unary::Exp, &x),
        (Unary::Log, &pos),
        (Unary::Sqrt, &pos),
        (Unary::Affine(-1.5, 0.25), &x),
        (Unary::Pow(1.7), &pos),
        (Unary::Sigmoid, &x),
        (Unary::Square, &x),
        (Unary::Recip, &pos),
        (Unary::PowShift(1.5, 1.0), &pos),
    ] {
        OpCase::new("unary", vec![input.clone()]).check(|g, v| g.unary(v[0], u));
    }
}

#[test]
fn binary_broadcasting() {
    let cases: [(&[usize], &[usize]); 5] =
        [(&[4, 5, 6], &[4, 5, 6]), (&[4, 5, 6], &[5, 1]), (&[4, 1, 6], &[5, 1]), (&[1, 5, 1], &[4, 1, 6]), (&[4, 5, 6], &[6])];
    for (sa, sb) in cases {
        let a = rand_tensor(sa, 30);
        let b = rand_tensor(sb, 31).map(|v| v.abs() + 0.5);
        OpCase::new("add", vec![a.clone(), b.clone()]).check(|g, x| g.add(x[0], x[1]));
        OpCase::new("sub", vec![a.clone(), b.clone()]).check(|g, x| g.sub(x[0], x[1]));
        OpCase::new("mul", vec![a.clone(), b.clone()]).check(|g, x| g.mul(x[0], x[1]));
        OpCase::new("div", vec![a.clone(), b.clone()]).check(|g, x| g.div(x[0], x[1]));
    }
}

#[test]
fn reductions() {
    let x = rand_tensor(&[5, 7, 9], 40);
    for axes in [vec![0isize], vec![1], vec![2], vec![0, 2], vec![-1, -2], vec![0, 1, 2]] {
        for keep in [false, true] {
            OpCase::new("sum", vec![x.clone()]).check(|g, v| g.sum(v[0], &axes, keep));
            OpCase::new("mean", vec![x.clone()]).check(|g, v| g.mean(v[0], &axes, keep));
            OpCase::new("max", vec![x.clone()]).check(|g, v| g.max(v[0], &axes, keep));
        }
    }
    // A long reduction takes the workgroup path.
    OpCase::new("long sum", vec![rand_tensor(&[3, 5000], 41)]).tol((1e-4, 1e-4), (1e-3, 1e-2)).check(|g, v| g.sum(v[0], &[1], false));
}

#[test]
fn softmax_and_log_softmax() {
    for shape in [[5usize, 11], [3, 700], [2, 5000]] {
        let x = rand_tensor(&shape, 50).map(|v| v * 4.0);
        OpCase::new("softmax", vec![x.clone()]).check(|g, v| g.softmax(v[0]));
        OpCase::new("log_softmax", vec![x.clone()]).check(|g, v| g.log_softmax(v[0]));
    }
}

#[test]
fn cross_entropy_hard_soft_smoothed() {
    let logits = rand_tensor(&[13, 17], 60).map(|v| v * 3.0);
    let labels = CpuTensor::new(&[13], (0..13).map(|i| ((i * 5) % 17) as f64).collect());
    for eps in [0.0f32, 0.1] {
        OpCase::new("cross_entropy", vec![logits.clone(), labels.clone()]).labels(1, 17).check(|g, x| g.cross_entropy(x[0], x[1], eps));
    }
    let t = rand_tensor(&[13, 17], 61).map(|v| v.abs());
    let rows: Vec<f64> = (0..13).map(|r| t.data[r * 17..(r + 1) * 17].iter().sum()).collect();
    let t = CpuTensor::new(&[13, 17], t.data.iter().enumerate().map(|(i, v)| v / rows[i / 17]).collect());
    for eps in [0.0f32, 0.1] {
        // The soft target is data: differentiate with respect to the logits only.
        OpCase::new("cross_entropy_soft", vec![logits.clone(), t.clone()]).data(1).check(|g, x| g.cross_entropy_soft(x[0], x[1], eps));
    }
}

#[test]
fn topk_counts() {
    let logits = rand_tensor(&[20, 9], 70);
    let labels = CpuTensor::new(&[20], (0..20).map(|i| (i % 9) as f64).collect());
    for k in [1, 5] {
        OpCase::new("topk_correct", vec![logits.clone(), labels.clone()])
            .labels(1, 9)
            .no_grad()
            .check(|g, x| g.topk_correct(x[0], x[1], k));
    }
}

#[test]
fn layout_ops() {
    let x = rand_tensor(&[3, 4, 5], 80);
    OpCase::new("permute", vec![x.clone()]).check(|g, v| g.permute(v[0], &[2, 0, 1]));
    OpCase::new("transpose", vec![x.clone()]).check(|g, v| g.transpose(v[0], 0, -1));
    OpCase::new("reshape", vec![x.clone()]).check(|g, v| {
        let r = g.reshape(v[0], &[12, 5])?;
        g.scale(r, 2.0)
    });
    OpCase::new("slice", vec![x.clone()]).check(|g, v| g.slice(v[0], 1, 1, 2));
    OpCase::new("expand", vec![rand_tensor(&[3, 1, 5], 81)]).check(|g, v| g.expand(v[0], &[3, 4, 5]));
    OpCase::new("concat", vec![x.clone(), rand_tensor(&[3, 2, 5], 82), rand_tensor(&[3, 1, 5], 83)]).check(|g, v| g.concat(v, 1));
}

#[test]
fn layer_norm_last_axis() {
    for shape in [vec![6usize, 13], vec![2, 3, 700]] {
        let d = shape[shape.len() - 1];
        let x = rand_tensor(&shape, 90).map(|v| v * 2.0 + 0.3);
        let w = rand_tensor(&[d], 91).map(|v| v + 1.0);
        let b = rand_tensor(&[d], 92);
        OpCase::new("layer_norm affine", vec![x.clone(), w, b]).check(|g, v| g.layer_norm(v[0], Some(v[1]), Some(v[2]), 1e-6));
        OpCase::new("layer_norm", vec![x]).check(|g, v| g.layer_norm(v[0], None, None, 1e-5));
    }
}

#[test]
fn dropout_and_drop_path_masks() {
    use webdistill::graph::Graph;
    let mut g = Graph::new();
    let x = g.input("x", &[64, 50]).unwrap();
    let step = g.input_u32("step", &[1]).unwrap();
    let y = g.dropout(x, 0.25, step, 7).unwrap();
    let z = g.drop_path(x, 0.5, step, 7).unwrap();
    g.keep(y);
    g.keep(z);
    let ctx = common::ctx();
    let mut store = webdistill::Store::new(0);
    let plan = webdistill::Plan::compile(&ctx, &g, &mut store, "drop").unwrap();
    plan.write(x, &vec![1.0; 3200]).unwrap();
    plan.write_u32(step, &[3]).unwrap();
    plan.step().unwrap();
    let yv = plan.read(y).unwrap();
    let kept = yv.iter().filter(|&&v| v != 0.0).count() as f64 / 3200.0;
    assert!((kept - 0.75).abs() < 0.04, "dropout kept {kept}");
    assert!(yv.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let zv = plan.read(z).unwrap();
    for r in 0..64 {
        let row = &zv[r * 50..(r + 1) * 50];
        assert!(row.iter().all(|&v| v == row[0]) && (row[0] == 0.0 || row[0] == 2.0), "drop path row {r}");
    }
    // Another step draws another mask.
    plan.write_u32(step, &[4]).unwrap();
    plan.step().unwrap();
    assert_ne!(plan.read(y).unwrap(), yv);
}
