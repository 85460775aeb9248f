// The "Train an MLP" tab: an MLP on spirals (the `mlp` session), with a warm-up step, the
// loop's time breakdown (window.__loop) and window.__result for the browser tests.

import { Chart } from './charts.js';
import { $, dash, elements, floatValue, fmt, intValue, percent, yieldToBrowser } from './dom.js';
import { chunkParam, query } from './params.js';
import { Chunk, Speed, runControls } from './runner.js';
import { wd } from './wasm.js';

const IDS = {
  settings: 'train-settings', start: 'btn-start', stop: 'btn-stop', resume: 'btn-resume', reset: 'btn-reset',
  state: 'train-state', info: 'session-info',
};

// Aim for 0.1-0.3 s per call: a few chart updates a second, and enough steps per awaited
// readback (a readback costs ~70 ms in Firefox whatever the work: shrinking the chunk to fit a
// shorter target there would only slow training down).
const CHUNK = { fast: 0.1, slow: 0.3, max: 1000 };

const PLOT = {
  scales: {
    x: { time: false },
    // uPlot's own log range (whole decades): a custom non-decade range on a log scale
    // made single redraws take a minute in Firefox.
    y: { distr: 3 },
  },
  axes: [{ label: 'step', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] },
    { label: 'loss (log scale)' }],
  series: [
    { label: 'step' },
    { label: 'training loss', stroke: '#2563eb', width: 1.5, points: { show: false } },
    { label: 'held-out loss', stroke: '#dc2626', width: 2, spanGaps: true, points: { show: true, size: 5 } },
  ],
};

class TrainTab {
  hook = '__result';
  labels = { stopped: 'Training stopped', build: 'Could not build the session', buildFailed: 'Could not build the session.' };

  constructor(panel) {
    this.form = $(`#${IDS.settings}`, panel);
    if (query.has('steps')) this.form.elements.maxSteps.value = query.get('steps');
    this.fixedChunk = chunkParam('chunk');
    this.out = elements(panel, {
      step: '#m-step', loss: '#m-loss', evalLoss: '#m-eval-loss', acc: '#m-acc', ips: '#m-ips', sps: '#m-sps',
      state: '#train-state', info: '#session-info',
    });
    this.chart = new Chart($('#chart', panel), { height: 300, minWidth: 320, width: 720 });
    this.charts = [this.chart];
    this.session = null;
    this.step = 0;
    runControls(panel, IDS, this).ready();
  }

  clear() {
    this.data = [[], [], []]; // uPlot columns: step, training loss, held-out loss
    this.speed = new Speed(); // over step() calls after the first (warm-up) call
    this.wall = { start: 0, steps: 0 }; // wall-clock time and step at the end of the warm-up call
    this.firstLoss = null;
    this.lastEval = null;
    dash(this.out, ['step', 'loss', 'evalLoss', 'acc', 'ips', 'sps']);
  }

  settings() {
    const f = this.form.elements;
    return { hidden: intValue(f.hidden), layers: intValue(f.layers), batch: intValue(f.batch), lr: floatValue(f.lr) };
  }

  maxSteps() {
    return intValue(this.form.elements.maxSteps) || 0;
  }

  push(step, trainLoss, evalLoss) {
    this.data[0].push(step);
    this.data[1].push(trainLoss);
    this.data[2].push(evalLoss);
    if (this.data[0].length > 4000) this.data = this.data.map((col) => col.filter((_, i) => i % 2 === 0 || i === col.length - 1));
  }

  async evaluate() {
    const e = await this.session.evaluate();
    this.lastEval = e;
    this.out.evalLoss.textContent = fmt(e.loss);
    this.out.acc.textContent = percent(e.accuracy);
    const last = this.data[0].length - 1;
    if (last >= 0 && this.data[0][last] === e.step) this.data[2][last] = e.loss;
    else this.push(e.step, null, e.loss);
    return e;
  }

  async build() {
    this.out.state.textContent = 'Building the session (compiling the plans)…';
    this.step = 0;
    this.session = await wd.Session.create('mlp', this.settings());
    const d = this.session.describe();
    this.out.info.textContent = `${d.task}: ${d.train_examples} training and ${d.test_examples} held-out points; ` +
      `${d.parameters.toLocaleString('en-US')} parameters; ${d.dispatches_per_step} GPU dispatches per step ` +
      `(${d.train_plan}).`;
    this.chart.create(PLOT, this.data);
    await this.evaluate(); // the held-out loss before any training: the curve's first point
    this.chart.setData(this.data);
  }

  /** Shows the answer m of a step(n) call; the warm-up call starts the wall clock instead of
   * counting towards the speed. */
  record(n, m, warmup) {
    this.step = m.step;
    if (this.firstLoss === null) this.firstLoss = m.loss;
    if (warmup) this.wall = { start: performance.now(), steps: m.step };
    else this.speed.add(n, m);
    this.push(m.step, m.loss, null);
    this.out.step.textContent = String(m.step);
    this.out.loss.textContent = fmt(m.loss);
    if (this.speed.seconds > 0) {
      this.out.sps.textContent = fmt(this.speed.stepsPerSec, 3);
      this.out.ips.textContent = fmt(this.speed.imagesPerSec, 3);
    }
  }

  run() {
    const chunk = new Chunk(this.fixedChunk, CHUNK);
    let lastEvalAt = performance.now();
    // Where the loop's time goes (ms), for the tests and for curious users.
    const loop = window.__loop = { calls: 0, chunk: chunk.n, step: 0, evaluate: 0, draw: 0, yield: 0 };
    const timed = async (what, f) => {
      const t = performance.now();
      const v = await f();
      loop[what] += performance.now() - t;
      return v;
    };
    const step = async () => {
      const limit = this.maxSteps();
      const warmup = this.wall.start === 0 && this.firstLoss === null;
      let n = warmup ? 1 : chunk.n;
      if (limit > 0) n = Math.min(n, Math.max(0, limit - this.step));
      if (n <= 0) return false;
      const m = await timed('step', () => this.session.step(n));
      loop.calls += 1;
      this.record(n, m, warmup);
      if (!warmup) chunk.adapt(n, m.seconds);
      loop.chunk = chunk.n;
      if (performance.now() - lastEvalAt > 1000) {
        await timed('evaluate', () => this.evaluate());
        lastEvalAt = performance.now();
      }
      await timed('draw', () => this.chart.setData(this.data));
      return true;
    };
    const finish = async () => {
      const limit = this.maxSteps();
      const finished = limit > 0 && this.step >= limit;
      await this.evaluate();
      this.chart.setData(this.data);
      return { step: this.step, finished };
    };
    return { step, finish, pause: () => timed('yield', yieldToBrowser), result: () => this.result() };
  }

  result() {
    const wall = (performance.now() - this.wall.start) / 1000;
    return {
      ok: true,
      adapter: $('#adapter').textContent,
      steps: this.step,
      first_loss: this.firstLoss,
      last_loss: this.data[1].filter((v) => v !== null).at(-1),
      eval_loss: this.lastEval.loss,
      accuracy: this.lastEval.accuracy,
      steps_per_sec: this.speed.stepsPerSec,
      images_per_sec: this.speed.imagesPerSec,
      wall_steps_per_sec: (this.step - this.wall.steps) / wall,
      timed_steps: this.speed.steps,
      chunk: this.fixedChunk || 'adaptive',
    };
  }

  async free() {
    if (this.session) this.session.free();
    this.session = null;
  }

  hasSession() {
    return this.session !== null;
  }
}

export function mountTrain(panel) {
  new TrainTab(panel);
}
