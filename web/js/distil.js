// The Distil tab: two `distill` sessions with the same student, data and batch order, one
// learning from the shipped teacher (the method picked) and one from the labels alone,
// stepped alternately; held-out accuracy now and then, CKA heatmaps at the end. The sessions
// live in app.distil, where the "Try it" tab finds the distilled student.

import { Chart, drawHeatmap, line, stepChart } from './charts.js';
import { $, dash, el, elements, floatValue, fmt, intValue, percent } from './dom.js';
import { chunkParam, numParam } from './params.js';
import { Chunk, Speed, epochsFor, prefixedIds, runControls } from './runner.js';
import { loadAssets, wd } from './wasm.js';

const RUNS = [
  { key: 'distilled', label: 'distilled', color: '#2563eb' },
  { key: 'baseline', label: 'labels only', color: '#dc2626' },
];

// Seconds per pair of step() calls (the distilled and the labels-only session's).
const CHUNK = { fast: 0.15, slow: 0.5, max: 200 };

const curve = (label, color, extra = {}) => line(label, color, { spanGaps: true, ...extra });
const dots = { points: { show: true, size: 5 } };
const accRange = (u, lo, hi) => [Math.max(0, Math.floor(lo / 10) * 10), Math.min(100, Math.ceil(hi / 10) * 10)];

/** The Distil tab; the "Your data" tab (yours.js) is one too, with its own element ids (prefix
 * and short: 'yours' and 'y' for #yours-start, #y-step, ...), hook, data and teacher. */
export class DistilTab {
  labels = { stopped: 'Distillation stopped', build: 'Could not build the distillation', buildFailed: 'Could not build the sessions.' };

  constructor(panel, app, { prefix = 'distil', short = 'd', hook = '__distil' } = {}) {
    this.app = app;
    this.hook = hook;
    this.form = $(`#${prefix}-settings`, panel);
    this.fixedChunk = chunkParam('dchunk');
    // Held-out evaluation every this many ms of training (and at the start and the end).
    this.evalEvery = numParam('eval_ms', 4000, parseFloat);
    this.ckaImages = numParam('cka_images', 128, (s) => parseInt(s, 10));
    this.out = elements(panel, {
      step: `#${short}-step`, loss: `#${short}-loss`, lossBase: `#${short}-loss-base`, acc: `#${short}-acc`,
      accBase: `#${short}-acc-base`, ips: `#${short}-ips`, state: `#${prefix}-state`, info: `#${prefix}-info`, cka: `#${prefix}-cka`,
    });
    this.d = { sessions: {}, student: null };
    this.lossChart = new Chart($(`#${prefix}-loss-chart`, panel));
    this.accChart = new Chart($(`#${prefix}-acc-chart`, panel));
    this.charts = [this.lossChart, this.accChart];
    this.step = 0;
    this.controls = runControls(panel, prefixedIds(prefix), this);
  }

  /** Builds the session of one arm ('distilled' with the method picked, 'baseline' with none). */
  async createSession(cfg, method) {
    const assets = await loadAssets(this.app);
    return this.app.gpu(() => wd.Session.create('distill', { ...cfg, method }, assets));
  }

  /** Called once the sessions exist, before the untrained students are evaluated. */
  async afterBuild() {}

  /** Called when a run stops (finished: it reached its step count). */
  async afterFinish(finished) {} // eslint-disable-line no-unused-vars

  clear() {
    this.lossData = [[], [], [], []]; // step, distilled total loss, distilled cross-entropy term, labels-only loss
    this.accData = [[], [], []]; // step, distilled accuracy, labels-only accuracy
    this.speed = new Speed();
    this.first = {};
    this.last = {};
    this.evals = {};
    dash(this.out, ['step', 'loss', 'lossBase', 'acc', 'accBase', 'ips']);
    this.out.cka.hidden = true;
    $('.cka-maps', this.out.cka).textContent = '';
  }

  settings() {
    const f = this.form.elements;
    const s = {
      student: f.student.value, method: f.method.value, eps: floatValue(f.eps),
      batch: intValue(f.batch), lr: floatValue(f.lr),
      train_limit: intValue(f.trainLimit), test_limit: intValue(f.testLimit),
    };
    // The learning-rate schedule (warm-up, cosine decay) spans the steps asked for.
    s.epochs = epochsFor(intValue(f.steps), s.batch, s.train_limit);
    return s;
  }

  maxSteps() {
    return intValue(this.form.elements.steps) || 0;
  }

  makeCharts(withBase) {
    this.lossChart.create(stepChart('loss', [
      curve('distilled: total', RUNS[0].color),
      curve('distilled: cross-entropy', RUNS[0].color, { dash: [4, 4] }),
      curve('labels only', RUNS[1].color, { show: withBase }),
    ]), this.lossData);
    this.accChart.create(stepChart('accuracy (%)', [
      curve('distilled', RUNS[0].color, dots),
      curve('labels only', RUNS[1].color, { show: withBase, ...dots }),
    ], { range: accRange }), this.accData);
  }

  active() {
    return RUNS.filter((r) => this.d.sessions[r.key]);
  }

  async evaluate() {
    const row = [this.step, null, null];
    for (const [i, r] of RUNS.entries()) {
      const s = this.d.sessions[r.key];
      if (!s) continue;
      const e = await this.app.gpu(() => s.evaluate());
      this.evals[r.key] = e;
      row[i + 1] = e.accuracy * 100;
    }
    const at = this.accData[0].length - 1;
    if (at >= 0 && this.accData[0][at] === this.step) this.accData.forEach((col, i) => { col[at] = row[i]; });
    else this.accData.forEach((col, i) => col.push(row[i]));
    this.out.acc.textContent = this.evals.distilled ? percent(this.evals.distilled.accuracy) : '–';
    this.out.accBase.textContent = this.evals.baseline ? percent(this.evals.baseline.accuracy) : '–';
    this.accChart.setData(this.accData);
  }

