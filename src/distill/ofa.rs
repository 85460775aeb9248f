//! OFA-KD's branches (projectors): each tapped student stage is projected into the logit
//! space by a small head whose design follows the student's family (papers-digest A3,
//! OFAKD `distillers/ofa.py`).
//!
//! - CNN students: `n_stages - s` stride-2 `SepConv` blocks (channels doubling, the last one to
//!   D = max(student, teacher) pooled width), or a 1x1 conv to D for the last stage; then global
//!   average pooling and Linear(D, classes).
//! - Token students: PatchMerging steps down to the final grid (the first to the student's
//!   final width with GELU, the last without activation), `max(n_stages - s, 1)` timm Blocks
//!   (4 heads), the class token (or the token mean) and Linear(width, classes).
//!
//! Where we depart from OFAKD, and why:
//! - OFAKD's final token grid is 7 because its inputs are 224 px (CIFAR upsampled). Our 32-px
//!   models keep their native size, so the final grid is `img / 8` below 112 px (4 at 32 px,
//!   the grid the CNN branches of CIFAR ResNets end on), 7 above; merging stops early at an odd
//!   grid (28-px inputs with patch 4 give 7x7, which is not merged).
//! - A token stage that needs no merge but whose width differs from the student's final width
//!   (Swin's middle stages at 32 px) gets a Linear projection; OFAKD would fail there.
//! - Students with fewer than four stages (CIFAR ResNets) use `n_stages - s` where OFAKD has
//!   `4 - s`.
//!
//! Initialisation as OFAKD's `init_weights`: convs kaiming-normal (fan_out), BN 1/0, Linear
//! trunc-normal(.02) with zero bias.

use crate::error::{Error, Result};
use crate::graph::{Graph, Var};
use crate::models::{Backbone, FeatureShape};
use crate::nn::Block;
use crate::nn::{BatchNorm2d, Conv2d, ConvInit};
use crate::nn::{Builder, Fwd, LayerNorm, Linear};
use crate::ops::Conv2dSpec;
use crate::store::Init;

/// dw3x3(stride 2) -> pw1x1 -> BN -> ReLU -> dw3x3 -> pw1x1 -> BN -> ReLU, no biases.
struct SepConv {
    dw1: Conv2d,
    pw1: Conv2d,
    bn1: BatchNorm2d,
    dw2: Conv2d,
    pw2: Conv2d,
    bn2: BatchNorm2d,
}

impl SepConv {
    fn new(b: &mut Builder, name: &str, cin: usize, cout: usize) -> Result<Self> {
        let mut s = b.sub(name);
        let init = ConvInit::KaimingFanOut { per_group: false };
        Ok(SepConv {
            dw1: Conv2d::new(&mut s, "op.0", cin, cin, 3, Conv2dSpec::new(2, 1, cin), false, init)?,
            pw1: Conv2d::new(&mut s, "op.1", cin, cin, 1, Conv2dSpec::new(1, 0, 1), false, init)?,
            bn1: BatchNorm2d::new(&mut s, "op.2", cin)?,
            dw2: Conv2d::new(&mut s, "op.4", cin, cin, 3, Conv2dSpec::new(1, 1, cin), false, init)?,
            pw2: Conv2d::new(&mut s, "op.5", cin, cout, 1, Conv2dSpec::new(1, 0, 1), false, init)?,
            bn2: BatchNorm2d::new(&mut s, "op.6", cout)?,
        })
    }

    fn forward(&self, g: &mut Graph, x: Var, f: &Fwd) -> Result<Var> {
        let h = self.dw1.forward(g, x)?;
        let h = self.pw1.forward(g, h)?;
        let h = self.bn1.forward(g, h, f)?;
        let h = g.relu(h)?;
        let h = self.dw2.forward(g, h)?;
        let h = self.pw2.forward(g, h)?;
        let h = self.bn2.forward(g, h, f)?;
        g.relu(h)
    }
}

/// OFAKD's PatchMerging: 2x2 concat (Swin order) -> LayerNorm(4d) -> Linear(4d -> out, no
/// bias) -> optional GELU.
struct PatchMerge {
    norm: LayerNorm,
    reduction: Linear,
    gelu: bool,
}

