//! OBoW (Gidaris et al., CVPR 2021; papers-digest B) as graph pieces: the teacher's online
//! vocabularies and BoW targets, the student's dynamic BoW prediction head, the loss, and the
//! monitoring linear classifier. The training step that wires them to an EMA teacher and the
//! multi-crop views is [`crate::train::obow::ObowSession`].
//!
//! Store names follow the reference's state dict under `obow.`:
//! `bow_extractor.bow_extractor.{i}._embedding` / `._embedding_ptr` / `._min_distance_mean`,
//! `bow_predictor.layers_w.{i}.b{i}_fc` / `b{i}_bn` / `b{i}_last_layer`, and
//! `linear_classifier.layers.batch_norm` / `.prediction_layer`.

use crate::error::{Error, Result};
use crate::graph::{DType, Graph, Var};
use crate::models::{Backbone, FeatureShape};
use crate::nn::{BatchNorm2d, Builder, Fwd, Linear};
use crate::ops::BnVars;
use crate::ops::obow::MU_DECAY;
use crate::store::{Init, StateRef};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// OBoW self-supervised training (papers-digest B): what differs from the reference's
/// ImageNet20 ResNet-18 configuration is only what the data's size forces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObowConfig {
    /// Words per vocabulary (K); a multiple of the batch size.
    pub words: usize,
    /// 1-based stages whose teacher features make BoW targets (empty: the last two).
    pub levels: Vec<usize>,
    /// Inverse temperature of the soft assignment (divided by the running mean distance).
    pub inv_delta: f32,
    /// Fixed scale of the student's BoW logits.
    pub kappa: f32,
    /// Teacher momentum at step 0.
    pub alpha: f32,
    /// Raise the momentum from `alpha` to 1 with a cosine over the run (else constant).
    pub alpha_cosine: bool,
    /// Large crops per image (RandomResizedCrop at the full size, scale 0.08-0.6).
    pub crops: usize,
    /// Patches per image (about half the size, 5 of a 3x3 grid).
    pub patches: usize,
    /// Train a linear classifier on the teacher's pooled features alongside (monitoring only,
    /// detached as the reference's): it gives the per-epoch test accuracy.
    pub monitor: bool,
}

impl Default for ObowConfig {
    fn default() -> Self {
        // config/ImageNet20/ResNet18_OBoW_full.yaml
        ObowConfig {
            words: 8192,
            levels: vec![],
            inv_delta: 10.0,
            kappa: 5.0,
            alpha: 0.99,
            alpha_cosine: true,
            crops: 2,
            patches: 5,
            monitor: true,
        }
    }
}

/// Store prefix of everything OBoW adds beyond the two backbones.
pub const PREFIX: &str = "obow";

/// F.normalize's eps.
const L2_EPS: f32 = 1e-12;

/// How the rows of one crop type's tensor map to their image: crop-major (row `k*B + b`, the
/// large crops) or sample-major (row `b*copies + k`, the patches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    CropMajor(usize),
    SampleMajor(usize),
}

impl Layout {
    pub fn copies(self) -> usize {
        match self {
            Layout::CropMajor(c) | Layout::SampleMajor(c) => c,
        }
    }
}

/// One BoW level: the teacher's vocabulary of one stage.
#[derive(Clone)]
pub struct Vocabulary {
    /// 0-based index into the backbone's stage features.
    pub stage: usize,
    pub channels: usize,
    pub words: usize,
    /// F32 [K, C]: `randn.clamp(min=0)` at the start, then a FIFO queue of local features.
    pub embedding: StateRef,
    /// U32 [1]: the oldest word (the next batch of features overwrites words ptr..ptr+B).
    pub ptr: StateRef,
    /// F32 [1]: running mean of the smallest feature-to-word distance (starts at 0.5).
    pub mu: StateRef,
}

/// The student's weight generator of one level: L2-normalise -> Linear(C_l, 2D, no bias) ->
/// BatchNorm1d over the K words -> ReLU -> Linear(2D, D) -> L2-normalise.
pub struct Generator {
    pub fc: Linear,
    pub bn: BatchNorm2d,
    pub last: Linear,
}

