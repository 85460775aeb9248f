//! Optimizers, gradient clipping, learning-rate schedules and the EMA update, as plan ops on
//! the GPU. They work on whole store pages through chunk tables (one dispatch per page), and
//! read the learning rate from a scalar the schedule kernel computes at the current step, so
//! a replayed plan needs nothing from the host. Kernels in `shaders/optim.wgsl`.

use crate::error::{Error, Result};
use crate::graph::lower::grid;
use crate::graph::{Bind, DType, Graph, Lowering, NodeRef, Op, Params, Var};
use crate::store::{Init, Param, Pool, StateRef, Store};
use std::collections::BTreeMap;

/// Elements one workgroup of the optimizer kernels updates (matches CHUNK in the shader).
const CHUNK: usize = 1024;

/// Learning-rate schedule, evaluated per step (not per epoch), as timm with `t_in_epochs=False`.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Linear warm-up from `warmup_from` over `warmup` steps, then cosine to `min_lr` at `total`.
    Cosine {
        warmup: usize,
        total: usize,
        warmup_from: f32,
        min_lr: f32,
    },
    /// Linear warm-up, then times `gamma` every `period` steps.
    Step {
        warmup: usize,
        period: usize,
        gamma: f32,
        warmup_from: f32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// torch.optim.SGD (dampening 0).
    Sgd { momentum: f32, nesterov: bool },
    /// torch.optim.AdamW.
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

/// The EMA of some parameters into others: `dst = a * dst + (1 - a) * src`.
#[derive(Clone, Debug)]
pub struct Ema {
    pub pairs: Vec<(Param, Param)>,
    /// Alpha at step 0.
    pub base: f32,
    /// Some(n): alpha follows a cosine from `base` to 1 over n steps (OBoW); None: constant.
    pub cosine_steps: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Optimizer {
    pub method: Method,
    pub lr: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// Clip gradients to this global L2 norm.
    pub clip: Option<f32>,
    pub ema: Option<Ema>,
}

/// Step counter and per-step scalars of one optimizer, kept in the store (and checkpoints).
#[derive(Clone, Debug)]
pub struct OptimState {
    /// U32 [1]: steps taken.
    pub step: StateRef,
    /// F32 [4]: learning rate, gradient scale, gradient norm, EMA alpha (this step's values).
    pub scalars: StateRef,
}

impl OptimState {
    pub fn register(store: &mut Store, prefix: &str) -> Result<Self> {
        Ok(OptimState {
            step: store.state(&format!("{prefix}.step"), &[1], DType::U32, Init::Zeros)?,
            scalars: store.state(&format!("{prefix}.scalars"), &[4], DType::F32, Init::Values(vec![0.0, 1.0, 0.0, 0.0].into()))?,
        })
    }
}

impl Schedule {
    /// Reference value (used by tests and for display).
    pub fn lr_at(&self, base: f32, step: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine { warmup, warmup_from, .. } | Schedule::Step { warmup, warmup_from, .. } if step < warmup => {
                warmup_from + (base - warmup_from) * step as f32 / warmup as f32
            }
            Schedule::Cosine { warmup, total, min_lr, .. } => {
                let span = total.max(warmup + 1) - warmup;
                let p = ((step - warmup) as f32 / span as f32).min(1.0);
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f32::consts::PI * p).cos())
            }
            Schedule::Step { warmup, period, gamma, .. } => base * gamma.powi(((step - warmup) / period.max(1)) as i32),
        }
    }
}

