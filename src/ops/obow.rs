//! OBoW's own kernels (papers-digest B2-B4): the teacher's bag-of-visual-words targets, the
//! online vocabulary queue, the batch-mean distance `mu`, row L2 normalisation (with its
//! gradient) for the student's weight generator, and row feature banks for the evaluations
//! (linear probe, few-shot, vocabulary pictures). Kernels in `shaders/obow.wgsl`.
//!
//! Distances are handled transposed: `dt = W F^T` ([K, R], a matmul), so the per-row kernels
//! read neighbouring addresses in neighbouring threads. The squared distance of row r to word
//! k is `|f_r|^2 + |w_k|^2 - 2 dt[k, r]`, exactly the reference's expansion.

use crate::error::{Error, Result};
use crate::graph::lower::{grid, grid_for};
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

/// Decay of `mu`, the running mean of the smallest distances (reference: 0.99).
pub const MU_DECAY: f32 = 0.99;

/// The uniform block of every kernel in `obow.wgsl` (field order of `BowP`).
#[derive(Clone, Copy, Debug, Default)]
struct BowParams {
    rows: usize,
    k: usize,
    pos: usize,
    c: usize,
    h: usize,
    w: usize,
    n: usize,
    seed: u32,
    salt: u32,
    inv_delta: f32,
    decay: f32,
    eps: f32,
}

impl BowParams {
    fn params(&self) -> Params {
        Params::new()
            .u(self.rows)
            .u(self.k)
            .u(self.pos)
            .u(self.c)
            .u(self.h)
            .u(self.w)
            .u(self.n)
            .u(self.seed as usize)
            .u(self.salt as usize)
            .u(0)
            .u(0)
            .u(0)
            .f(self.inv_delta)
            .f(self.decay)
            .f(self.eps)
            .f(0.0)
    }
}

fn binds(n: &NodeRef) -> Vec<Bind> {
    n.inputs.iter().chain(&n.outputs).map(|t| Bind::T(t.var)).collect()
}

/// Ops that build targets or bookkeeping: nothing flows back through them.
fn no_grad(n: &NodeRef) -> Result<Vec<Option<Var>>> {
    Ok(vec![None; n.inputs.len()])
}

// ---- rows -----------------------------------------------------------------------------------

/// [B, C, H, W] -> [B * (H-2) * (W-2), C]: the 1-pixel border dropped, one row per position
/// (image-major, then y, then x), as `feat[:, :, 1:-1, 1:-1]` flattened to NHWC.
#[derive(Debug)]
struct BowRowsOp;