impl PatchMerge {
    fn new(b: &mut Builder, name: &str, dim: usize, out: usize, gelu: bool) -> Result<Self> {
        let mut s = b.sub(name);
        Ok(PatchMerge {
            norm: LayerNorm::new(&mut s, "norm", 4 * dim, 1e-5)?,
            reduction: Linear::with_init(&mut s, "reduction", 4 * dim, out, false, Init::TruncNormal { std: 0.02 }, Init::Zeros)?,
            gelu,
        })
    }

    /// [B, prefix + R*R, C] (the first `prefix` tokens skipped) -> [B, (R/2)^2, out].
    fn forward(&self, g: &mut Graph, x: Var, res: usize, prefix: usize) -> Result<Var> {
        let s = g.shape(x).to_vec();
        let (b, c) = (s[0], s[2]);
        // Swin's 2x2 concat: merged token (i, j) holds the channel blocks x0..x3 = patches
        // (2i + dy, 2j + dx) for (dy, dx) = (0,0), (1,0), (0,1), (1,1) (dx slower than dy). A
        // reordering of whole token rows: one gather (which also skips the class tokens).
        let h = res / 2;
        let mut order = Vec::with_capacity(res * res);
        for i in 0..h {
            for j in 0..h {
                for dx in 0..2 {
                    for dy in 0..2 {
                        order.push(prefix + (2 * i + dy) * res + 2 * j + dx);
                    }
                }
            }
        }
        let x = g.gather_axis(x, 1, &order)?;
        let x = g.reshape(x, &[b, h * h, 4 * c])?;
        let x = self.norm.forward(g, x)?;
        let x = self.reduction.forward(g, x)?;
        if self.gelu { g.gelu(x) } else { Ok(x) }
    }
}

enum Branch {
    Cnn { seps: Vec<SepConv>, conv1x1: Option<Conv2d>, fc: Linear },
    Token { merges: Vec<PatchMerge>, proj: Option<Linear>, blocks: Vec<Block>, prefix: usize, grid: usize, fc: Linear },
}

/// One branch per tapped student stage.
pub struct OfaBranches {
    stages: Vec<usize>,
    branches: Vec<Branch>,
}

/// The token grid OFA's merges stop at (see the module docs).
pub fn final_grid(img_size: usize) -> usize {
    if img_size >= 112 { 7 } else { (img_size / 8).max(1) }
}

impl OfaBranches {
    /// `stages` are 1-based indices into the student's stage features.
    pub fn new(b: &mut Builder, student: &dyn Backbone, teacher: &dyn Backbone, stages: &[usize], classes: usize) -> Result<Self> {
        let shapes = student.feature_shapes();
        let n = shapes.len();
        let d = student.pooled_dim().max(teacher.pooled_dim());
        let ds = student.pooled_dim();
        let mut branches = Vec::new();
        for &s in stages {
            if s == 0 || s > n {
                return Err(Error::usage(format!("--ofa-stages: stage {s} is out of range; {} has stages 1..={n}", student.name())));
            }
            let mut bb = b.sub(&format!("branch{s}"));
            let br = match shapes[s - 1] {
                FeatureShape::Map { c, .. } => {
                    let mut seps = Vec::new();
                    let mut conv1x1 = None;
                    if s < n {
                        let k = n - s;
                        let mut cin = c;
                        for i in 0..k {
                            let cout = if i == k - 1 { d } else { cin * 2 };
                            seps.push(SepConv::new(&mut bb, &format!("sep.{i}"), cin, cout)?);
                            cin *= 2;
                        }
                    } else {
                        let init = ConvInit::KaimingFanOut { per_group: false };
                        conv1x1 = Some(Conv2d::new(&mut bb, "conv", c, d, 1, Conv2dSpec::new(1, 0, 1), true, init)?);
                    }
                    let fc = Linear::new_trunc(&mut bb, "fc", d, classes, true)?;
                    Branch::Cnn { seps, conv1x1, fc }
                }
                FeatureShape::Tokens { n: tokens, d: dim, prefix } => {
                    let patches = tokens - prefix;
                    let grid = (patches as f64).sqrt().round() as usize;
                    if grid * grid != patches {
                        return Err(Error::usage(format!(
                            "OFA branch: stage {s} of {} has {patches} patch tokens, not a square grid",
                            student.name()
                        )));
                    }
                    let fin = final_grid(student.config().img_size);
                    // OFAKD merges floor(log2(grid / final)) times; a merge halves an even grid,
                    // so an odd grid (7x7 patches of a 28-px image) stops merging there.
                    let mut merges_n = 0;
                    let mut gr = grid;
                    while gr % 2 == 0 && gr / 2 >= fin {
                        merges_n += 1;
                        gr /= 2;
                    }
                    let mut merges = Vec::new();
                    let mut width = dim;
                    for i in 0..merges_n {
                        let gelu = i == 0 || i != merges_n - 1;
                        merges.push(PatchMerge::new(&mut bb, &format!("merge.{i}"), width, ds, gelu)?);
                        width = ds;
                    }
                    if prefix > 0 && width != dim {
                        return Err(Error::usage(format!(
                            "OFA branch: {} has class tokens of width {dim} but merged features of width {width}",
                            student.name()
                        )));
                    }
                    let proj = if width != ds { Some(Linear::new_trunc(&mut bb, "proj", width, ds, true)?) } else { None };
                    let depth = n.saturating_sub(s).max(1);
                    let blocks = (0..depth)
                        .map(|i| Block::new(&mut bb, &format!("blocks.{i}"), ds, 4, 4.0, false, 1e-5, 0.0))
                        .collect::<Result<Vec<_>>>()?;
                    let fc = Linear::new_trunc(&mut bb, "fc", ds, classes, true)?;
                    Branch::Token { merges, proj, blocks, prefix, grid, fc }
                }
            };
            branches.push(br);
        }
        Ok(OfaBranches { stages: stages.to_vec(), branches })
    }