impl Optimizer {
    pub fn sgd(lr: f32, momentum: f32, weight_decay: f32) -> Self {
        Optimizer {
            method: Method::Sgd { momentum, nesterov: false },
            lr,
            weight_decay,
            schedule: Schedule::Constant,
            clip: None,
            ema: None,
        }
    }
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        Optimizer {
            method: Method::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            lr,
            weight_decay,
            schedule: Schedule::Constant,
            clip: None,
            ema: None,
        }
    }
    pub fn with_schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }
    pub fn with_clip(mut self, max_norm: f32) -> Self {
        self.clip = Some(max_norm);
        self
    }

    /// Names of the optimizer-state pools this method needs.
    pub fn slots(&self) -> Vec<&'static str> {
        match self.method {
            Method::Sgd { momentum, .. } if momentum != 0.0 => vec!["sgd.momentum"],
            Method::Sgd { .. } => vec![],
            Method::AdamW { .. } => vec!["adamw.m", "adamw.v"],
        }
    }

    /// Append the update of `grads`' parameters (schedule, clipping, step, EMA, step counter)
    /// to `g`. The store must be on the GPU (its layout decides the chunk tables).
    pub fn apply(&self, g: &mut Graph, store: &mut Store, state: &OptimState, grads: &[(Param, Var)]) -> Result<()> {
        if !store.is_uploaded() {
            return Err(Error::usage("upload the store (Store::upload) before adding an optimizer: it needs the memory layout"));
        }
        for s in self.slots() {
            store.ensure_slot(s)?;
        }
        let scal = g.state(&state.scalars);
        let step = g.state(&state.step);
        g.push(ScheduleOp { sched: self.schedule.clone(), lr: self.lr, ema: self.ema.clone() }, &[scal, step], vec![1], DType::F32)?;

        // Chunk tables per page: (start, len, decay, 0) in elements.
        let mut pages: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for (p, _) in grads {
            let loc = store.param_loc(p)?;
            let decay = (p.decay() && self.weight_decay != 0.0) as u32;
            let start = (loc.offset / 4) as usize;
            let t = pages.entry(loc.page).or_default();
            for c in (0..p.numel()).step_by(CHUNK) {
                t.extend([(start + c) as u32, (CHUNK.min(p.numel() - c)) as u32, decay, 0]);
            }
        }
        let page_sizes = store.pages(crate::store::Which::Value)?;
        let mut tables = Vec::new();
        for (&page, t) in &pages {
            let tab = g.constant_u32(&[t.len()], t)?;
            let elems = (page_sizes[page].1 / 4) as usize;
            tables.push((page, tab, t.len() / 4, elems));
        }
        if let Some(max_norm) = self.clip {
            let mut inputs = vec![scal, step];
            let mut chunks = Vec::new();
            for &(page, tab, n, elems) in &tables {
                inputs.push(tab);
                inputs.push(g.pool_page(Pool::Grads, page, elems));
                chunks.push(n);
            }
            g.push(ClipOp { max_norm, chunks }, &inputs, vec![1], DType::F32)?;
        }
        let slots = self.slots();
        for &(page, tab, chunks, elems) in &tables {
            let pv = g.pool_page(Pool::Params, page, elems);
            let gv = g.pool_page(Pool::Grads, page, elems);
            let s1 = slots.first().map(|s| g.pool_page(Pool::Slot(s.to_string()), page, elems)).unwrap_or(gv);
            let s2 = slots.get(1).map(|s| g.pool_page(Pool::Slot(s.to_string()), page, elems)).unwrap_or(s1);
            g.push(
                StepOp { method: self.method.clone(), wd: self.weight_decay, chunks },
                &[tab, scal, step, pv, gv, s1, s2],
                vec![1],
                DType::F32,
            )?;
        }
        if let Some(ema) = &self.ema {
            ema_ops(g, store, scal, step, ema)?;
        }
        g.tick(step)?;
        Ok(())
    }

    /// The EMA update alone, at this point of the graph, with this step's alpha (a schedule
    /// dispatch computes it from the step counter first). OBoW updates its teacher at the start
    /// of a step, before the teacher makes the step's targets (papers-digest B1); such a run
    /// passes the optimizer without `ema` to [`Self::apply`] afterwards, which then leaves
    /// alpha in the scalars as computed here.
    pub fn apply_ema(&self, g: &mut Graph, store: &mut Store, state: &OptimState) -> Result<()> {
        let Some(ema) = &self.ema else { return Err(Error::usage("apply_ema: this optimizer has no EMA")) };
        if !store.is_uploaded() {
            return Err(Error::usage("upload the store (Store::upload) before adding an EMA update: it needs the memory layout"));
        }
        let scal = g.state(&state.scalars);
        let step = g.state(&state.step);
        g.push(ScheduleOp { sched: self.schedule.clone(), lr: self.lr, ema: self.ema.clone() }, &[scal, step], vec![1], DType::F32)?;
        ema_ops(g, store, scal, step, ema)
    }
}

