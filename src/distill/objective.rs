//! The loss of a run: cross-entropy with the labels, plus the distillation terms of the chosen
//! method (papers-digest A2, A5). OFA-KD's branches and FitNet's hint layers are parameters of
//! the objective, registered in the store next to the student (and dropped from its checkpoint).

use super::{fitnet::Hints, losses, ofa::OfaBranches};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::models::{Backbone, Family, Output};
use crate::nn::{Builder, Fwd};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// How a student is distilled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// none, kd, dkd, dist, fitnet or ofa.
    pub method: String,
    pub teacher: String,
    pub teacher_weights: String,
    /// Weight of the cross-entropy with the labels.
    pub gt_weight: f32,
    /// Weight of the logit-distillation term (kd, dkd, dist, ofa on the final logits).
    pub kd_weight: f32,
    pub temperature: f32,
    pub dkd_alpha: f32,
    pub dkd_beta: f32,
    pub dist_beta: f32,
    pub dist_gamma: f32,
    pub fitnet_weight: f32,
    /// OFA: weight of the branch losses.
    pub ofa_weight: f32,
    /// OFA: stages (1-based) that get a branch.
    pub ofa_stages: Vec<usize>,
    /// OFA: eps per branch stage, then for the final logits (one value: used everywhere).
    pub ofa_eps: Vec<f32>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        // OFAKD train.py defaults.
        DistillConfig {
            method: "ofa".into(),
            teacher: String::new(),
            teacher_weights: String::new(),
            gt_weight: 1.0,
            kd_weight: 1.0,
            temperature: 1.0,
            dkd_alpha: 1.0,
            dkd_beta: 2.0,
            dist_beta: 1.0,
            dist_gamma: 1.0,
            fitnet_weight: 1.0,
            ofa_weight: 1.0,
            ofa_stages: vec![1, 2, 3],
            ofa_eps: vec![1.0],
        }
    }
}

impl DistillConfig {
    pub const METHODS: &'static [&'static str] = &["none", "kd", "dkd", "dist", "fitnet", "ofa"];

    /// eps for branch `i` of `n` (the last slot is the final logits).
    pub fn eps_for(&self, slot: usize, slots: usize) -> f32 {
        match self.ofa_eps.len() {
            0 => 1.0,
            1 => self.ofa_eps[0],
            k if k == slots => self.ofa_eps[slot],
            _ => *self.ofa_eps.last().unwrap(),
        }
    }
}

/// The distillation method and its extra modules.
pub enum Extra {
    None,
    Kd,
    Dkd,
    Dist,
    FitNet(Hints),
    Ofa(OfaBranches),
}

pub struct Objective {
    pub cfg: Option<DistillConfig>,
    pub classes: usize,
    pub smoothing: f32,
    pub extra: Extra,
    names: Vec<String>,
}

/// The total loss and its named parts (each [1]).
pub struct Terms {
    pub total: Var,
    pub named: Vec<(String, Var)>,
}

/// Store prefix of the objective's own parameters.
pub const EXTRA: &str = "distill.";

impl Objective {
    pub fn new(
        store: &mut Store,
        student: &dyn Backbone,
        teacher: Option<&dyn Backbone>,
        cfg: Option<&DistillConfig>,
        classes: usize,
        smoothing: f32,
    ) -> Result<Objective> {
        let method = cfg.map(|c| c.method.as_str()).unwrap_or("none");
        let extra = match (method, teacher) {
            ("none", _) => Extra::None,
            (m, None) => return Err(Error::usage(format!("method '{m}' needs a teacher"))),
            ("kd", _) => Extra::Kd,
            ("dkd", _) => Extra::Dkd,
            ("dist", _) => Extra::Dist,
            ("fitnet", Some(t)) => {
                if student.family() != Family::Cnn || t.family() != Family::Cnn {
                    return Err(Error::usage(format!(
                        "fitnet pairs CNN feature maps only; {} is {:?} and {} is {:?}: use kd, dkd, dist or ofa for heterogeneous pairs",
                        student.name(),
                        student.family(),
                        t.name(),
                        t.family()
                    )));
                }
                Extra::FitNet(Hints::new(&mut Builder::new(store, &format!("{EXTRA}fitnet")), student, t)?)
            }
            ("ofa", Some(t)) => {
                let stages = cfg.map(|c| c.ofa_stages.clone()).unwrap_or_default();
                Extra::Ofa(OfaBranches::new(&mut Builder::new(store, &format!("{EXTRA}ofa")), student, t, &stages, classes)?)
            }
            (m, _) => return Err(Error::usage(format!("unknown method '{m}'; known: {}", DistillConfig::METHODS.join(", ")))),
        };
        let names: Vec<String> = match &extra {
            Extra::None => vec!["gt".into()],
            Extra::Kd | Extra::Dkd | Extra::Dist => vec!["gt".into(), method.into()],
            Extra::FitNet(_) => vec!["gt".into(), "fitnet".into()],
            Extra::Ofa(_) => vec!["gt".into(), "kd".into(), "ofa".into()],
        };
        Ok(Objective { cfg: cfg.cloned(), classes, smoothing, extra, names })
    }

