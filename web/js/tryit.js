// The "Try it" tab: a drawing (or a test image) through the teacher and the student. The
// student is the Distil tab's distilled one (app.distil); until one is trained, an untrained
// student in a `none` session that holds the teacher answers.

import { $, el } from './dom.js';
import { showError } from './errors.js';
import { loadAssets, wd } from './wasm.js';

/** Class probabilities as bars (the top one marked, ✓ on the true label); returns the top class. */
function bars(box, probs, label, classes) {
  box.textContent = '';
  const top = probs.indexOf(Math.max(...probs));
  probs.forEach((p, i) => {
    const fill = el('div', { class: 'fill', style: `width: ${(p * 100).toFixed(1)}%` });
    const name = classes[i] + (i === label ? ' \u2713' : '');
    box.append(el('div', { class: `bar${i === top ? ' top' : ''}`, 'data-class': classes[i] },
      el('span', {}, name), el('div', {}, fill), el('span', { class: 'num' }, `${(p * 100).toFixed(1)}%`)));
  });
  return classes[top];
}

/** The drawing as n x n grey values in [0, 1] (the mean of each block: 10x10 for 28 of 280). */
function pixels(g, canvas, n = 28) {
  const img = g.getImageData(0, 0, canvas.width, canvas.height).data;
  const k = canvas.width / n;
  const out = new Array(n * n).fill(0);
  for (let y = 0; y < canvas.height; y++) {
    for (let x = 0; x < canvas.width; x++) out[Math.floor(y / k) * n + Math.floor(x / k)] += img[(y * canvas.width + x) * 4];
  }
  return out.map((v) => v / (k * k * 255));
}

/** A `sample` answer ({ pixels in [0, 1], size }) scaled up onto the canvas. */
function paintSample(g, canvas, smp) {
  const n = smp.size;
  const small = new ImageData(n, n);
  smp.pixels.forEach((v, i) => {
    const b = Math.round(v * 255);
    small.data.set([b, b, b, 255], i * 4);
  });
  const tmp = el('canvas', { width: n, height: n });
  tmp.getContext('2d').putImageData(small, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

/** White strokes drawn with the pointer; done() when a stroke ends. */
function drawingPad(canvas, g, done) {
  let drawing = false;
  const pos = (ev) => {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * (canvas.width / r.width), (ev.clientY - r.top) * (canvas.height / r.height)];
  };
  canvas.addEventListener('pointerdown', (ev) => {
    drawing = true;
    canvas.setPointerCapture && canvas.setPointerCapture(ev.pointerId);
    const [x, y] = pos(ev);
    g.strokeStyle = '#fff';
    g.lineWidth = 24;
    g.lineCap = 'round';
    g.lineJoin = 'round';
    g.beginPath();
    g.moveTo(x, y);
    g.lineTo(x + 0.1, y);
    g.stroke();
  });
  canvas.addEventListener('pointermove', (ev) => {
    if (!drawing) return;
    const [x, y] = pos(ev);
    g.lineTo(x, y);
    g.stroke();
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    done();
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointerleave', end);
}

class TryTab {
  constructor(panel, app) {
    this.panel = panel;
    this.app = app;
    this.canvas = $('#try-canvas', panel);
    this.g = this.canvas.getContext('2d', { willReadFrequently: true });
    this.state = $('#try-state', panel);
    this.fallback = null; // an untrained student with the teacher, until the Distil tab trains one
    this.fallbackStudent = null;
    this.classes = null;
    this.clear();
    app.releaseTry = () => this.release();
    this.wire();
  }

  wire() {
    const { panel } = this;
    drawingPad(this.canvas, this.g, () => this.predict({ pixels: pixels(this.g, this.canvas) }));
    $('#try-clear', panel).addEventListener('click', () => {
      this.clear();
      $('#try-teacher', panel).textContent = '';
      $('#try-student', panel).textContent = '';
      this.state.textContent = '\u00a0';
    });
    $('#try-pick', panel).addEventListener('click', () => this.show(parseInt($('#try-index', panel).value, 10) || 0));
    $('#try-sample', panel).addEventListener('click', () => {
      const i = Math.floor(Math.random() * 1000);
      $('#try-index', panel).value = String(i);
      this.show(i);
    });
  }

  clear() {
    this.g.fillStyle = '#000';
    this.g.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /** Frees the fallback session (the Distil tab calls it before building its own). */
  async release() {
    if (this.fallback) {
      const f = this.fallback;
      this.fallback = null;
      await this.app.gpu(() => f.free());
    }
  }

  /** The session to ask and the student's name. Called inside app.gpu(...) only: a job holds
   * the session from choosing it to its last call. */
  async session() {
    const d = this.app.distil;
    if (d && d.sessions.distilled) return { s: d.sessions.distilled, name: `${d.student} (trained in the Distil tab)` };
    const student = $('#distil-settings select[name=student]').value;
    if (!this.fallback || this.fallbackStudent !== student) {
      if (this.fallback) this.fallback.free();
      this.fallback = null;
      this.state.textContent = 'Building the models…';
      const assets = await loadAssets(this.app);
      this.fallback = await wd.Session.create('distill', { student, method: 'none', train_limit: 64, test_limit: 64 }, assets);
      this.fallbackStudent = student;
    }
    return { s: this.fallback, name: `${student} (untrained: train it in the Distil tab)` };
  }

  async predict(args, label) {
    try {
      this.state.textContent = 'Asking the models…';
      const { p, name } = await this.app.gpu(async () => {
        const { s, name } = await this.session();
        if (!this.classes) this.classes = await s.query('classes', {});
        return { p: await s.query('predict', args), name };
      });
      const { classes, panel } = this;
      $('#try-student-name', panel).textContent = name;
      const teacher = p.teacher ? bars($('#try-teacher', panel), p.teacher, label, classes) : null;
      const student = bars($('#try-student', panel), p.student, label, classes);
      this.state.textContent = `Teacher: ${teacher || '–'}; student: ${student}.` + (label !== undefined ? ` (It is a ${classes[label]}.)` : '');
      window.__try = { teacher: p.teacher, student: p.student, teacher_class: teacher, student_class: student, label, classes };
    } catch (e) {
      showError(e, 'Try it');
      this.state.textContent = 'Could not predict.';
    }
  }

  async show(index) {
    try {
      const smp = await this.app.gpu(async () => (await this.session()).s.query('sample', { index }));
      paintSample(this.g, this.canvas, smp);
      await this.predict({ index }, smp.label);
    } catch (e) {
      showError(e, 'Try it');
    }
  }
}

export function mountTry(panel, app) {
  new TryTab(panel, app);
}
