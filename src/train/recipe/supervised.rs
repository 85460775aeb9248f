//! Supervised training and distillation: a batch of augmented training images, the student's
//! forward pass (and the teacher's, in eval mode, when distilling), the cross-entropy with the
//! labels plus the chosen method's terms ([`Objective`]).

use super::{Nets, Recipe, StepInputs, StepLosses};
use crate::checkpoint::{self, FileTensor, LoadOptions};
use crate::data::{Augment, BatchSpec, Crop, Dataset, Jitter, Mix, seed32};
use crate::distill::objective::{Objective, Terms};
use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::models::{self, Backbone, ModelConfig};
use crate::nn::Fwd;
use crate::store::Store;
use crate::train::config::TrainConfig;
use crate::train::metrics::DataInfo;
use crate::train::run::TEACHER;
use std::collections::BTreeMap;

pub struct Supervised {
    pub objective: Objective,
    /// The teacher's forward runs in the step (a distillation method other than `none`).
    distilling: bool,
}

impl Supervised {
    /// The objective of `cfg` over `store`; a teacher is built when distilling, and also for a
    /// plain run that names one and has its weights (to compare with it: CKA, predictions).
    pub fn new(
        cfg: &TrainConfig,
        store: &mut Store,
        student: &dyn Backbone,
        data: &DataInfo,
        source: &Dataset,
        have_teacher_weights: bool,
    ) -> Result<(Supervised, Option<Box<dyn Backbone>>)> {
        if data.size < source.h {
            return Err(Error::usage(format!(
                "--img-size {} is smaller than the data's {} px; resizing down is not supported",
                data.size, source.h
            )));
        }
        let distill = cfg.distill.clone().filter(|d| d.method != "none");
        let want_teacher = cfg.distill.as_ref().filter(|d| !d.teacher.is_empty() && (distill.is_some() || have_teacher_weights));
        let teacher = match want_teacher {
            Some(d) => Some(models::build(&d.teacher, store, TEACHER, &ModelConfig::new(data.channels, data.size, data.classes))?),
            None => None,
        };
        let objective = Objective::new(store, student, teacher.as_deref(), distill.as_ref(), data.classes, cfg.label_smoothing)?;
        Ok((Supervised { objective, distilling: distill.is_some() }, teacher))
    }
}

/// The GPU augmentation a config asks for.
fn augment_of(cfg: &TrainConfig) -> Augment {
    let a = &cfg.augment;
    let crop = match a.rrc_scale {
        Some(scale) => Crop::ResizedCrop { scale, ratio: (0.75, 4.0 / 3.0) },
        None if a.crop_padding > 0 => Crop::Pad { padding: a.crop_padding },
        None => Crop::Full,
    };
    let jitter = (a.color_jitter > 0.0).then(|| Jitter {
        brightness: a.color_jitter,
        contrast: a.color_jitter,
        saturation: a.color_jitter,
        hue: 0.0,
        p: 1.0,
    });
    Augment { crop, hflip: if a.hflip { 0.5 } else { 0.0 }, jitter, grayscale: 0.0, blur: None }
}

fn mix_of(cfg: &TrainConfig) -> Option<Mix> {
    let a = &cfg.augment;
    (a.mixup_alpha > 0.0 || a.cutmix_alpha > 0.0).then(|| Mix {
        mixup_alpha: a.mixup_alpha,
        cutmix_alpha: a.cutmix_alpha,
        ..Mix::timm_default()
    })
}

impl Recipe for Supervised {
    fn kind(&self) -> &'static str {
        if self.distilling { "distill" } else { "supervised" }
    }

    fn describe(&self, cfg: &TrainConfig) -> String {
        match &cfg.distill {
            Some(d) if self.distilling => format!("distilling {} -> {} with {}", d.teacher, cfg.model, d.method),
            _ => format!("training {}", cfg.model),
        }
    }

    fn term_names(&self) -> &[String] {
        self.objective.term_names()
    }

    fn prepare(&mut self, store: &mut Store, nets: Nets<'_>, teacher_weights: Option<&BTreeMap<String, FileTensor>>) -> Result<()> {
        match (nets.teacher, teacher_weights) {
            (Some(_), Some(w)) => {
                checkpoint::load_into(store, TEACHER, w, "teacher weights", &LoadOptions::default())?;
                Ok(())
            }
            (Some(_), None) => Err(Error::usage("distillation needs the teacher's weights (--teacher-weights)")),
            (None, _) => Ok(()),
        }
    }

    fn train_step(&self, g: &mut Graph, _store: &mut Store, x: &StepInputs<'_>) -> Result<StepLosses> {
        let cfg = x.cfg;
        let spec = BatchSpec {
            augment: augment_of(cfg),
            size: x.train.h,
            out_size: x.data.size,
            mix: mix_of(cfg),
            smoothing: cfg.label_smoothing,
            ..BatchSpec::train(cfg.batch).normalize(x.mean, x.std)
        };
        let batch = g.batch(x.train, &spec, x.step, cfg.seed)?;
        let fwd = Fwd::train(x.step, seed32(cfg.seed));
        let out = x.nets.student.forward(g, batch.images, fwd)?;
        let t_out = match x.nets.teacher {
            Some(t) if self.distilling => Some(t.forward(g, batch.images, Fwd::eval())?),
            _ => None,
        };
        let Terms { total, named } = self.objective.loss(g, &out, t_out.as_ref(), batch.labels, batch.soft_targets, fwd)?;
        let outputs: Vec<Var> = std::iter::once(out.logits).chain(out.features.iter().copied()).collect();
        Ok(StepLosses { backprop: total, report: total, terms: named.into_iter().map(|(_, v)| v).collect(), outputs })
    }

    fn eval_logits(&self, g: &mut Graph, nets: Nets<'_>, images: Var) -> Result<Option<Var>> {
        Ok(Some(nets.student.forward(g, images, Fwd::eval())?.logits))
    }
}