/// The monitoring classifier (reference `PredictionHead(batch_norm=True)`): BatchNorm without
/// affine parameters, then Linear initialised N(0, 0.01) with zero bias.
pub struct Monitor {
    pub running_mean: StateRef,
    pub running_var: StateRef,
    pub num_batches_tracked: StateRef,
    pub fc: Linear,
}

pub struct Obow {
    pub cfg: ObowConfig,
    pub levels: Vec<Vocabulary>,
    pub generators: Vec<Generator>,
    pub monitor: Option<Monitor>,
    /// Width of the student's pooled feature (D).
    pub dim: usize,
}

/// The teacher's side of one step.
pub struct Targets {
    /// Per level, F32 [B, K]: L1-normalised BoW of each image.
    pub bow: Vec<Var>,
    /// Per level, F32 [1]: mean entropy of the BoW rows (KL = cross-entropy - entropy).
    pub entropy: Vec<Var>,
}

/// Loss of one crop type.
pub struct CropLoss {
    /// Cross-entropy with the soft targets, averaged over levels (what is differentiated).
    pub ce: Var,
    /// KL(target || prediction) averaged over levels: the reference's reported BoW loss.
    pub kl: Var,
}

fn stages_of(cfg: &ObowConfig, student: &dyn Backbone) -> Result<Vec<(usize, usize, usize, usize)>> {
    let shapes = student.feature_shapes();
    let n = shapes.len();
    let levels: Vec<usize> = if cfg.levels.is_empty() { (n.saturating_sub(2) + 1..=n).collect() } else { cfg.levels.clone() };
    let mut out = Vec::new();
    for &s in &levels {
        if s == 0 || s > n {
            return Err(Error::usage(format!("OBoW level {s}: {} has stages 1..={n}", student.name())));
        }
        match shapes[s - 1] {
            FeatureShape::Map { c, h, w } => out.push((s - 1, c, h, w)),
            other => {
                return Err(Error::usage(format!(
                    "OBoW builds its targets from CNN feature maps; stage {s} of {} is {other}",
                    student.name()
                )));
            }
        }
    }
    Ok(out)
}