impl Op for BowRowsOp {
    fn name(&self) -> &'static str {
        "bow_rows"
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let s = &n.inputs[0].shape;
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let pos = (h - 2) * (w - 2);
        let p = BowParams { rows: b * pos, pos, c, h, w, ..Default::default() };
        l.dispatch("obow", "bow_rows", p.params(), &binds(n), grid_for(b * pos * c, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let s = &x[0].shape;
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let mut out = Vec::with_capacity(n.outputs[0].numel());
        for bi in 0..b {
            for y in 1..h - 1 {
                for xx in 1..w - 1 {
                    for ch in 0..c {
                        out.push(x[0].data[((bi * c + ch) * h + y) * w + xx]);
                    }
                }
            }
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

/// Squared L2 norm of each row: [R, C] -> [R].
#[derive(Debug)]
struct SqNormRowsOp;

impl Op for SqNormRowsOp {
    fn name(&self) -> &'static str {
        "sqnorm_rows"
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let s = &n.inputs[0].shape;
        let p = BowParams { rows: s[0], c: s[1], ..Default::default() };
        l.dispatch("obow", "sqnorm_rows", p.params(), &binds(n), grid_for(s[0], 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let c = x[0].shape[1];
        let out = x[0].data.chunks(c).map(|r| r.iter().map(|v| v * v).sum()).collect();
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

/// Squared distance of row `r` to word `k` from the transposed dot products.
fn dist(dt: &CpuTensor, fsq: &CpuTensor, wsq: &CpuTensor, k: usize, r: usize) -> f64 {
    let rows = dt.shape[1];
    fsq.data[r] + wsq.data[k] - 2.0 * dt.data[k * rows + r]
}

/// Smallest squared distance of each row to any word. Inputs: dt [K, R], fsq [R], wsq [K].
#[derive(Debug)]
struct BowMinOp;

impl Op for BowMinOp {
    fn name(&self) -> &'static str {
        "bow_min"
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let s = &n.inputs[0].shape;
        let p = BowParams { rows: s[1], k: s[0], ..Default::default() };
        l.dispatch("obow", "bow_min", p.params(), &binds(n), grid_for(s[1], 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (k, rows) = (x[0].shape[0], x[0].shape[1]);
        let out = (0..rows).map(|r| (0..k).map(|kk| dist(x[0], x[1], x[2], kk, r)).fold(f64::INFINITY, f64::min)).collect();
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        3 * n.inputs[0].numel() as u64
    }
}

/// `mu <- decay * mu + (1 - decay) * mean(mins)` in place. Inputs: mu (F32 [1] state), mins [R].
#[derive(Debug)]
struct BowMuOp {
    decay: f32,
}

impl Op for BowMuOp {
    fn name(&self) -> &'static str {
        "bow_mu"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let p = BowParams { rows: n.inputs[1].numel(), decay: self.decay, ..Default::default() };
        l.dispatch("obow", "bow_mu", p.params(), &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var)], [1, 1, 1]);
        Ok(())
    }
}

/// The BoW of whole images. Inputs: dt [K, Bc*P], fsq [Bc*P], wsq [K], mins [Bc*P], mu [1].
/// Output [Bc, K]: `softmax_k(-(inv_delta / mu) d)` max-pooled over the P positions of each
/// image, then L1-normalised.
#[derive(Debug)]
struct BowCodesOp {
    pos: usize,
    inv_delta: f32,
}

/// F.normalize's eps.
const NORM_EPS: f32 = 1e-12;

impl Op for BowCodesOp {
    fn name(&self) -> &'static str {
        "bow_codes"
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (k, rows) = (n.inputs[0].shape[0], n.inputs[0].shape[1]);
        let images = rows / self.pos;
        let lse = l.scratch(rows, "bow log-sum-exp");
        let p = BowParams { rows, k, pos: self.pos, n: images, inv_delta: self.inv_delta, eps: NORM_EPS, ..Default::default() };
        let t = |i: usize| Bind::T(n.inputs[i].var);
        l.dispatch("obow", "bow_lse", p.params(), &[t(0), t(1), t(2), t(3), t(4), lse], grid_for(rows, 256));
        l.dispatch("obow", "bow_pool_l1", p.params(), &[t(0), t(1), t(2), t(4), lse, Bind::T(n.outputs[0].var)], grid(images));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (k, rows) = (x[0].shape[0], x[0].shape[1]);
        let s = self.inv_delta as f64 / x[4].data[0];
        let images = rows / self.pos;
        let mut out = vec![0.0; images * k];
        for r in 0..rows {
            let d: Vec<f64> = (0..k).map(|kk| dist(x[0], x[1], x[2], kk, r)).collect();
            let m = d.iter().cloned().fold(f64::INFINITY, f64::min);
            let z: f64 = d.iter().map(|v| (-s * (v - m)).exp()).sum();
            let b = r / self.pos;
            for kk in 0..k {
                let code = (-s * (d[kk] - m)).exp() / z;
                out[b * k + kk] = f64::max(out[b * k + kk], code);
            }
        }
        for row in out.chunks_mut(k) {
            let sum: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum.max(NORM_EPS as f64));
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
    fn flops(&self, n: &NodeRef) -> u64 {
        8 * n.inputs[0].numel() as u64
    }
}

/// The vocabulary queue update in place. Inputs: vocab (F32 [K, C] state), ptr (U32 [1] state),
/// feat [B, C, H, W], step (U32 [1]).
#[derive(Debug)]
struct VocabUpdateOp {
    seed: u32,
    salt: u32,
}

impl Op for VocabUpdateOp {
    fn name(&self) -> &'static str {
        "vocab_update"
    }
    fn writes(&self) -> &[usize] {
        &[0, 1]
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let k = n.inputs[0].shape[0];
        let s = &n.inputs[2].shape;
        let p = BowParams { k, n: s[0], c: s[1], h: s[2], w: s[3], seed: self.seed, salt: self.salt, ..Default::default() };
        let b: Vec<Bind> = n.inputs.iter().map(|t| Bind::T(t.var)).collect();
        l.dispatch("obow", "vocab_update", p.params(), &b, [1, 1, 1]);
        Ok(())
    }
}

/// The location (row-major over the `(H-4) x (W-4)` map of 3x3 averages of the border-cropped
/// map) that [`Graph::vocab_update`] picks for image `b` at step `step`: the WGSL hash, in Rust.
pub fn vocab_location(seed: u32, salt: u32, step: u32, b: usize, h: usize, w: usize) -> usize {
    let n = ((h - 4) * (w - 4)) as u32;
    (crate::ops::data::rng::rand_u32(seed, step, salt.wrapping_add(b as u32)) % n) as usize
}

// ---- L2 normalisation -----------------------------------------------------------------------

/// Rows divided by `max(|row|, eps)` (PyTorch's `F.normalize(x, p=2, dim=1)`). Outputs: y
/// [R, C] and the row norms [R] (for the gradient).
#[derive(Debug)]
struct L2NormRowsOp {
    eps: f32,
}

impl Op for L2NormRowsOp {
    fn name(&self) -> &'static str {
        "l2_normalize_rows"
    }
    fn backward(&self, g: &mut Graph, n: &NodeRef, gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        let Some(gy) = gy[0] else { return Ok(vec![None]) };
        let (y, norm) = (n.outputs[0].var, n.outputs[1].var);
        let shape = n.inputs[0].shape.clone();
        Ok(vec![Some(g.push(L2NormRowsGradOp { eps: self.eps }, &[y, norm, gy], shape, DType::F32)?)])
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let s = &n.inputs[0].shape;
        let p = BowParams { rows: s[0], c: s[1], eps: self.eps, ..Default::default() };
        l.dispatch("obow", "l2n_rows", p.params(), &binds(n), grid_for(s[0], 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let c = x[0].shape[1];
        let mut y = Vec::with_capacity(x[0].numel());
        let mut norms = Vec::new();
        for r in x[0].data.chunks(c) {
            let nrm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            norms.push(nrm);
            y.extend(r.iter().map(|v| v / nrm.max(self.eps as f64)));
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, y), CpuTensor::new(&n.outputs[1].shape, norms)])
    }
}

#[derive(Debug)]
struct L2NormRowsGradOp {
    eps: f32,
}

impl Op for L2NormRowsGradOp {
    fn name(&self) -> &'static str {
        "l2_normalize_rows_grad"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let s = &n.outputs[0].shape;
        let p = BowParams { rows: s[0], c: s[1], eps: self.eps, ..Default::default() };
        l.dispatch("obow", "l2n_rows_grad", p.params(), &binds(n), grid_for(s[0], 256));
        Ok(())
    }
}

// ---- feature banks --------------------------------------------------------------------------

/// `bank[index[i]] = x[i]` where `valid[i] > 0.5`, in place. Inputs: bank (F32 [N, D] state),
/// x [B, D], index (U32 [B]), valid [B].
#[derive(Debug)]
struct RowsScatterOp;

impl Op for RowsScatterOp {
    fn name(&self) -> &'static str {
        "rows_scatter"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, c) = (n.inputs[0].shape[0], n.inputs[0].shape[1]);
        let b = n.inputs[1].shape[0];
        let p = BowParams { rows, c, n: b, ..Default::default() };
        let bs: Vec<Bind> = n.inputs.iter().map(|t| Bind::T(t.var)).collect();
        l.dispatch("obow", "rows_scatter", p.params(), &bs, grid_for(b * c, 256));
        Ok(())
    }
}

