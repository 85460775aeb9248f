// The OBoW tab: self-supervised pre-training of a backbone (the `obow` session) on the bundled
// data without its labels; at the end (or on Stop) a linear probe against random init and a
// grid of the test-image patches behind some visual words.

import { Chart, line, stepChart } from './charts.js';
import { $, dash, elements, floatValue, fmt, intValue, percent } from './dom.js';
import { chunkParam, intParam } from './params.js';
import { Chunk, Speed, epochsFor, prefixedIds, runControls } from './runner.js';
import { loadAssets, wd } from './wasm.js';

const CHUNK = { fast: 0.1, slow: 0.3, max: 200 };
const PLOT = stepChart('BoW loss', [line('BoW loss', '#7c3aed')]);

class ObowTab {
  hook = '__obow';
  labels = { stopped: 'OBoW stopped', build: 'Could not build the OBoW session', buildFailed: 'Could not build the session.' };

  constructor(panel, app) {
    this.app = app;
    this.panel = panel;
    this.form = $('#obow-settings', panel);
    this.fixedChunk = chunkParam('ochunk');
    // The linear probe's budget (features of this many images, epochs of SGD) and the word grid.
    this.probeArgs = { train_images: intParam('probe_train', 1000), test_images: intParam('probe_test', 500), epochs: intParam('probe_epochs', 10) };
    this.wordArgs = { words: intParam('words_shown', 8), per_word: 6, test_images: intParam('word_images', 300) };
    this.out = elements(panel, {
      step: '#o-step', loss: '#o-loss', ips: '#o-ips',
      probe: '#o-probe', probeRandom: '#o-probe-random', probeInfo: '#obow-probe-info',
      state: '#obow-state', info: '#obow-info', words: '#obow-words',
    });
    this.chart = new Chart($('#obow-loss-chart', panel));
    this.charts = [this.chart];
    this.session = null;
    this.step = 0;
    runControls(panel, prefixedIds('obow'), this).readyWhen(loadAssets(app), 'OBoW', 'The data could not be loaded.');
  }

  clear() {
    this.lossData = [[], []]; // step, BoW loss
    this.speed = new Speed();
    this.first = undefined;
    this.last = undefined;
    dash(this.out, ['step', 'loss', 'ips', 'probe', 'probeRandom']);
    this.out.probeInfo.textContent = '';
    this.out.words.hidden = true;
  }

  settings() {
    const f = this.form.elements;
    const s = {
      model: f.model.value, batch: intValue(f.batch), lr: floatValue(f.lr), words: intValue(f.words),
      train_limit: intValue(f.trainLimit), test_limit: intValue(f.testLimit),
    };
    // The learning-rate and teacher-momentum schedules span the steps asked for.
    s.epochs = epochsFor(intValue(f.steps), s.batch, s.train_limit);
    return s;
  }

  maxSteps() {
    return intValue(this.form.elements.steps) || 0;
  }

  async probe() {
    const { out } = this;
    out.state.textContent = 'Linear probes: OBoW features vs random init…';
    const p = await this.app.gpu(() => this.session.query('probe', this.probeArgs));
    out.probe.textContent = percent(p.obow);
    out.probeRandom.textContent = percent(p.random);
    out.probeInfo.textContent = `Linear probe at step ${p.step}: a linear classifier trained for ${p.epochs} epoch${p.epochs === 1 ? '' : 's'} on the frozen features ` +
      `of ${p.train_images} training images, top-1 on ${p.test_images} test images (${p.seconds.toFixed(1)} s).`;
    return p;
  }

  async drawWords() {
    this.out.state.textContent = 'Drawing the visual words…';
    const w = await this.app.gpu(() => this.session.query('words', this.wordArgs));
    const canvas = $('#obow-words-canvas', this.panel);
    canvas.width = w.width;
    canvas.height = w.height;
    canvas.style.width = `${Math.min(440, w.width * 2)}px`;
    canvas.getContext('2d').putImageData(new ImageData(Uint8ClampedArray.from(w.pixels), w.width, w.height), 0, 0);
    $('#obow-words-caption', this.panel).textContent = `Each row: ${w.patch}x${w.patch}-pixel test-image patches (what a stage-${w.stage} ` +
      `feature-map cell sees) whose features fall on one visual word of vocabulary ${w.level}.`;
    this.out.words.hidden = false;
    return { width: w.width, height: w.height, level: w.level, stage: w.stage, patch: w.patch };
  }

  async build() {
    const { app, out } = this;
    this.step = 0;
    const cfg = this.settings();
    out.state.textContent = 'Loading the data…';
    const assets = await loadAssets(app);
    out.state.textContent = 'Building the session (compiling the plans)…';
    await this.free();
    this.session = await app.gpu(() => wd.Session.create('obow', cfg, assets));
    const info = this.session.describe();
    out.info.textContent = `${info.model} (${info.params.toLocaleString('en-US')} parameters), vocabularies on stages ` +
      `${info.levels.join(', ')} of ${cfg.words} words each; ${info.dispatches_per_step} GPU dispatches per step; ` +
      `${info.train_images} training images (labels unused); ${$('#adapter').textContent}.`;
    this.chart.create(PLOT, this.lossData);
  }

  /** Shows the answer m of a step(n) call. */
  record(n, m) {
    this.step = m.step;
    if (this.first === undefined) this.first = m.loss; // the first call also compiles the kernels: not timed
    else this.speed.add(n, m);
    this.last = m.loss;
    this.lossData[0].push(this.step);
    this.lossData[1].push(m.loss);
    this.out.step.textContent = String(this.step);
    this.out.loss.textContent = fmt(m.loss);
    if (this.speed.seconds > 0) this.out.ips.textContent = fmt(this.speed.imagesPerSec, 3);
  }

  run() {
    const chunk = new Chunk(this.fixedChunk, CHUNK);
    let probe;
    let words;
    const step = async () => {
      const n = Math.min(chunk.n, Math.max(0, this.maxSteps() - this.step));
      if (n <= 0) return false;
      const m = await this.app.gpu(() => this.session.step(n));
      this.record(n, m);
      chunk.adapt(n, m.seconds);
      this.chart.setData(this.lossData);
      return true;
    };
    const finish = async () => {
      const finished = this.step >= this.maxSteps();
      probe = await this.probe();
      words = await this.drawWords();
      return { step: this.step, finished };
    };
    const result = () => ({
      ok: true, settings: this.settings(), steps: this.step, first_loss: this.first, last_loss: this.last,
      losses: this.lossData[1].slice(), steps_per_sec: this.speed.stepsPerSec, images_per_sec: this.speed.imagesPerSec,
      probe, words,
    });
    return { step, finish, result };
  }

  async free() {
    await this.app.gpu(() => {
      if (this.session) this.session.free();
    });
    this.session = null;
  }

  hasSession() {
    return this.session !== null;
  }
}

export function mountObow(panel, app) {
  new ObowTab(panel, app);
}
