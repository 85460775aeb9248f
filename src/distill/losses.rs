//! Distillation losses on logits, composed from graph ops so their gradients come from the
//! ops' own backward rules. The teacher's logits are always detached. Formulas follow the
//! reference implementations digested in ../shared/reference/papers-digest.md (A1, A5);
//! tests compare values and gradients with scripts/golden_losses.py (PyTorch).

use crate::error::Result;
use crate::graph::{Graph, Var};

/// softmax(z / t) and log_softmax(z / t).
fn tempered(g: &mut Graph, z: Var, t: f32) -> Result<(Var, Var)> {
    let zt = if t == 1.0 { z } else { g.scale(z, 1.0 / t)? };
    let ls = g.log_softmax(zt)?;
    let p = g.exp(ls)?;
    Ok((p, ls))
}

fn batch_of(g: &Graph, z: Var) -> usize {
    g.shape(z)[0]
}

/// Hinton KD: KL(p_t || p_s) with batchmean, times T^2.
pub fn kd(g: &mut Graph, zs: Var, zt: Var, t: f32) -> Result<Var> {
    let zt = g.detach(zt)?;
    let (_, ls) = tempered(g, zs, t)?;
    let (pt, lt) = tempered(g, zt, t)?;
    let d = g.sub(lt, ls)?;
    let kl = g.mul(pt, d)?;
    let s = g.sum_all(kl)?;
    g.scale(s, t * t / batch_of(g, zs) as f32)
}

/// Sum over the last axis of `p * (lp - lq)`, i.e. KL rows, given both log-probabilities.
fn kl_rows(g: &mut Graph, p: Var, lp: Var, lq: Var) -> Result<Var> {
    let d = g.sub(lp, lq)?;
    let m = g.mul(p, d)?;
    g.sum_all(m)
}

/// Decoupled KD (Zhao et al. 2022, as mdistiller/OFAKD): alpha * TCKD + beta * NCKD, both
/// times T^2 / B. `onehot` is [B, C] of the labels.
pub fn dkd(g: &mut Graph, zs: Var, zt: Var, onehot: Var, alpha: f32, beta: f32, t: f32) -> Result<Var> {
    let zt = g.detach(zt)?;
    let b = batch_of(g, zs) as f32;
    let (ps, _) = tempered(g, zs, t)?;
    let (pt, _) = tempered(g, zt, t)?;
    let other = g.unary(onehot, crate::ops::Unary::Affine(-1.0, 1.0))?;
    // Target-class KD over the two bins (target, rest).
    let bins = |g: &mut Graph, p: Var| -> Result<(Var, Var)> {
        let a = g.mul(p, onehot)?;
        let a = g.sum(a, &[-1], false)?;
        let o = g.mul(p, other)?;
        let o = g.sum(o, &[-1], false)?;
        Ok((a, o))
    };
    let (sg, so) = bins(g, ps)?;
    let (tg, to) = bins(g, pt)?;
    let mut tckd = None;
    for (pt_bin, ps_bin) in [(tg, sg), (to, so)] {
        let lt = g.log(pt_bin)?;
        let ls = g.log(ps_bin)?;
        let term = kl_rows(g, pt_bin, lt, ls)?;
        tckd = Some(match tckd {
            None => term,
            Some(prev) => g.add(prev, term)?,
        });
    }
    let tckd = tckd.unwrap();
    // Non-target KD: the target class pushed out with -1000 before the softmax.
    let mask = g.scale(onehot, 1000.0 * t)?;
    let zs2 = g.sub(zs, mask)?;
    let zt2 = g.sub(zt, mask)?;
    let (_, ls2) = tempered(g, zs2, t)?;
    let (pt2, lt2) = tempered(g, zt2, t)?;
    let nckd = kl_rows(g, pt2, lt2, ls2)?;
    let a = g.scale(tckd, alpha * t * t / b)?;
    let c = g.scale(nckd, beta * t * t / b)?;
    g.add(a, c)
}