impl Obow {
    /// Register the vocabularies, the weight generators and (optionally) the monitoring
    /// classifier under `b` (prefix [`PREFIX`]). `seed` draws the initial vocabularies.
    pub fn new(b: &mut Builder, student: &dyn Backbone, cfg: &ObowConfig, classes: usize, seed: u64) -> Result<Obow> {
        let dim = student.pooled_dim();
        let mut levels = Vec::new();
        let mut generators = Vec::new();
        for (i, (stage, c, h, w)) in stages_of(cfg, student)?.into_iter().enumerate() {
            if h < 5 || w < 5 {
                return Err(Error::usage(format!(
                    "OBoW level {}: the {}x{} map of {} is too small for the border crop and 3x3 local average (needs 5x5: use larger images or an earlier stage)",
                    stage + 1,
                    h,
                    w,
                    student.name()
                )));
            }
            let k = cfg.words;
            // randn(K, C).clamp(min=0), drawn from the run's seed.
            let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0B0B_0B0B_u64.wrapping_mul(i as u64 + 1));
            let init: Vec<f32> = (0..k * c).map(|_| Distribution::<f64>::sample(&StandardNormal, &mut rng).max(0.0) as f32).collect();
            let mut e = b.sub(&format!("bow_extractor.bow_extractor.{i}"));
            levels.push(Vocabulary {
                stage,
                channels: c,
                words: k,
                embedding: e.state("_embedding", &[k, c], DType::F32, Init::Values(init.into()))?,
                ptr: e.state("_embedding_ptr", &[1], DType::U32, Init::Zeros)?,
                mu: e.state("_min_distance_mean", &[1], DType::F32, Init::Const(0.5))?,
            });
            let mut p = b.sub(&format!("bow_predictor.layers_w.{i}"));
            generators.push(Generator {
                fc: Linear::new(&mut p, &format!("b{i}_fc"), c, 2 * dim, false)?,
                bn: BatchNorm2d::new(&mut p, &format!("b{i}_bn"), 2 * dim)?,
                last: Linear::new(&mut p, &format!("b{i}_last_layer"), 2 * dim, dim, true)?,
            });
        }
        let monitor = if cfg.monitor {
            let mut m = b.sub("linear_classifier.layers");
            let mut bn = m.sub("batch_norm");
            let running_mean = bn.state("running_mean", &[dim], DType::F32, Init::Zeros)?;
            let running_var = bn.state("running_var", &[dim], DType::F32, Init::Ones)?;
            let num_batches_tracked = bn.state("num_batches_tracked", &[1], DType::U32, Init::Zeros)?;
            let fc = Linear::with_init(&mut m, "prediction_layer", dim, classes, true, Init::Normal { std: 0.01 }, Init::Zeros)?;
            Some(Monitor { running_mean, running_var, num_batches_tracked, fc })
        } else {
            None
        };
        Ok(Obow { cfg: cfg.clone(), levels, generators, monitor, dim })
    }

    /// Detached clones of the vocabularies taken at the start of the step (the reference's
    /// `get_dictionary()`): the distances and the student's head both use the words as they
    /// were before this step's queue update.
    pub fn dictionaries(&self, g: &mut Graph) -> Result<Vec<Var>> {
        self.levels
            .iter()
            .map(|l| {
                let v = g.state(&l.embedding);
                g.copy(v)
            })
            .collect()
    }

    /// The teacher's BoW targets from its (detached) stage features `tfeat` (one map per
    /// level, [B, C, H, W]), and the in-place updates of `mu` and the vocabulary queues.
    /// `max_block` bounds the bytes of one distance block (a storage binding): larger batches
    /// are split by whole images.
    pub fn targets(&self, g: &mut Graph, tfeat: &[Var], dicts: &[Var], step: Var, seed: u32, max_block: u64) -> Result<Targets> {
        if tfeat.len() != self.levels.len() || dicts.len() != self.levels.len() {
            return Err(Error::usage(format!(
                "OBoW: {} levels, got {} feature maps and {} dictionaries",
                self.levels.len(),
                tfeat.len(),
                dicts.len()
            )));
        }
        let (mut bow, mut entropy) = (Vec::new(), Vec::new());
        for (i, lv) in self.levels.iter().enumerate() {
            let (f, w) = (tfeat[i], dicts[i]);
            let s = g.shape(f).to_vec();
            let (b, k) = (s[0], lv.words);
            let pos = (s[2] - 2) * (s[3] - 2);
            let out = g.scoped(&format!("bow{i}"), |g| -> Result<(Var, Var)> {
                let rows = g.bow_rows(f)?;
                let fsq = g.sqnorm_rows(rows)?;
                let wsq = g.sqnorm_rows(w)?;
                let per = ((max_block / (4 * (k * pos) as u64)) as usize).clamp(1, b);
                let mut chunks = Vec::new();
                for c0 in (0..b).step_by(per) {
                    let n = per.min(b - c0);
                    let (r, fs) =
                        if n == b { (rows, fsq) } else { (g.slice(rows, 0, c0 * pos, n * pos)?, g.slice(fsq, 0, c0 * pos, n * pos)?) };
                    let dt = g.matmul_ex(w, r, false, true, None)?;
                    let mins = g.bow_min(dt, fs, wsq)?;
                    chunks.push((dt, fs, mins));
                }
                let mins: Vec<Var> = chunks.iter().map(|c| c.2).collect();
                let all = if mins.len() == 1 { mins[0] } else { g.concat(&mins, 0)? };
                let mu = g.state(&lv.mu);
                // mu moves before the codes use it, as in the reference.
                g.bow_mu_update(mu, all, MU_DECAY)?;
                let mut codes = Vec::new();
                for &(dt, fs, mins) in &chunks {
                    codes.push(g.bow_codes(dt, fs, wsq, mins, mu, pos, self.cfg.inv_delta)?);
                }
                let t = if codes.len() == 1 { codes[0] } else { g.concat(&codes, 0)? };
                // The queue takes this batch's local features (the distances above used the
                // words before this update: they read the step's clone).
                let (emb, ptr) = (g.state(&lv.embedding), g.state(&lv.ptr));
                g.vocab_update(emb, ptr, f, step, seed, 0x0B0 + 0x100 * i as u32)?;
                Ok((t, mean_entropy(g, t)?))
            })?;
            bow.push(out.0);
            entropy.push(out.1);
        }
        Ok(Targets { bow, entropy })
    }

    /// The generated word weights of each level, [K, D], unit rows (differentiable).
    pub fn word_weights(&self, g: &mut Graph, dicts: &[Var], f: Fwd) -> Result<Vec<Var>> {
        let mut out = Vec::new();
        for (i, (gen_, &d)) in self.generators.iter().zip(dicts).enumerate() {
            out.push(g.scoped(&format!("bow_predictor{i}"), |g| -> Result<Var> {
                let x = g.l2_normalize_rows(d, L2_EPS)?;
                let h = gen_.fc.forward(g, x)?;
                let h = gen_.bn.forward(g, h, &f)?;
                let h = g.relu(h)?;
                let h = gen_.last.forward(g, h)?;
                g.l2_normalize_rows(h, L2_EPS)
            })?);
        }
        Ok(out)
    }

    /// BoW prediction logits `kappa * f W^T` [N, K] of pooled student features `pooled` [N, D]
    /// for each level.
    pub fn logits(&self, g: &mut Graph, pooled: Var, weights: &[Var]) -> Result<Vec<Var>> {
        let kf = g.scale(pooled, self.cfg.kappa)?;
        weights.iter().map(|&w| g.matmul_ex(kf, w, false, true, None)).collect()
    }

    /// The loss of one crop type: cross-entropy of each level's logits with its image's target,
    /// averaged over levels (and the KL the reference reports).
    pub fn crop_loss(&self, g: &mut Graph, pooled: Var, weights: &[Var], t: &Targets, layout: Layout) -> Result<CropLoss> {
        let logits = self.logits(g, pooled, weights)?;
        let levels = logits.len() as f32;
        let (mut ce, mut h): (Option<Var>, Option<Var>) = (None, None);
        for (i, &z) in logits.iter().enumerate() {
            let tgt = expand_targets(g, t.bow[i], layout)?;
            if g.shape(tgt) != g.shape(z) {
                return Err(Error::shape("obow loss", format!("logits {:?} and targets {:?} differ", g.shape(z), g.shape(tgt))));
            }
            let c = g.cross_entropy_soft(z, tgt, 0.0)?;
            ce = Some(match ce {
                None => c,
                Some(p) => g.add(p, c)?,
            });
            h = Some(match h {
                None => t.entropy[i],
                Some(p) => g.add(p, t.entropy[i])?,
            });
        }
        let (ce, h) = (ce.ok_or_else(|| Error::usage("OBoW needs at least one level"))?, h.unwrap());
        let kl = g.sub(ce, h)?;
        Ok(CropLoss { ce: g.scale(ce, 1.0 / levels)?, kl: g.scale(kl, 1.0 / levels)? })
    }

    /// Monitoring logits from (detached) pooled teacher features [B, D].
    pub fn monitor_logits(&self, g: &mut Graph, pooled: Var, f: Fwd) -> Result<Option<Var>> {
        let Some(m) = &self.monitor else { return Ok(None) };
        let v = BnVars {
            weight: None,
            bias: None,
            running_mean: g.state(&m.running_mean),
            running_var: g.state(&m.running_var),
            num_batches_tracked: g.state(&m.num_batches_tracked),
        };
        let x = g.batch_norm(pooled, &v, 1e-5, 0.1, f.training())?;
        Ok(Some(m.fc.forward(g, x)?))
    }
}

/// Target rows for a crop tensor laid out as `layout`.
pub fn expand_targets(g: &mut Graph, t: Var, layout: Layout) -> Result<Var> {
    let (b, k) = (g.shape(t)[0], g.shape(t)[1]);
    match layout {
        Layout::CropMajor(1) | Layout::SampleMajor(1) => Ok(t),
        Layout::CropMajor(c) => g.concat(&vec![t; c], 0),
        Layout::SampleMajor(c) => {
            let r = g.reshape(t, &[b, 1, k])?;
            let e = g.expand(r, &[b, c, k])?;
            g.reshape(e, &[b * c, k])
        }
    }
}

/// `-mean_b sum_k t log t` of rows that sum to 1 (0 log 0 = 0), [1]. For reporting only.
fn mean_entropy(g: &mut Graph, t: Var) -> Result<Var> {
    let b = g.shape(t)[0];
    let shifted = g.add_scalar(t, 1e-30)?;
    let lg = g.log(shifted)?;
    let tl = g.mul(t, lg)?;
    let s = g.sum_all(tl)?;
    g.scale(s, -1.0 / b as f32)
}