/// `out[i] = bank[index[i]]`. Inputs: bank [N, D], index (U32 [B]). Output [B, D].
#[derive(Debug)]
struct RowsGatherOp;

impl Op for RowsGatherOp {
    fn name(&self) -> &'static str {
        "rows_gather"
    }
    fn backward(&self, _g: &mut Graph, n: &NodeRef, _gy: &[Option<Var>]) -> Result<Vec<Option<Var>>> {
        no_grad(n)
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (rows, c) = (n.inputs[0].shape[0], n.inputs[0].shape[1]);
        let b = n.inputs[1].shape[0];
        let p = BowParams { rows, c, n: b, ..Default::default() };
        // The kernel's bindings are (bank, x, index, valid); gather writes x and ignores valid.
        let valid = l.unused();
        let bs = [Bind::T(n.inputs[0].var), Bind::T(n.outputs[0].var), Bind::T(n.inputs[1].var), valid];
        l.dispatch("obow", "rows_gather", p.params(), &bs, grid_for(b * c, 256));
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let (rows, c) = (x[0].shape[0], x[0].shape[1]);
        let mut out = Vec::new();
        for &i in &x[1].data {
            let r = (i as usize).min(rows - 1);
            out.extend_from_slice(&x[0].data[r * c..(r + 1) * c]);
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

// ---- builders -------------------------------------------------------------------------------

fn check(g: &Graph, op: &'static str, v: Var, rank: usize, dtype: DType) -> Result<()> {
    if g.shape(v).len() != rank || g.dtype(v) != dtype {
        return Err(Error::shape(
            op,
            format!("'{}' must be {dtype:?} of rank {rank}, got {:?} {:?}", g.info(v).name, g.dtype(v), g.shape(v)),
        ));
    }
    Ok(())
}

impl Graph {
    /// Teacher feature map [B, C, H, W] -> rows [B * (H-2) * (W-2), C] without the 1-pixel
    /// border (OBoW's `feat[:, :, 1:-1, 1:-1]`), one row per position.
    pub fn bow_rows(&mut self, feat: Var) -> Result<Var> {
        check(self, "bow_rows", feat, 4, DType::F32)?;
        let s = self.shape(feat).to_vec();
        if s[2] < 3 || s[3] < 3 {
            return Err(Error::shape("bow_rows", format!("a {}x{} map has no positions left after dropping the border", s[2], s[3])));
        }
        let rows = s[0] * (s[2] - 2) * (s[3] - 2);
        self.push(BowRowsOp, &[feat], vec![rows, s[1]], DType::F32)
    }

    /// Squared L2 norm of each row of [R, C] (no gradient).
    pub fn sqnorm_rows(&mut self, x: Var) -> Result<Var> {
        check(self, "sqnorm_rows", x, 2, DType::F32)?;
        let r = self.shape(x)[0];
        self.push(SqNormRowsOp, &[x], vec![r], DType::F32)
    }

    fn check_dist(&self, op: &'static str, dt: Var, fsq: Var, wsq: Var) -> Result<(usize, usize)> {
        check(self, op, dt, 2, DType::F32)?;
        let (k, r) = (self.shape(dt)[0], self.shape(dt)[1]);
        if self.shape(fsq) != [r] || self.shape(wsq) != [k] {
            return Err(Error::shape(
                op,
                format!(
                    "dot products {:?} ([words, rows]) need row norms [{r}] and word norms [{k}], got {:?} and {:?}",
                    self.shape(dt),
                    self.shape(fsq),
                    self.shape(wsq)
                ),
            ));
        }
        Ok((k, r))
    }

    /// Smallest squared distance of each row to any word, from `dt` = W F^T [K, R] and the
    /// squared norms of rows `fsq` [R] and words `wsq` [K].
    pub fn bow_min(&mut self, dt: Var, fsq: Var, wsq: Var) -> Result<Var> {
        let (_, r) = self.check_dist("bow_min", dt, fsq, wsq)?;
        self.push(BowMinOp, &[dt, fsq, wsq], vec![r], DType::F32)
    }

    /// `mu <- decay mu + (1 - decay) mean(mins)` in place (`mu`: F32 [1] stored state).
    pub fn bow_mu_update(&mut self, mu: Var, mins: Var, decay: f32) -> Result<()> {
        if self.shape(mu) != [1] || self.dtype(mu) != DType::F32 {
            return Err(Error::shape("bow_mu", "mu must be F32 [1] state"));
        }
        check(self, "bow_mu", mins, 1, DType::F32)?;
        self.push(BowMuOp { decay }, &[mu, mins], vec![1], DType::F32)?;
        Ok(())
    }

    /// BoW targets [R / positions, K] of whole images: soft assignments
    /// `softmax_k(-(inv_delta / mu) d)`, max-pooled over each image's `positions` rows, then
    /// L1-normalised. `mins` are the rows' smallest distances ([`Self::bow_min`]).
    #[allow(clippy::too_many_arguments)]
    pub fn bow_codes(&mut self, dt: Var, fsq: Var, wsq: Var, mins: Var, mu: Var, positions: usize, inv_delta: f32) -> Result<Var> {
        let (k, r) = self.check_dist("bow_codes", dt, fsq, wsq)?;
        if positions == 0 || r % positions != 0 || self.shape(mins) != [r] || self.shape(mu) != [1] {
            return Err(Error::shape(
                "bow_codes",
                format!("{r} rows are not whole images of {positions} positions (or mins/mu are misshapen)"),
            ));
        }
        self.push(BowCodesOp { pos: positions, inv_delta }, &[dt, fsq, wsq, mins, mu], vec![r / positions, k], DType::F32)
    }

    /// OBoW's `local_average` queue update in place: for each image of `feat` [B, C, H, W], drop
    /// the border, average 3x3 windows (stride 1, no padding), take one at a random location
    /// ([`vocab_location`]) and write it over word `ptr + b` of `vocab` [K, C]; then
    /// `ptr = (ptr + B) % K`. K must be a multiple of B.
    pub fn vocab_update(&mut self, vocab: Var, ptr: Var, feat: Var, step: Var, seed: u32, salt: u32) -> Result<()> {
        check(self, "vocab_update", vocab, 2, DType::F32)?;
        check(self, "vocab_update", feat, 4, DType::F32)?;
        if self.shape(ptr) != [1] || self.dtype(ptr) != DType::U32 || self.shape(step) != [1] || self.dtype(step) != DType::U32 {
            return Err(Error::shape("vocab_update", "ptr and step must be U32 [1]"));
        }
        let (k, c) = (self.shape(vocab)[0], self.shape(vocab)[1]);
        let s = self.shape(feat).to_vec();
        if s[1] != c {
            return Err(Error::shape("vocab_update", format!("features have {} channels, the words {c}", s[1])));
        }
        if k % s[0] != 0 {
            return Err(Error::usage(format!(
                "the vocabulary size ({k} words) must be a multiple of the batch size ({}): the queue replaces one batch of words per step",
                s[0]
            )));
        }
        if s[2] < 5 || s[3] < 5 {
            return Err(Error::shape(
                "vocab_update",
                format!("a {}x{} map is too small for a 3x3 local average after dropping the border (needs at least 5x5)", s[2], s[3]),
            ));
        }
        self.push(VocabUpdateOp { seed, salt }, &[vocab, ptr, feat, step], vec![1], DType::F32)?;
        Ok(())
    }

    /// Rows divided by their L2 norm (clamped below by `eps`), as `F.normalize(x, dim=1)`.
    pub fn l2_normalize_rows(&mut self, x: Var, eps: f32) -> Result<Var> {
        check(self, "l2_normalize_rows", x, 2, DType::F32)?;
        let s = self.shape(x).to_vec();
        let outs = self.add_node(std::sync::Arc::new(L2NormRowsOp { eps }), &[x], &[(s.clone(), DType::F32), (vec![s[0]], DType::F32)])?;
        Ok(outs[0])
    }

    /// Write the rows of `x` [B, D] into the stored bank [N, D] at rows `index` (U32 [B]) where
    /// `valid` [B] is 1 (in place; the feature banks of the evaluations).
    pub fn rows_scatter(&mut self, bank: Var, x: Var, index: Var, valid: Var) -> Result<()> {
        check(self, "rows_scatter", bank, 2, DType::F32)?;
        check(self, "rows_scatter", x, 2, DType::F32)?;
        let b = self.shape(x)[0];
        if self.shape(x)[1] != self.shape(bank)[1]
            || self.shape(index) != [b]
            || self.dtype(index) != DType::U32
            || self.shape(valid) != [b]
        {
            return Err(Error::shape(
                "rows_scatter",
                format!("rows {:?} do not fit bank {:?} with index/valid [{b}]", self.shape(x), self.shape(bank)),
            ));
        }
        self.push(RowsScatterOp, &[bank, x, index, valid], vec![1], DType::F32)?;
        Ok(())
    }

    /// Rows `index` (U32 [B]) of `bank` [N, D] -> [B, D] (indices past the end read the last row).
    pub fn rows_gather(&mut self, bank: Var, index: Var) -> Result<Var> {
        check(self, "rows_gather", bank, 2, DType::F32)?;
        check(self, "rows_gather", index, 1, DType::U32)?;
        let shape = vec![self.shape(index)[0], self.shape(bank)[1]];
        self.push(RowsGatherOp, &[bank, index], shape, DType::F32)
    }
}