/// Mean Pearson correlation between the rows of `a` and `b` ([R, C] each), as DIST's
/// `cosine_similarity(a - mean, b - mean, eps=1e-8)`.
fn mean_pearson(g: &mut Graph, a: Var, b: Var) -> Result<Var> {
    let center = |g: &mut Graph, x: Var| -> Result<Var> {
        let m = g.mean(x, &[-1], true)?;
        g.sub(x, m)
    };
    let (ac, bc) = (center(g, a)?, center(g, b)?);
    let ab = g.mul(ac, bc)?;
    let dot = g.sum(ab, &[-1], false)?;
    let norm = |g: &mut Graph, x: Var| -> Result<Var> {
        let s = g.square(x)?;
        let s = g.sum(s, &[-1], false)?;
        g.sqrt(s)
    };
    let (na, nb) = (norm(g, ac)?, norm(g, bc)?);
    let den = g.mul(na, nb)?;
    let den = g.add_scalar(den, 1e-8)?;
    let cos = g.div(dot, den)?;
    g.mean_all(cos)
}

/// DIST (Huang et al. 2022): beta * tau^2 * (1 - inter) + gamma * tau^2 * (1 - intra), with
/// inter/intra the mean Pearson correlations over classes (per sample) and over the batch.
pub fn dist(g: &mut Graph, zs: Var, zt: Var, beta: f32, gamma: f32, tau: f32) -> Result<Var> {
    let zt = g.detach(zt)?;
    let (ys, _) = tempered(g, zs, tau)?;
    let (yt, _) = tempered(g, zt, tau)?;
    let inter = mean_pearson(g, ys, yt)?;
    let yst = g.transpose(ys, 0, 1)?;
    let ytt = g.transpose(yt, 0, 1)?;
    let intra = mean_pearson(g, yst, ytt)?;
    let t2 = tau * tau;
    let a = g.unary(inter, crate::ops::Unary::Affine(-beta * t2, beta * t2))?;
    let c = g.unary(intra, crate::ops::Unary::Affine(-gamma * t2, gamma * t2))?;
    g.add(a, c)
}

/// softmax(zt / t) of the (detached) teacher logits, built once per graph: every OFA term
/// (the final logits and each branch) reads the same targets. Found again by its name.
fn teacher_probs(g: &mut Graph, zt: Var, t: f32) -> Result<Var> {
    let key = format!("teacher_probs[{}@{:08x}]", zt.index(), t.to_bits());
    let found = (0..g.tensor_count() as u32).map(crate::graph::Var).find(|&v| {
        let info = g.info(v);
        info.name.contains(&key) && matches!(info.source, crate::graph::Source::Node(n) if g.nodes()[n].op.name() == "exp")
    });
    if let Some(p) = found {
        return Ok(p);
    }
    g.scoped(&key, |g| {
        let zt = g.detach(zt)?;
        Ok(tempered(g, zt, t)?.0)
    })
}

/// The OFA-KD loss as coded in OFAKD's `ofa_loss`: mean over the batch of
/// `sum_c -((p_t + onehot)^eps - onehot) * log_softmax(z_s / T)`. No T^2 factor.
///
/// That is the soft-target cross-entropy of `z_s / T` with targets `w = (p_t + onehot)^eps -
/// onehot` (rows need not sum to 1; `w = p_t` at eps 1), which takes two dispatches forward
/// and one backward instead of a chain of elementwise ops and reductions.
pub fn ofa(g: &mut Graph, zs: Var, zt: Var, onehot: Var, eps: f32, t: f32) -> Result<Var> {
    let pt = teacher_probs(g, zt, t)?;
    let w = if eps == 1.0 {
        pt
    } else {
        let s = g.add(pt, onehot)?;
        let prod = g.pow(s, eps)?;
        g.sub(prod, onehot)?
    };
    let zs = if t == 1.0 { zs } else { g.scale(zs, 1.0 / t)? };
    g.cross_entropy_soft(zs, w, 0.0)
}
