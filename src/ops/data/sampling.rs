//! Sampling: which dataset rows make a step's batch ([`Sampling`]: a Feistel permutation per
//! epoch for training, the data in order for evaluation) and the gather of their packed bytes
//! from the dataset pages. Kernels in `shaders/data_sampling.wgsl`.

use super::rng::*;
use super::{check_u32_scalar, plane_grid, u32_of};
use crate::error::{Error, Result};
use crate::graph::lower::grid_for;
use crate::graph::{Bind, CpuTensor, DType, Graph, Lowering, NodeRef, Op, Params, Var};

/// How rows of a batch are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Row b of step s is position t = s*B + b of an endless stream cut into epochs of n
    /// samples; epoch e = t / n visits every sample once, in the order of a Feistel permutation
    /// keyed by (seed, e). A batch may straddle two epochs.
    Train,
    /// Batch i = s mod ceil(n/B) of the data in order (s = the counter). The last batch of a
    /// pass is partial when B does not divide n: its missing rows repeat samples from the
    /// start and get `valid = 0`.
    Eval,
}

// ---- sample -----------------------------------------------------------------------------

#[derive(Debug)]
struct SampleOp {
    n: usize,
    batch: usize,
    sampling: Sampling,
    seed: u32,
}

impl Op for SampleOp {
    fn name(&self) -> &'static str {
        "data_sample"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let hb = feistel_half_bits(self.n as u32) as usize;
        let p = Params::new()
            .u(self.n)
            .u(self.batch)
            .u((self.sampling == Sampling::Eval) as usize)
            .u(self.seed as usize)
            .u(hb)
            .u(self.n.div_ceil(self.batch))
            .u(0)
            .u(0);
        let b: Vec<Bind> = n.inputs.iter().chain(&n.outputs).map(|t| Bind::T(t.var)).collect();
        l.dispatch("data_sampling", "sample", p, &b, grid_for(self.batch, 256));
        Ok(())
    }
    fn cpu(&self, _n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let step = u32_of(x[1].data[0]);
        let (mut idx, mut lab, mut valid) = (vec![], vec![], vec![]);
        for b in 0..self.batch as u32 {
            let (i, v) = match self.sampling {
                Sampling::Train => (train_index(self.n as u32, self.batch as u32, self.seed, step, b), true),
                Sampling::Eval => eval_index(self.n as u32, self.batch as u32, step, b),
            };
            idx.push(i as f64);
            lab.push(x[0].data[i as usize]);
            valid.push(if v { 1.0 } else { 0.0 });
        }
        let s = [self.batch];
        Ok(vec![CpuTensor::new(&s, idx), CpuTensor::new(&s, lab), CpuTensor::new(&s, valid)])
    }
}

// ---- gather -----------------------------------------------------------------------------

#[derive(Debug)]
struct GatherOp {
    batch: usize,
    stride: usize,
    per_page: usize,
}

impl Op for GatherOp {
    fn name(&self) -> &'static str {
        "data_gather"
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let idx = Bind::T(n.inputs[0].var);
        let out = Bind::T(n.outputs[0].var);
        for (p, page) in n.inputs[1..].iter().enumerate() {
            let params = Params::new().u(self.batch).u(self.stride).u(self.per_page).u(p);
            l.dispatch("data_sampling", "gather", params, &[idx, Bind::T(page.var), out], plane_grid(self.batch, self.stride));
        }
        Ok(())
    }
    fn cpu(&self, n: &NodeRef, x: &[&CpuTensor]) -> Result<Vec<CpuTensor>> {
        let mut out = vec![0.0; self.batch * self.stride];
        for b in 0..self.batch {
            let img = x[0].data[b] as usize;
            let page = x[1 + img / self.per_page];
            let src = (img % self.per_page) * self.stride;
            out[b * self.stride..(b + 1) * self.stride].copy_from_slice(&page.data[src..src + self.stride]);
        }
        Ok(vec![CpuTensor::new(&n.outputs[0].shape, out)])
    }
}

impl Graph {
    /// Draw the rows of a batch from `n` samples: returns (dataset indices U32 [B], labels U32
    /// [B] read from `labels` (U32 [n]), valid F32 [B]). `step` is a U32 [1] counter.
    pub fn data_sample(
        &mut self,
        labels: Var,
        step: Var,
        n: usize,
        batch: usize,
        sampling: Sampling,
        seed: u32,
    ) -> Result<(Var, Var, Var)> {
        check_u32_scalar(self, step, "the step")?;
        if n == 0 || batch == 0 {
            return Err(Error::shape("data_sample", "the dataset and the batch must not be empty"));
        }
        if self.numel(labels) < n || self.dtype(labels) != DType::U32 {
            return Err(Error::shape("data_sample", format!("labels must be U32 with at least {n} elements")));
        }
        // Positions inside one step (r*B + b, r < n) are computed in 32 bits.
        if (n as u64) * (batch as u64) >= 1 << 32 {
            return Err(Error::shape("data_sample", format!("{n} samples x batch {batch} must stay below 2^32")));
        }
        let s = vec![batch];
        let outs = self.add_node(
            std::sync::Arc::new(SampleOp { n, batch, sampling, seed }),
            &[labels, step],
            &[(s.clone(), DType::U32), (s.clone(), DType::U32), (s, DType::F32)],
        )?;
        Ok((outs[0], outs[1], outs[2]))
    }

    /// Copy the packed images `idx` (U32 [B]) from the dataset pages into U32 [B, stride]; image
    /// i is at words `(i % per_page) * stride ..` of page `i / per_page`. One dispatch per page.
    pub fn data_gather(&mut self, idx: Var, pages: &[Var], stride: usize, per_page: usize) -> Result<Var> {
        if pages.is_empty() || stride == 0 || per_page == 0 {
            return Err(Error::shape("data_gather", "needs at least one page and a positive image stride"));
        }
        for &p in pages {
            if self.numel(p) < per_page * stride && p != pages[pages.len() - 1] {
                return Err(Error::shape(
                    "data_gather",
                    format!("a page holds {} words, fewer than {per_page} images of {stride}", self.numel(p)),
                ));
            }
        }
        let batch = self.numel(idx);
        let mut inputs = vec![idx];
        inputs.extend_from_slice(pages);
        Ok(self.add_node(std::sync::Arc::new(GatherOp { batch, stride, per_page }), &inputs, &[(vec![batch, stride], DType::U32)])?[0])
    }
}
