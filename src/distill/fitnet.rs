//! FitNet hints (Romero et al. 2015) as OFAKD's `FitNet`: per stage a 1x1 convolution (no
//! bias) maps the student's feature map to the teacher's channels, and the loss is the mean
//! squared error against the (detached) teacher map. CNN to CNN only; stages pair by index
//! and must have the same spatial size.

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::models::{Backbone, FeatureShape};
use crate::nn::Builder;
use crate::nn::{Conv2d, ConvInit};
use crate::ops::Conv2dSpec;

pub struct Hints {
    projs: Vec<Conv2d>,
}

impl Hints {
    pub fn new(b: &mut Builder, student: &dyn Backbone, teacher: &dyn Backbone) -> Result<Self> {
        let (fs, ft) = (student.feature_shapes(), teacher.feature_shapes());
        let mut projs = Vec::new();
        for (i, (s, t)) in fs.iter().zip(&ft).enumerate() {
            match (*s, *t) {
                (FeatureShape::Map { c: cs, h: hs, w: ws }, FeatureShape::Map { c: ct, h: ht, w: wt }) => {
                    if (hs, ws) != (ht, wt) {
                        return Err(Error::usage(format!(
                            "fitnet: stage {} of {} is {s} but stage {} of {} is {t}; FitNet needs equal spatial sizes (use ofa or kd)",
                            i + 1,
                            student.name(),
                            i + 1,
                            teacher.name()
                        )));
                    }
                    let init = ConvInit::KaimingFanOut { per_group: false };
                    projs.push(Conv2d::new(b, &format!("proj{}", i + 1), cs, ct, 1, Conv2dSpec::new(1, 0, 1), false, init)?);
                }
                _ => {
                    return Err(Error::usage(format!(
                        "fitnet pairs CNN feature maps only, but {} -> {} is a heterogeneous pair (stage {}: {t} -> {s}); use ofa or kd",
                        teacher.name(),
                        student.name(),
                        i + 1
                    )));
                }
            }
        }
        Ok(Hints { projs })
    }

    /// Sum over the paired stages of mean((proj(s) - t)^2).
    pub fn loss(&self, g: &mut Graph, student: &[Var], teacher: &[Var]) -> Result<Var> {
        let mut total: Option<Var> = None;
        for ((p, &s), &t) in self.projs.iter().zip(student).zip(teacher) {
            let t = g.detach(t)?;
            let y = p.forward(g, s)?;
            let d = g.sub(y, t)?;
            let d2 = g.square(d)?;
            let m = g.mean_all(d2)?;
            total = Some(match total {
                None => m,
                Some(acc) => g.add(acc, m)?,
            });
        }
        total.ok_or_else(|| Error::usage("fitnet: the student and teacher share no stage"))
    }
}