    pub fn stages(&self) -> &[usize] {
        &self.stages
    }

    /// Branch logits [B, classes] for each tapped stage, from the student's stage features.
    pub fn forward(&self, g: &mut Graph, features: &[Var], f: Fwd) -> Result<Vec<Var>> {
        let mut out = Vec::new();
        for (&s, br) in self.stages.iter().zip(&self.branches) {
            let x = *features.get(s - 1).ok_or_else(|| Error::usage(format!("the student returned no feature for stage {s}")))?;
            let z = match br {
                Branch::Cnn { seps, conv1x1, fc } => {
                    let mut h = x;
                    for sep in seps {
                        h = sep.forward(g, h, &f)?;
                    }
                    if let Some(c) = conv1x1 {
                        h = c.forward(g, h)?;
                    }
                    let p = g.global_avg_pool(h)?;
                    let bsz = g.shape(p)[0];
                    let p = g.reshape(p, &[bsz, g.numel(p) / bsz])?;
                    fc.forward(g, p)?
                }
                Branch::Token { merges, proj, blocks, prefix, grid, fc } => {
                    let sh = g.shape(x).to_vec();
                    let (bsz, tokens) = (sh[0], sh[1]);
                    // Merges act on the patch tokens only; class tokens pass through (OFAKD's
                    // TokenFnContext). Token selections are gathers: their gradient is one
                    // dispatch (a slice's is a fill and a scatter).
                    let first: Vec<usize> = (0..*prefix).collect();
                    let (mut feats, mut skip) = (x, *prefix);
                    if merges.is_empty() && *prefix > 0 {
                        feats = g.gather_axis(x, 1, &(*prefix..tokens).collect::<Vec<_>>())?;
                        skip = 0;
                    }
                    let mut res = *grid;
                    for m in merges {
                        feats = m.forward(g, feats, res, skip)?;
                        res /= 2;
                        skip = 0;
                    }
                    if let Some(p) = proj {
                        feats = p.forward(g, feats)?;
                    }
                    let mut h = if *prefix > 0 {
                        let cls = g.gather_axis(x, 1, &first)?;
                        g.concat(&[cls, feats], 1)?
                    } else {
                        feats
                    };
                    for blk in blocks {
                        h = blk.forward(g, h, &f)?;
                    }
                    let dim = g.shape(h)[2];
                    let read = if *prefix > 0 {
                        let c = g.gather_axis(h, 1, &[0])?;
                        g.reshape(c, &[bsz, dim])?
                    } else {
                        g.mean(h, &[1], false)?
                    };
                    fc.forward(g, read)?
                }
            };
            out.push(z);
        }
        Ok(out)
    }
}
