//! Deterministic synthetic weights and inputs shared with `scripts/golden_common.py`, so
//! golden checks need no weight files: both sides compute every tensor from its name with
//! the same integer hash, PyTorch runs the model once and only the logits are committed
//! (`tests/golden/`). The tests and `webdistill report`'s correctness section both use it.

use crate::checkpoint;
use crate::store::{Store, Which};

/// FNV-1a over the bytes of a name.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finaliser.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Value in [-1, 1) for element `i` of the tensor called `name`.
pub fn unit(name: &str, i: u64) -> f64 {
    unit_of_hash(name_hash(name), i)
}

/// [`unit`] with the name already hashed (filling large tensors hashes each name once).
pub fn unit_of_hash(hash: u64, i: u64) -> f64 {
    let r = splitmix64(hash ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// A plausible value for element `i` of a state-dict tensor, by naming convention:
/// weights (rank >= 2) have variance 1/fan_in, norm scales are near 1, biases and shifts are
/// small, running variances are in [0.5, 1.5], position embeddings and class tokens ~0.02.
pub fn synthetic(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let last = name.rsplit('.').next().unwrap_or(name);
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    // value = a + b * u, decided once per tensor (large tensors are filled in tests).
    let (a, b) = if last == "running_var" {
        (1.0, 0.5)
    } else if last == "running_mean" {
        (0.0, 0.1)
    } else if last == "num_batches_tracked" {
        (0.0, 0.0)
    } else if name.contains("pos_embed") || name.contains("cls_token") || name.contains("relative_position_bias_table") {
        (0.0, 0.02)
    } else if shape.len() >= 2 {
        (0.0, (3.0 / fan_in as f64).sqrt())
    } else if last == "weight" || last == "alpha" {
        (1.0, 0.1)
    } else {
        (0.0, 0.1)
    };
    let hash = name_hash(name);
    (0..n as u64).map(|i| (a + b * unit_of_hash(hash, i)) as f32).collect()
}

/// Fill every tensor of a store (under `prefix`) with its synthetic values.
pub fn fill_store(store: &Store, prefix: &str) -> crate::Result<()> {
    let (params, states) = checkpoint::entries(store, prefix);
    for (n, p) in params {
        store.write_param(&p, Which::Value, &synthetic(&n, p.shape()))?;
    }
    for (n, s) in states {
        store.write_state(&s, &synthetic(&n, s.shape()))?;
    }
    Ok(())
}

/// What [`check_logits`] found for one model.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct LogitsCheck {
    pub model: String,
    /// max |ours - PyTorch's| / max |PyTorch's|.
    pub rel_error: f64,
    pub logits: usize,
}

/// Build `model` with the synthetic weights, run its eval forward on the golden input and
/// compare the logits with those PyTorch/timm computed (`golden`: a file of `tests/golden/`).
/// The two golden scripts made their inputs differently: `scripts/golden_cnn.py` files carry
/// a `size` and fill the input with [`unit`]; `scripts/golden_vit.py` files carry an `img`
/// and fill it with [`synthetic`]. Two images, as both scripts ran.
#[cfg(not(target_arch = "wasm32"))]
pub fn check_logits(ctx: &crate::Context, model: &str, golden: &std::path::Path) -> crate::Result<LogitsCheck> {
    use crate::error::Error;
    use crate::graph::{Graph, Plan};
    use crate::models::{self, ModelConfig};
    use crate::nn::Fwd;
    let bytes = std::fs::read(golden).map_err(|e| Error::file(golden, e))?;
    let source = golden.display().to_string();
    let meta = checkpoint::metadata(&bytes, &source)?;
    let tensors = checkpoint::parse(&bytes, &source)?;
    let want = tensors.get("logits").ok_or_else(|| Error::file(golden, "has no 'logits' tensor"))?;
    if want.shape.len() != 2 || want.shape[0] != 2 {
        return Err(Error::file(golden, format!("'logits' has shape {:?}, expected [2, classes]", want.shape)));
    }
    let classes = want.shape[1];
    let number = |k: &str| meta.get(k).and_then(|v| v.parse::<usize>().ok());
    let (size, cnn_input) = match (number("size"), number("img")) {
        (Some(s), _) => (s, true),
        (None, Some(s)) => (s, false),
        _ => return Err(Error::file(golden, "metadata has neither 'size' nor 'img'")),
    };
    let mut store = Store::new(0);
    let net = models::build(model, &mut store, "", &ModelConfig::new(3, size, classes))?;
    store.upload(ctx)?;
    fill_store(&store, "")?;
    let shape = [2, 3, size, size];
    let x: Vec<f32> = if cnn_input {
        (0..shape.iter().product::<usize>() as u64).map(|i| unit("input", i) as f32).collect()
    } else {
        synthetic("input", &shape)
    };
    let mut g = Graph::new();
    let xv = g.input("x", &shape)?;
    let out = net.forward(&mut g, xv, Fwd::eval())?;
    g.keep(out.logits);
    let plan = Plan::compile(ctx, &g, &mut store, &format!("{model} golden logits"))?;
    plan.write(xv, &x)?;
    plan.run(1)?;
    let got = plan.read(out.logits)?;
    let scale = want.data.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    let err = got.iter().zip(&want.data).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    Ok(LogitsCheck { model: model.to_string(), rel_error: err / scale, logits: got.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME_HASH_FC_WEIGHT: u64 = 0x79fb_28a7_5603_c7a0;
    const SYNTH_FC_WEIGHT: [f32; 6] = [-0.03070837, 0.15385172, 0.06956628, -0.41214088, -0.93854696, 0.46743795];

    #[test]
    fn matches_the_python_twin() {
        // Printed by scripts/golden_common.py for the same names.
        assert_eq!(name_hash("fc.weight"), NAME_HASH_FC_WEIGHT);
        let v = synthetic("fc.weight", &[2, 3]);
        for (a, b) in v.iter().zip(SYNTH_FC_WEIGHT) {
            assert!((a - b).abs() < 1e-7, "{v:?}");
        }
    }
}
