// What the training tabs (Train an MLP, Distil, OBoW) share: the Start / Stop / Resume /
// Reset buttons, the loop that awaits one step() call after another and hands control back
// to the browser in between, the adaptive number of steps per call, and the speed meter.

import { $, yieldToBrowser } from './dom.js';
import { describeError, showError } from './errors.js';

/** The ids of a tab's controls named PREFIX-start, PREFIX-state, PREFIX-settings, ... */
export const prefixedIds = (prefix) => Object.fromEntries(
  ['start', 'stop', 'resume', 'reset', 'state', 'info', 'settings'].map((k) => [k, `${prefix}-${k}`]));

/**
 * Wires a training tab's buttons to its session(s). ids: the element ids of start, stop,
 * resume, reset (buttons), state (the status line), info (the session's description),
 * settings (the form, locked while a session exists). tab says what is particular to it:
 *   hook: the window.__* the browser tests wait on (set to run.result() when a run reaches
 *     its step limit, to { ok: false, error } on an error, cleared by Reset);
 *   labels: { stopped, build, buildFailed }: the error prefixes and the status on a failed Start;
 *   charts: the Charts Reset removes;
 *   clear(): empty the metrics and the data (Start and Reset);
 *   build(): make the session(s) and draw the empty charts (Start);
 *   run(): a run from Start or Resume, { step(), finish(), result(), pause? }: step() makes one
 *     step() call and shows it, resolving false when there is nothing left to do;
 *     finish() (after the loop: the limit reached or Stop pressed) resolves { step, finished };
 *     pause() replaces yieldToBrowser between calls;
 *   free(): free the session(s); hasSession(): whether one is left to resume after an error.
 * Returns { ready(), readyWhen(promise, what, failed) } to enable Start, now or once the
 * tab's assets arrived.
 */
export function runControls(panel, ids, tab) {
  return new RunControls(panel, ids, tab);
}

class RunControls {
  constructor(panel, ids, tab) {
    this.tab = tab;
    this.btn = Object.fromEntries(['start', 'stop', 'resume', 'reset'].map((k) => [k, $(`#${ids[k]}`, panel)]));
    this.state = $(`#${ids.state}`, panel);
    this.info = $(`#${ids.info}`, panel);
    this.form = $(`#${ids.settings}`, panel);
    this.running = false;
    this.loop = null; // the running loop's promise
    this.btn.start.addEventListener('click', () => this.start());
    this.btn.stop.addEventListener('click', () => this.stop());
    this.btn.resume.addEventListener('click', () => this.startLoop());
    this.btn.reset.addEventListener('click', () => this.reset());
    tab.clear();
  }

  /** 'idle' (Start), 'running' (Stop), 'paused' (Resume, Reset), 'finished' (Reset) or 'busy'. */
  setButtons(s) {
    const { btn } = this;
    btn.start.disabled = s !== 'idle';
    btn.stop.disabled = s !== 'running';
    btn.resume.disabled = s !== 'paused';
    btn.reset.disabled = s === 'idle' || s === 'busy';
    this.form.querySelectorAll('input, select').forEach((i) => { i.disabled = s !== 'idle'; });
  }

  /** Enables Start now. */
  ready() {
    this.setButtons('idle');
  }

  /** Enables Start once promise (the tab's assets) resolves; what and failed say why not. */
  readyWhen(promise, what, failed) {
    this.setButtons('busy');
    promise.then(() => {
      this.state.textContent = 'Ready.';
      this.setButtons('idle');
    }, (e) => {
      showError(e, what);
      this.state.textContent = failed;
    });
  }

  async start() {
    const { tab } = this;
    this.setButtons('busy');
    tab.clear();
    try {
      await tab.build();
    } catch (e) {
      await tab.free().catch(() => {});
      showError(e, tab.labels.build);
      this.state.textContent = tab.labels.buildFailed;
      this.setButtons('idle');
      return;
    }
    this.startLoop();
  }

  startLoop() {
    const { tab } = this;
    this.running = true;
    this.setButtons('running');
    this.state.textContent = 'Training…';
    this.loop = this.run().catch((e) => {
      this.running = false;
      showError(e, tab.labels.stopped);
      this.state.textContent = 'Stopped by an error.';
      this.setButtons(tab.hasSession() ? 'paused' : 'idle');
      window[tab.hook] = { ok: false, error: describeError(e) };
    });
  }

  async run() {
    const r = this.tab.run();
    const pause = r.pause || yieldToBrowser;
    while (this.running && (await r.step())) await pause();
    this.running = false;
    const { step, finished } = await r.finish();
    this.state.textContent = finished ? `Finished ${step} steps.` : `Stopped at step ${step}.`;
    this.setButtons(finished ? 'finished' : 'paused');
    if (finished) window[this.tab.hook] = r.result();
  }

  stop() {
    this.running = false;
    this.btn.stop.disabled = true;
    this.state.textContent = 'Stopping…';
  }

  async reset() {
    const { tab } = this;
    this.running = false;
    this.setButtons('busy');
    if (this.loop) await this.loop;
    await tab.free();
    tab.clear();
    for (const c of tab.charts) c.clear();
    this.info.textContent = '';
    this.state.textContent = 'Ready.';
    window[tab.hook] = undefined;
    this.setButtons('idle');
  }
}

/** Steps per step() call: fixed (a query parameter, > 0), or adapted so that a call takes
 * between fast and slow seconds (doubling up to max, halving down to 1); starts at 1. */
export class Chunk {
  constructor(fixed, { fast, slow, max }) {
    Object.assign(this, { fixed, fast, slow, max, n: fixed || 1 });
  }

  /** After a call of n steps that took seconds. */
  adapt(n, seconds) {
    if (this.fixed) return;
    if (seconds < this.fast && n === this.n) this.n = Math.min(this.max, this.n * 2);
    else if (seconds > this.slow) this.n = Math.max(1, Math.floor(this.n / 2));
  }
}

/** Throughput summed over the timed step() calls (the first, which compiles the kernels, is
 * left out by the caller). */
export class Speed {
  constructor() {
    Object.assign(this, { steps: 0, seconds: 0, examples: 0, calls: 0 });
  }

  /** A call of n steps that answered m ({ seconds, examples, ... }). */
  add(n, m) {
    this.steps += n;
    this.seconds += m.seconds;
    this.examples += m.examples;
    this.calls += 1;
  }

  get stepsPerSec() { return this.steps / this.seconds; }

  get imagesPerSec() { return this.examples / this.seconds; }
}

/** Epochs for a learning-rate schedule that spans the steps asked for (steps x batch /
 * training images, rounded up). */
export const epochsFor = (steps, batch, trainImages) => Math.max(1, Math.ceil((steps * batch) / trainImages));