/// EMA update nodes, one per (source page, destination page).
fn ema_ops(g: &mut Graph, store: &Store, scal: Var, step: Var, ema: &Ema) -> Result<()> {
    let mut groups: BTreeMap<(usize, usize), Vec<u32>> = BTreeMap::new();
    for (src, dst) in &ema.pairs {
        if src.shape() != dst.shape() {
            return Err(Error::shape("ema", format!("'{}' {:?} and '{}' {:?} differ", src.name(), src.shape(), dst.name(), dst.shape())));
        }
        let (ls, ld) = (store.param_loc(src)?, store.param_loc(dst)?);
        let t = groups.entry((ls.page, ld.page)).or_default();
        for c in (0..src.numel()).step_by(CHUNK) {
            t.extend([(ls.offset / 4) as u32 + c as u32, CHUNK.min(src.numel() - c) as u32, 0, (ld.offset / 4) as u32 + c as u32]);
        }
    }
    let sizes = store.pages(crate::store::Which::Value)?;
    for ((sp, dp), t) in groups {
        let tab = g.constant_u32(&[t.len()], &t)?;
        let src = g.pool_page(Pool::Params, sp, (sizes[sp].1 / 4) as usize);
        let dst = g.pool_page(Pool::Params, dp, (sizes[dp].1 / 4) as usize);
        g.push(EmaOp { chunks: t.len() / 4, same_page: sp == dp }, &[tab, scal, step, src, dst], vec![1], DType::F32)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn opt_params(momentum: f32, wd: f32, b1: f32, b2: f32, eps: f32, nesterov: bool, chunks: usize, part_base: usize) -> Params {
    Params::new().f(momentum).f(wd).f(b1).f(b2).f(eps).u(nesterov as usize).u(chunks).u(part_base)
}

#[derive(Debug)]
struct ScheduleOp {
    sched: Schedule,
    lr: f32,
    ema: Option<Ema>,
}

impl Op for ScheduleOp {
    fn name(&self) -> &'static str {
        "schedule"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let (kind, warmup, total, period, min_lr, from, gamma) = match self.sched {
            Schedule::Constant => (0, 0, 0, 0, 0.0, 0.0, 1.0),
            Schedule::Cosine { warmup, total, warmup_from, min_lr } => (1, warmup, total, 0, min_lr, warmup_from, 1.0),
            Schedule::Step { warmup, period, gamma, warmup_from } => (2, warmup, 0, period, 0.0, warmup_from, gamma),
        };
        let (ema_kind, ema_total, ema_base) = match &self.ema {
            Some(Ema { cosine_steps: Some(t), base, .. }) => (1, *t, *base),
            Some(Ema { base, .. }) => (0, 0, *base),
            // No EMA here: leave alpha as an earlier schedule dispatch of the step set it.
            None => (2, 0, 0.0),
        };
        let p = Params::new()
            .u(kind)
            .u(warmup)
            .u(total)
            .u(period)
            .f(self.lr)
            .f(min_lr)
            .f(from)
            .f(gamma)
            .u(ema_kind)
            .u(ema_total)
            .f(ema_base)
            .f(0.0);
        l.dispatch("optim", "schedule", p, &[Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var)], [1, 1, 1]);
        Ok(())
    }
}