    /// Names of the loss terms, in the order [`Self::loss`] returns them.
    pub fn term_names(&self) -> &[String] {
        &self.names
    }

    /// Build the loss. `labels` are hard labels (the argmax under mixup); `soft` the soft
    /// targets when the data produced them (mixup/cutmix, smoothing).
    pub fn loss(&self, g: &mut Graph, s: &Output, t: Option<&Output>, labels: Var, soft: Option<Var>, f: Fwd) -> Result<Terms> {
        let gt = match soft {
            Some(soft) => g.cross_entropy_soft(s.logits, soft, 0.0)?,
            None => g.cross_entropy(s.logits, labels, self.smoothing)?,
        };
        let d = self.cfg.clone().unwrap_or_default();
        let mut named = vec![("gt".to_string(), gt)];
        let mut total = if d.gt_weight == 1.0 { gt } else { g.scale(gt, d.gt_weight)? };
        let mut add = |g: &mut Graph, name: &str, v: Var, w: f32, named: &mut Vec<(String, Var)>| -> Result<()> {
            named.push((name.to_string(), v));
            let wv = if w == 1.0 { v } else { g.scale(v, w)? };
            total = g.add(total, wv)?;
            Ok(())
        };
        let tz = t.map(|t| t.logits);
        match (&self.extra, tz) {
            (Extra::None, _) => {}
            (Extra::Kd, Some(zt)) => {
                let v = losses::kd(g, s.logits, zt, d.temperature)?;
                add(g, "kd", v, d.kd_weight, &mut named)?;
            }
            (Extra::Dkd, Some(zt)) => {
                let oh = g.one_hot(labels, self.classes)?;
                let v = losses::dkd(g, s.logits, zt, oh, d.dkd_alpha, d.dkd_beta, d.temperature)?;
                add(g, "dkd", v, d.kd_weight, &mut named)?;
            }
            (Extra::Dist, Some(zt)) => {
                let v = losses::dist(g, s.logits, zt, d.dist_beta, d.dist_gamma, d.temperature)?;
                add(g, "dist", v, d.kd_weight, &mut named)?;
            }
            (Extra::FitNet(h), Some(_)) => {
                // As OFAKD's FitNet: cross-entropy plus the hint MSE, no logit term.
                let tf = t.map(|t| t.features.clone()).unwrap_or_default();
                let v = h.loss(g, &s.features, &tf)?;
                add(g, "fitnet", v, d.fitnet_weight, &mut named)?;
            }
            (Extra::Ofa(b), Some(zt)) => {
                // OFAKD: loss_kd on the final logits with the last eps, and the branch losses
                // (each with its stage's eps) summed and weighted by ofa_weight.
                let oh = g.one_hot(labels, self.classes)?;
                let slots = b.stages().len() + 1;
                let v = losses::ofa(g, s.logits, zt, oh, d.eps_for(slots - 1, slots), d.temperature)?;
                add(g, "kd", v, d.kd_weight, &mut named)?;
                let mut sum: Option<Var> = None;
                for (i, zb) in b.forward(g, &s.features, f)?.into_iter().enumerate() {
                    let v = losses::ofa(g, zb, zt, oh, d.eps_for(i, slots), d.temperature)?;
                    sum = Some(match sum {
                        None => v,
                        Some(p) => g.add(p, v)?,
                    });
                }
                let v = sum.ok_or_else(|| Error::usage("ofa needs at least one branch stage"))?;
                add(g, "ofa", v, d.ofa_weight, &mut named)?;
            }
            (_, None) => return Err(Error::usage("this method needs the teacher's logits")),
        }
        Ok(Terms { total, named })
    }
}