  async drawCka() {
    const maps = $('.cka-maps', this.out.cka);
    maps.textContent = '';
    const result = {};
    for (const r of this.active()) {
      const c = await this.app.gpu(() => this.d.sessions[r.key].query('cka', { images: this.ckaImages }));
      result[r.key] = c;
      const canvas = el('canvas', { class: 'cka-canvas', 'data-run': r.key });
      drawHeatmap(canvas, c);
      maps.append(el('figure', {}, canvas, el('figcaption', {}, `${this.d.student}, ${r.label} (${c.images} test images)`)));
    }
    this.out.cka.hidden = false;
    return result;
  }

  async build() {
    const { app, d, out } = this;
    this.step = 0;
    const cfg = this.settings();
    out.state.textContent = 'Loading the teacher and the data…';
    await this.free();
    if (app.releaseTry) await app.releaseTry();
    out.state.textContent = 'Building the sessions (compiling the plans)…';
    d.sessions.distilled = await this.createSession(cfg, cfg.method);
    // The labels-only companion: the same student, data and order, without the teacher.
    if (cfg.method !== 'none') d.sessions.baseline = await this.createSession(cfg, 'none');
    d.student = cfg.student;
    await this.afterBuild();
    const info = d.sessions.distilled.describe();
    out.info.textContent = `${info.student} (${info.params.toLocaleString('en-US')} parameters) learns from ${info.teacher} with ` +
      `'${cfg.method}' (loss terms: ${info.terms.join(', ')}); ${info.dispatches_per_step} GPU dispatches per step; ` +
      `${info.train_images} training and ${info.test_images} test images; ${$('#adapter').textContent}.`;
    this.makeCharts(!!d.sessions.baseline);
    out.state.textContent = 'Evaluating the untrained students…';
    await this.evaluate(); // accuracy before training: the curves' first points
  }

  /** Shows the answers ms ({ distilled, baseline? }) of a pair of step(n) calls. */
  record(n, ms) {
    const m = ms.distilled;
    const b = ms.baseline;
    this.step = m.step;
    // The first call compiles the kernels (slow on some browsers): leave it out of the speed.
    if (this.first.distilled === undefined) this.first = { distilled: m.loss, baseline: b && b.loss, call: n };
    else this.speed.add(n, m);
    this.last = { distilled: m.loss, baseline: b && b.loss };
    this.lossData[0].push(this.step);
    this.lossData[1].push(m.loss);
    this.lossData[2].push(m.terms && m.terms.gt !== undefined ? m.terms.gt : null);
    this.lossData[3].push(b ? b.loss : null);
    this.out.step.textContent = String(this.step);
    this.out.loss.textContent = fmt(m.loss);
    this.out.lossBase.textContent = b ? fmt(b.loss) : '–';
    if (this.speed.seconds > 0) this.out.ips.textContent = fmt(this.speed.imagesPerSec, 3);
  }

  run() {
    const chunk = new Chunk(this.fixedChunk, CHUNK);
    let lastEvalAt = performance.now();
    const runs = this.active();
    let cka = null;
    const step = async () => {
      const limit = this.maxSteps();
      const n = Math.min(chunk.n, Math.max(0, limit - this.step));
      if (n <= 0) return false;
      const ms = {};
      for (const r of runs) ms[r.key] = await this.app.gpu(() => this.d.sessions[r.key].step(n));
      this.record(n, ms);
      chunk.adapt(n, runs.reduce((a, r) => a + ms[r.key].seconds, 0));
      this.lossChart.setData(this.lossData);
      if (performance.now() - lastEvalAt > this.evalEvery && this.step < limit) {
        await this.evaluate();
        lastEvalAt = performance.now();
      }
      return true;
    };
    const finish = async () => {
      const finished = this.step >= this.maxSteps();
      this.out.state.textContent = 'Evaluating…';
      await this.evaluate();
      if (finished) {
        this.out.state.textContent = 'Measuring CKA…';
        cka = await this.drawCka();
      }
      await this.afterFinish(finished);
      return { step: this.step, finished };
    };
    return { step, finish, result: () => this.result(cka) };
  }

  result(cka) {
    const { evals, first, last, speed } = this;
    return {
      ok: true,
      adapter: $('#adapter').textContent,
      settings: this.settings(),
      steps: this.step,
      first_loss: first.distilled,
      last_loss: last.distilled,
      first_loss_baseline: first.baseline,
      last_loss_baseline: last.baseline,
      accuracy: evals.distilled.accuracy,
      accuracy_baseline: evals.baseline ? evals.baseline.accuracy : null,
      steps_per_sec: speed.stepsPerSec,
      images_per_sec: speed.imagesPerSec,
      timed_steps: speed.steps,
      chunk: this.fixedChunk || 'adaptive',
      cka,
    };
  }

  async free() {
    await this.app.gpu(() => {
      for (const r of RUNS) {
        if (this.d.sessions[r.key]) this.d.sessions[r.key].free();
      }
    });
    this.d.sessions = {};
    this.d.student = null;
  }

  hasSession() {
    return !!this.d.sessions.distilled;
  }
}

export function mountDistil(panel, app) {
  const tab = new DistilTab(panel, app);
  app.distil = tab.d; // the "Try it" tab uses the distilled student
  tab.controls.readyWhen(loadAssets(app), 'Distil', 'The teacher or the data could not be loaded.');
}