/// Global-norm clipping: partial sums of squares per chunk, then one finalize.
#[derive(Debug)]
struct ClipOp {
    max_norm: f32,
    chunks: Vec<usize>,
}

impl Op for ClipOp {
    fn name(&self) -> &'static str {
        "clip_grad_norm"
    }
    fn writes(&self) -> &[usize] {
        &[0]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let total: usize = self.chunks.iter().sum();
        let parts = l.scratch(total, "grad norm partials");
        let (scal, step) = (Bind::T(n.inputs[0].var), Bind::T(n.inputs[1].var));
        let mut base = 0;
        for (i, &c) in self.chunks.iter().enumerate() {
            let (tab, grad) = (Bind::T(n.inputs[2 + 2 * i].var), Bind::T(n.inputs[3 + 2 * i].var));
            let p = opt_params(0.0, 0.0, 0.0, 0.0, 0.0, false, c, base);
            let unused = l.unused();
            l.dispatch("optim", "sumsq", p, &[tab, scal, step, unused, grad, parts], grid(c));
            base += c;
        }
        let tab = Bind::T(n.inputs[2].var);
        let grad = Bind::T(n.inputs[3].var);
        let p = opt_params(0.0, 0.0, 0.0, 0.0, self.max_norm, false, total, 0);
        let unused = l.unused();
        l.dispatch("optim", "clip_finalize", p, &[tab, scal, step, unused, grad, parts], [1, 1, 1]);
        Ok(())
    }
}

/// One optimizer update of one page. Inputs: table, scalars, step, params, grads, slot 1, slot 2.
#[derive(Debug)]
struct StepOp {
    method: Method,
    wd: f32,
    chunks: usize,
}

impl Op for StepOp {
    fn name(&self) -> &'static str {
        "optimizer_step"
    }
    fn writes(&self) -> &[usize] {
        &[3, 5, 6]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        // Slots a method lacks arrive as repeats of the gradient page (SGD without momentum)
        // or of slot 1 (SGD with momentum); the kernel ignores them, so bind placeholders.
        let mut binds: Vec<Bind> = Vec::with_capacity(n.inputs.len());
        for (i, t) in n.inputs.iter().enumerate() {
            let repeat = n.inputs[..i].iter().any(|u| u.var == t.var);
            binds.push(if repeat { l.unused() } else { Bind::T(t.var) });
        }
        let (entry, p) = match self.method {
            Method::Sgd { momentum, nesterov } => ("sgd", opt_params(momentum, self.wd, 0.0, 0.0, 0.0, nesterov, self.chunks, 0)),
            Method::AdamW { beta1, beta2, eps } => ("adamw", opt_params(0.0, self.wd, beta1, beta2, eps, false, self.chunks, 0)),
        };
        l.dispatch("optim", entry, p, &binds, grid(self.chunks));
        Ok(())
    }
}

/// Inputs: table, scalars, step, source page, destination page.
#[derive(Debug)]
struct EmaOp {
    chunks: usize,
    /// Source and destination are in the same page: one binding serves both (`ema_same`).
    same_page: bool,
}

impl Op for EmaOp {
    fn name(&self) -> &'static str {
        "ema"
    }
    fn writes(&self) -> &[usize] {
        &[4]
    }
    fn lower(&self, n: &NodeRef, l: &mut Lowering) -> Result<()> {
        let mut binds: Vec<Bind> = n.inputs.iter().map(|t| Bind::T(t.var)).collect();
        let p = opt_params(0.0, 0.0, 0.0, 0.0, 0.0, false, self.chunks, 0);
        if self.same_page {
            binds[3] = l.unused();
            l.dispatch("optim", "ema_same", p, &binds, grid(self.chunks));
        } else {
            l.dispatch("optim", "ema", p, &binds, grid(self.chunks));
        }
        Ok(())
    }
}
