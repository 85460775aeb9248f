//! Linear CKA (Kornblith et al. 2019), the diagnostic OFA-KD uses to show that heterogeneous
//! teachers and students learn different features. Kernel form: with K = X X^T and L = Y Y^T
//! centred (H K H), CKA = <Kc, Lc>_F / (||Kc||_F ||Lc||_F). It needs only n x n Gram matrices,
//! so flattened feature maps of any width work (the (n-1)^2 of HSIC cancels in the ratio).

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};

/// H K H for a Gram matrix K [n, n]: subtract row and column means, add back the total mean.
fn centered_gram(g: &mut Graph, x: Var) -> Result<Var> {
    let k = g.matmul_ex(x, x, false, true, None)?;
    let rows = g.mean(k, &[1], true)?;
    let cols = g.mean(k, &[0], true)?;
    let all = g.mean_all(k)?;
    let a = g.sub(k, rows)?;
    let b = g.sub(a, cols)?;
    g.add(b, all)
}

fn frob_dot(g: &mut Graph, a: Var, b: Var) -> Result<Var> {
    let m = g.mul(a, b)?;
    g.sum_all(m)
}

/// Flatten [n, ...] to [n, d].
fn flat(g: &mut Graph, x: Var) -> Result<Var> {
    let s = g.shape(x).to_vec();
    if s.len() < 2 {
        return Err(Error::shape("cka", format!("features need a sample axis and at least one more, got {s:?}")));
    }
    let d: usize = s[1..].iter().product();
    g.reshape(x, &[s[0], d])
}

/// CKA between every feature in `xs` and every feature in `ys` (all with the same number of
/// samples), as a [xs.len(), ys.len()] tensor.
pub fn cka_matrix(g: &mut Graph, xs: &[Var], ys: &[Var]) -> Result<Var> {
    let n = g.shape(*xs.first().ok_or_else(|| Error::shape("cka", "no features"))?)[0];
    let mut grams = |list: &[Var]| -> Result<Vec<(Var, Var)>> {
        list.iter()
            .map(|&x| {
                if g.shape(x)[0] != n {
                    return Err(Error::shape("cka", format!("features disagree on the sample count: {:?} vs {n}", g.shape(x))));
                }
                let f = flat(g, x)?;
                let kc = centered_gram(g, f)?;
                let self_dot = frob_dot(g, kc, kc)?;
                let norm = g.sqrt(self_dot)?;
                Ok((kc, norm))
            })
            .collect()
    };
    let gx = grams(xs)?;
    let gy = grams(ys)?;
    let mut cells = Vec::new();
    for &(kx, nx) in &gx {
        for &(ky, ny) in &gy {
            let num = frob_dot(g, kx, ky)?;
            let den = g.mul(nx, ny)?;
            cells.push(g.div(num, den)?);
        }
    }
    let m = g.concat(&cells, 0)?;
    g.reshape(m, &[xs.len(), ys.len()])
}

/// CKA of two feature tensors, shape [1].
pub fn linear_cka(g: &mut Graph, x: Var, y: Var) -> Result<Var> {
    let m = cka_matrix(g, &[x], &[y])?;
    g.reshape(m, &[1])
}
