// The demo page: loads the wasm build of the library, opens the GPU, runs the self-test and
// drives training sessions. Tabs live in TABS below; see web/README.md for adding one.
//
// Hooks for the browser tests (web/test.mjs): window.__status ('loading' | 'ready' |
// 'nowebgpu' | 'error'), window.__selftest (the self-test report, or { error }),
// window.__result (set when a training run reaches its step limit), window.__errors,
// window.__info (what init() said about the adapter), window.__distil (set when a Distil run
// reaches its step count), window.__obow (set when an OBoW run reaches its step count, after
// its probe and word grid), window.__try (the last "Try it" predictions).
// Query parameters: ?steps=N (stop after N steps), ?chunk=K (steps per step() call, fixed),
// ?matmul=tiled|register (kernel override), #train (open a tab); for the Distil tab:
// ?dchunk=K (steps per step() call, fixed), ?eval_ms=T (held-out evaluation every T ms of
// training; default 4000), ?cka_images=N (test images for CKA; default 128); for the OBoW tab:
// ?ochunk=K (steps per step() call), ?probe_train=N, ?probe_test=N, ?probe_epochs=N (the
// linear probe's budget; default 1000, 500, 10), ?words_shown=N, ?word_images=N (the word
// grid: words drawn, test images searched; default 8, 300).

import initWasm, * as wd from './pkg/webdistill.js';

// uPlot (web/package.json) is loaded by index.html as a classic script: its minified build.
const uPlot = window.uPlot;

const query = new URLSearchParams(location.search);
const $ = (sel, root = document) => root.querySelector(sel);

window.__status = 'loading';
window.__errors = [];

// ---------------------------------------------------------------- messages

function describeError(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
    return `${name}${e.message}`;
  }
  return String(e);
}

function showError(e, what) {
  const msg = (what ? `${what}: ` : '') + describeError(e);
  window.__errors.push(msg);
  console.error(msg);
  const box = $('#error');
  const p = document.createElement('p');
  p.textContent = msg;
  box.append(p);
  box.hidden = false;
}

window.addEventListener('error', (ev) => showError(ev.error || ev.message, 'Unexpected error'));
window.addEventListener('unhandledrejection', (ev) => showError(ev.reason, 'Unexpected error'));

function showNoWebGpu(e) {
  $('#nowebgpu-detail').textContent = e.message;
  $('#nowebgpu').hidden = false;
  $('#adapter').textContent = 'No WebGPU adapter.';
}

// ---------------------------------------------------------------- helpers

/** Let the browser handle input and paint before the next piece of work. */
const yieldToBrowser = () => new Promise((resolve) => setTimeout(resolve, 0));

function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toPrecision(digits);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

// ---------------------------------------------------------------- tabs

// Each tab: { id, title, template (id of a <template>), mount(panel, app), kind (the session
// kind it needs; the tab appears only when the library has it) }.
const ALL_TABS = [
  { id: 'overview', title: 'Overview', template: 'tpl-overview', mount: mountOverview },
  { id: 'distil', title: 'Distil', template: 'tpl-distil', mount: mountDistil, kind: 'distill' },
  { id: 'obow', title: 'OBoW', template: 'tpl-obow', mount: mountObow, kind: 'obow' },
  { id: 'try', title: 'Try it', template: 'tpl-try', mount: mountTry, kind: 'distill' },
  { id: 'train', title: 'Train an MLP', template: 'tpl-train', mount: mountTrain, kind: 'mlp' },
];
let TABS = ALL_TABS;

function buildTabs(app) {
  const kinds = wd.sessionKinds();
  TABS = ALL_TABS.filter((t) => !t.kind || kinds.includes(t.kind));
  const nav = $('#tabs');
  const main = $('#panels');
  const buttons = new Map();
  const select = (id) => {
    for (const t of TABS) {
      const on = t.id === id;
      buttons.get(t.id).setAttribute('aria-selected', String(on));
      $(`#panel-${t.id}`).hidden = !on;
    }
  };
  for (const t of TABS) {
    const b = el('button', { type: 'button', role: 'tab', id: `tab-${t.id}`, 'aria-controls': `panel-${t.id}` }, t.title);
    b.addEventListener('click', () => {
      select(t.id);
      history.replaceState(null, '', `${location.search}#${t.id}`);
    });
    buttons.set(t.id, b);
    nav.append(b);
    const panel = el('div', { id: `panel-${t.id}`, role: 'tabpanel', class: 'panel' });
    panel.append($(`#${t.template}`).content.cloneNode(true));
    main.append(panel);
    t.mount(panel, app);
  }
  nav.hidden = false;
  const wanted = location.hash.slice(1);
  select(TABS.some((t) => t.id === wanted) ? wanted : TABS[0].id);
}

// ---------------------------------------------------------------- overview

function mountOverview(panel, app) {
  const info = app.info;
  const rows = [
    ['adapter', info.name],
    ['backend', info.backend],
    ['software adapter', info.software ? 'yes (CPU emulation: expect it to be slow)' : 'no'],
    ['matmul kernel', info.matmul],
    ['max storage binding', `${fmt(info.maxStorageBindingMiB, 4)} MiB`],
    ['workgroup storage', `${fmt(info.maxWorkgroupStorageKiB, 3)} KiB`],
    ['invocations per workgroup', String(info.maxInvocationsPerWorkgroup)],
  ];
  const table = $('#adapter-table', panel);
  for (const [k, v] of rows) table.append(el('tr', {}, el('th', {}, k), el('td', {}, v)));
  runSelftest(panel);
}

async function runSelftest(panel) {
  const status = $('#selftest-status', panel);
  const t0 = performance.now();
  try {
    const report = await wd.selftest();
    const ms = performance.now() - t0;
    window.__selftest = report;
    const loss = report.outputs.find((o) => o.name === 'loss').values[0];
    const finite = report.outputs.every((o) => o.values.every(Number.isFinite));
    status.textContent = `Done in ${fmt(ms, 3)} ms: ${report.outputs.length} outputs, loss ${fmt(loss, 6)}` +
      (finite ? ', all values finite.' : ', but some values are not finite!');
    status.className = finite ? 'status ok' : 'status bad';
    const body = $('#selftest-table tbody', panel);
    for (const o of report.outputs) {
      const head = o.values.slice(0, 4).map((v) => v.toFixed(5)).join(', ') + (o.values.length > 4 ? ', …' : '');
      body.append(el('tr', {}, el('td', {}, o.name), el('td', {}, `[${o.shape.join(', ')}]`), el('td', { class: 'num' }, head)));
    }
    $('#selftest-table', panel).hidden = false;
  } catch (e) {
    window.__selftest = { error: describeError(e) };
    status.textContent = `Failed: ${describeError(e)}`;
    status.className = 'status bad';
  }
}

// ---------------------------------------------------------------- training

function mountTrain(panel) {
  const form = $('#train-settings', panel);
  if (query.has('steps')) form.elements.maxSteps.value = query.get('steps');
  const fixedChunk = query.has('chunk') ? Math.max(1, parseInt(query.get('chunk'), 10) || 1) : 0;
  const btn = {
    start: $('#btn-start', panel), stop: $('#btn-stop', panel),
    resume: $('#btn-resume', panel), reset: $('#btn-reset', panel),
  };
  const out = {
    step: $('#m-step', panel), loss: $('#m-loss', panel), evalLoss: $('#m-eval-loss', panel),
    acc: $('#m-acc', panel), ips: $('#m-ips', panel), sps: $('#m-sps', panel),
    state: $('#train-state', panel), info: $('#session-info', panel),
  };

  let session = null;
  let running = false;
  let loop = null; // the running loop's promise
  let finished = false;
  let data; // uPlot columns: step, training loss, held-out loss
  let plot = null;
  let speed; // throughput over step() calls after the first (warm-up) call
  let firstLoss = null;
  let lastEval = null;
  let currentStep = 0;

  function clearData() {
    data = [[], [], []];
    speed = { steps: 0, seconds: 0, examples: 0, wallStart: 0, wallSteps: 0 };
    firstLoss = null;
    lastEval = null;
    for (const k of ['step', 'loss', 'evalLoss', 'acc', 'ips', 'sps']) out[k].textContent = '–';
  }

  function makePlot() {
    const chart = $('#chart', panel);
    chart.textContent = '';
    const width = Math.max(320, chart.clientWidth || 720);
    plot = new uPlot({
      width, height: 300,
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
    }, data, chart);
  }

  window.addEventListener('resize', () => {
    if (plot) plot.setSize({ width: Math.max(320, $('#chart', panel).clientWidth), height: 300 });
  });

  function setButtons(state) {
    btn.start.disabled = state !== 'idle';
    btn.stop.disabled = state !== 'running';
    btn.resume.disabled = state !== 'paused';
    btn.reset.disabled = state === 'idle' || state === 'busy';
    form.querySelectorAll('input').forEach((i) => { i.disabled = state !== 'idle'; });
  }

  function settings() {
    const f = form.elements;
    return {
      hidden: parseInt(f.hidden.value, 10), layers: parseInt(f.layers.value, 10),
      batch: parseInt(f.batch.value, 10), lr: parseFloat(f.lr.value),
    };
  }
  const maxSteps = () => parseInt(form.elements.maxSteps.value, 10) || 0;

  function push(step, trainLoss, evalLoss) {
    data[0].push(step);
    data[1].push(trainLoss);
    data[2].push(evalLoss);
    if (data[0].length > 4000) data = data.map((col) => col.filter((_, i) => i % 2 === 0 || i === col.length - 1));
  }

  function showSpeed() {
    if (speed.seconds > 0) {
      out.sps.textContent = fmt(speed.steps / speed.seconds, 3);
      out.ips.textContent = fmt(speed.examples / speed.seconds, 3);
    }
  }

  async function evaluate() {
    const e = await session.evaluate();
    lastEval = e;
    out.evalLoss.textContent = fmt(e.loss);
    out.acc.textContent = `${(e.accuracy * 100).toFixed(1)}%`;
    const last = data[0].length - 1;
    if (last >= 0 && data[0][last] === e.step) data[2][last] = e.loss;
    else push(e.step, null, e.loss);
    return e;
  }

  async function run() {
    let chunk = fixedChunk || 1;
    let lastEvalAt = performance.now();
    // Where the loop's time goes (ms), for the tests and for curious users.
    const loop = window.__loop = { calls: 0, chunk, step: 0, evaluate: 0, draw: 0, yield: 0 };
    const timed = async (what, f) => {
      const t = performance.now();
      const v = await f();
      loop[what] += performance.now() - t;
      return v;
    };
    while (running) {
      const limit = maxSteps();
      const warmup = speed.wallStart === 0 && firstLoss === null;
      let n = warmup ? 1 : chunk;
      if (limit > 0) n = Math.min(n, Math.max(0, limit - currentStep));
      if (n <= 0) break;
      const m = await timed('step', () => session.step(n));
      loop.calls += 1;
      currentStep = m.step;
      if (firstLoss === null) firstLoss = m.loss;
      if (warmup) {
        speed.wallStart = performance.now();
        speed.wallSteps = m.step;
      } else {
        speed.steps += n;
        speed.seconds += m.seconds;
        speed.examples += m.examples;
      }
      push(m.step, m.loss, null);
      out.step.textContent = String(m.step);
      out.loss.textContent = fmt(m.loss);
      showSpeed();
      // Aim for 0.1-0.3 s per call: a few chart updates a second, and enough steps per
      // awaited readback (a readback costs ~70 ms in Firefox whatever the work: shrinking
      // the chunk to fit a shorter target there would only slow training down).
      if (!fixedChunk && !warmup) {
        if (m.seconds < 0.1 && n === chunk) chunk = Math.min(1000, chunk * 2);
        else if (m.seconds > 0.3) chunk = Math.max(1, Math.floor(chunk / 2));
      }
      loop.chunk = chunk;
      if (performance.now() - lastEvalAt > 1000) {
        await timed('evaluate', evaluate);
        lastEvalAt = performance.now();
      }
      await timed('draw', () => plot.setData(data));
      await timed('yield', yieldToBrowser);
    }
    running = false;
    const limit = maxSteps();
    finished = limit > 0 && currentStep >= limit;
    await evaluate();
    plot.setData(data);
    out.state.textContent = finished ? `Finished ${currentStep} steps.` : `Stopped at step ${currentStep}.`;
    setButtons(finished ? 'finished' : 'paused');
    if (finished) {
      const wall = (performance.now() - speed.wallStart) / 1000;
      window.__result = {
        ok: true,
        adapter: $('#adapter').textContent,
        steps: currentStep,
        first_loss: firstLoss,
        last_loss: data[1].filter((v) => v !== null).at(-1),
        eval_loss: lastEval.loss,
        accuracy: lastEval.accuracy,
        steps_per_sec: speed.steps / speed.seconds,
        images_per_sec: speed.examples / speed.seconds,
        wall_steps_per_sec: (currentStep - speed.wallSteps) / wall,
        timed_steps: speed.steps,
        chunk: fixedChunk || 'adaptive',
      };
    }
  }

  function startLoop() {
    running = true;
    setButtons('running');
    out.state.textContent = 'Training…';
    loop = run().catch((e) => {
      running = false;
      showError(e, 'Training stopped');
      out.state.textContent = 'Stopped by an error.';
      setButtons(session ? 'paused' : 'idle');
      window.__result = { ok: false, error: describeError(e) };
    });
  }

  btn.start.addEventListener('click', async () => {
    setButtons('busy');
    out.state.textContent = 'Building the session (compiling the plans)…';
    clearData();
    currentStep = 0;
    finished = false;
    try {
      session = await wd.Session.create('mlp', settings());
      const d = session.describe();
      out.info.textContent = `${d.task}: ${d.train_examples} training and ${d.test_examples} held-out points; ` +
        `${d.parameters.toLocaleString('en-US')} parameters; ${d.dispatches_per_step} GPU dispatches per step ` +
        `(${d.train_plan}).`;
      makePlot();
      await evaluate(); // the held-out loss before any training: the curve's first point
      plot.setData(data);
    } catch (e) {
      session = null;
      showError(e, 'Could not build the session');
      out.state.textContent = 'Could not build the session.';
      setButtons('idle');
      return;
    }
    startLoop();
  });

  btn.stop.addEventListener('click', () => {
    running = false;
    btn.stop.disabled = true;
    out.state.textContent = 'Stopping…';
  });

  btn.resume.addEventListener('click', () => startLoop());

  btn.reset.addEventListener('click', async () => {
    running = false;
    setButtons('busy');
    if (loop) await loop;
    if (session) session.free();
    session = null;
    clearData();
    plot = null;
    $('#chart', panel).textContent = '';
    out.info.textContent = '';
    out.state.textContent = 'Ready.';
    window.__result = undefined;
    setButtons('idle');
  });

  clearData();
  setButtons('idle');
}

// ---------------------------------------------------------------- the GPU queue and the assets

/** Run GPU calls one at a time: a session answers one call at a time (a second one while the
 * first is in flight is rejected), and the Distil and "Try it" tabs share sessions. */
function makeQueue() {
  let tail = Promise.resolve();
  return (f) => {
    const r = tail.then(f);
    tail = r.catch(() => {});
    return r;
  };
}

const TEACHER_URL = 'assets/resnet20_fmnist.safetensors';
const DATA_DIR = 'data/'; // the bundled Fashion-MNIST subset's files (wd.bundledFiles())

async function fetchBytes(url, what) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${what} (${url}) could not be loaded: HTTP ${r.status} (was web/build run?)`);
  return new Uint8Array(await r.arrayBuffer());
}

/** The assets of a distillation or OBoW session, fetched once: the shipped teacher's
 * safetensors (`teacher`) and the bundled data set's files (named as wd.bundledFiles()), all
 * copied next to the page by web/build. */
function loadAssets(app) {
  if (!app.assets) {
    const files = wd.bundledFiles();
    app.assets = Promise.all([
      fetchBytes(TEACHER_URL, "the teacher's weights"),
      ...files.map((f) => fetchBytes(DATA_DIR + f, 'the bundled Fashion-MNIST subset')),
    ]).then(([teacher, ...data]) => ({ teacher, ...Object.fromEntries(files.map((f, i) => [f, data[i]])) }));
    app.assets.catch(() => { app.assets = null; }); // try again next time
  }
  return app.assets;
}

// ---------------------------------------------------------------- distillation

const RUNS = [
  { key: 'distilled', label: 'distilled', color: '#2563eb' },
  { key: 'baseline', label: 'labels only', color: '#dc2626' },
];

function mountDistil(panel, app) {
  const form = $('#distil-settings', panel);
  const fixedChunk = query.has('dchunk') ? Math.max(1, parseInt(query.get('dchunk'), 10) || 1) : 0;
  // Held-out evaluation every this many ms of training (and at the start and the end).
  const evalEvery = query.has('eval_ms') ? parseFloat(query.get('eval_ms')) : 4000;
  const ckaImages = query.has('cka_images') ? parseInt(query.get('cka_images'), 10) : 128;
  const btn = {
    start: $('#distil-start', panel), stop: $('#distil-stop', panel),
    resume: $('#distil-resume', panel), reset: $('#distil-reset', panel),
  };
  const out = {
    step: $('#d-step', panel), loss: $('#d-loss', panel), lossBase: $('#d-loss-base', panel),
    acc: $('#d-acc', panel), accBase: $('#d-acc-base', panel), ips: $('#d-ips', panel),
    state: $('#distil-state', panel), info: $('#distil-info', panel), cka: $('#cka', panel),
  };
  const d = app.distil = { sessions: {}, student: null };

  let running = false;
  let loop = null;
  let step = 0;
  let lossData; // step, distilled total loss, distilled cross-entropy term, labels-only loss
  let accData; // step, distilled accuracy, labels-only accuracy
  let plots = {};
  let speed;
  let first;
  let last;
  let evals;

  function clearData() {
    lossData = [[], [], [], []];
    accData = [[], [], []];
    speed = { steps: 0, seconds: 0, examples: 0, calls: 0 };
    first = {};
    last = {};
    evals = {};
    for (const k of ['step', 'loss', 'lossBase', 'acc', 'accBase', 'ips']) out[k].textContent = '–';
    out.cka.hidden = true;
    $('.cka-maps', out.cka).textContent = '';
  }

  function settings() {
    const f = form.elements;
    const s = {
      student: f.student.value, method: f.method.value, eps: parseFloat(f.eps.value),
      batch: parseInt(f.batch.value, 10), lr: parseFloat(f.lr.value),
      train_limit: parseInt(f.trainLimit.value, 10), test_limit: parseInt(f.testLimit.value, 10),
    };
    // The learning-rate schedule (warm-up, cosine decay) spans the steps asked for.
    s.epochs = Math.max(1, Math.ceil((parseInt(f.steps.value, 10) * s.batch) / s.train_limit));
    return s;
  }
  const maxSteps = () => parseInt(form.elements.steps.value, 10) || 0;

  function setButtons(state) {
    btn.start.disabled = state !== 'idle';
    btn.stop.disabled = state !== 'running';
    btn.resume.disabled = state !== 'paused';
    btn.reset.disabled = state === 'idle' || state === 'busy';
    form.querySelectorAll('input, select').forEach((i) => { i.disabled = state !== 'idle'; });
  }

  function makePlots(withBase) {
    const mk = (id, yLabel, series, data, y) => {
      const chart = $(id, panel);
      chart.textContent = '';
      const width = Math.max(300, chart.clientWidth || 440);
      return new uPlot({
        width, height: 260, scales: { x: { time: false }, y },
        axes: [{ label: 'step' }, { label: yLabel }],
        series: [{ label: 'step' }, ...series],
      }, data, chart);
    };
    const line = (label, stroke, extra = {}) => ({ label, stroke, width: 1.5, spanGaps: true, points: { show: false }, ...extra });
    plots.loss = mk('#distil-loss-chart', 'loss', [
      line('distilled: total', RUNS[0].color),
      line('distilled: cross-entropy', RUNS[0].color, { dash: [4, 4] }),
      line('labels only', RUNS[1].color, { show: withBase }),
    ], lossData, {});
    plots.acc = mk('#distil-acc-chart', 'accuracy (%)', [
      line('distilled', RUNS[0].color, { points: { show: true, size: 5 } }),
      line('labels only', RUNS[1].color, { show: withBase, points: { show: true, size: 5 } }),
    ], accData, { range: (u, lo, hi) => [Math.max(0, Math.floor(lo / 10) * 10), Math.min(100, Math.ceil(hi / 10) * 10)] });
  }

  window.addEventListener('resize', () => {
    for (const [k, id] of [['loss', '#distil-loss-chart'], ['acc', '#distil-acc-chart']]) {
      if (plots[k]) plots[k].setSize({ width: Math.max(300, $(id, panel).clientWidth), height: 260 });
    }
  });

  const active = () => RUNS.filter((r) => d.sessions[r.key]);

  async function evaluate() {
    const row = [step, null, null];
    for (const [i, r] of RUNS.entries()) {
      const s = d.sessions[r.key];
      if (!s) continue;
      const e = await app.gpu(() => s.evaluate());
      evals[r.key] = e;
      row[i + 1] = e.accuracy * 100;
    }
    const at = accData[0].length - 1;
    if (at >= 0 && accData[0][at] === step) accData.forEach((col, i) => { col[at] = row[i]; });
    else accData.forEach((col, i) => col.push(row[i]));
    out.acc.textContent = evals.distilled ? `${(evals.distilled.accuracy * 100).toFixed(1)}%` : '–';
    out.accBase.textContent = evals.baseline ? `${(evals.baseline.accuracy * 100).toFixed(1)}%` : '–';
    plots.acc.setData(accData);
  }

  async function drawCka() {
    const maps = $('.cka-maps', out.cka);
    maps.textContent = '';
    const result = {};
    for (const r of active()) {
      const c = await app.gpu(() => d.sessions[r.key].query('cka', { images: ckaImages }));
      result[r.key] = c;
      const canvas = el('canvas', { class: 'cka-canvas', 'data-run': r.key });
      drawHeatmap(canvas, c);
      maps.append(el('figure', {}, canvas, el('figcaption', {}, `${d.student}, ${r.label} (${c.images} test images)`)));
    }
    out.cka.hidden = false;
    return result;
  }

  async function run() {
    let chunk = fixedChunk || 1;
    let lastEvalAt = performance.now();
    const runs = active();
    while (running) {
      const limit = maxSteps();
      let n = Math.min(chunk, Math.max(0, limit - step));
      if (n <= 0) break;
      const ms = {};
      for (const r of runs) ms[r.key] = await app.gpu(() => d.sessions[r.key].step(n));
      step = ms.distilled.step;
      const m = ms.distilled;
      const b = ms.baseline;
      // The first call compiles the kernels (slow on some browsers): leave it out of the speed.
      if (first.distilled === undefined) {
        first = { distilled: m.loss, baseline: b && b.loss, call: n };
      } else {
        speed.steps += n;
        speed.seconds += m.seconds;
        speed.examples += m.examples;
        speed.calls += 1;
      }
      last = { distilled: m.loss, baseline: b && b.loss };
      lossData[0].push(step);
      lossData[1].push(m.loss);
      lossData[2].push(m.terms && m.terms.gt !== undefined ? m.terms.gt : null);
      lossData[3].push(b ? b.loss : null);
      out.step.textContent = String(step);
      out.loss.textContent = fmt(m.loss);
      out.lossBase.textContent = b ? fmt(b.loss) : '–';
      if (speed.seconds > 0) out.ips.textContent = fmt(speed.examples / speed.seconds, 3);
      const secs = runs.reduce((a, r) => a + ms[r.key].seconds, 0);
      if (!fixedChunk) {
        if (secs < 0.15 && n === chunk) chunk = Math.min(200, chunk * 2);
        else if (secs > 0.5) chunk = Math.max(1, Math.floor(chunk / 2));
      }
      plots.loss.setData(lossData);
      if (performance.now() - lastEvalAt > evalEvery && step < limit) {
        await evaluate();
        lastEvalAt = performance.now();
      }
      await yieldToBrowser();
    }
    running = false;
    const limit = maxSteps();
    const finished = step >= limit;
    out.state.textContent = 'Evaluating…';
    await evaluate();
    let cka = null;
    if (finished) {
      out.state.textContent = 'Measuring CKA…';
      cka = await drawCka();
    }
    out.state.textContent = finished ? `Finished ${step} steps.` : `Stopped at step ${step}.`;
    setButtons(finished ? 'finished' : 'paused');
    if (finished) {
      window.__distil = {
        ok: true,
        adapter: $('#adapter').textContent,
        settings: settings(),
        steps: step,
        first_loss: first.distilled,
        last_loss: last.distilled,
        first_loss_baseline: first.baseline,
        last_loss_baseline: last.baseline,
        accuracy: evals.distilled.accuracy,
        accuracy_baseline: evals.baseline ? evals.baseline.accuracy : null,
        steps_per_sec: speed.steps / speed.seconds,
        images_per_sec: speed.examples / speed.seconds,
        timed_steps: speed.steps,
        chunk: fixedChunk || 'adaptive',
        cka,
      };
    }
  }

  function startLoop() {
    running = true;
    setButtons('running');
    out.state.textContent = 'Training…';
    loop = run().catch((e) => {
      running = false;
      showError(e, 'Distillation stopped');
      out.state.textContent = 'Stopped by an error.';
      setButtons(d.sessions.distilled ? 'paused' : 'idle');
      window.__distil = { ok: false, error: describeError(e) };
    });
  }

  async function freeSessions() {
    await app.gpu(() => {
      for (const r of RUNS) {
        if (d.sessions[r.key]) d.sessions[r.key].free();
      }
    });
    d.sessions = {};
    d.student = null;
  }

  btn.start.addEventListener('click', async () => {
    setButtons('busy');
    clearData();
    step = 0;
    const cfg = settings();
    try {
      out.state.textContent = 'Loading the teacher and the data…';
      const assets = await loadAssets(app);
      out.state.textContent = 'Building the sessions (compiling the plans)…';
      await freeSessions();
      if (app.releaseTry) await app.releaseTry();
      const build = (method) => app.gpu(() => wd.Session.create('distill', { ...cfg, method }, assets));
      d.sessions.distilled = await build(cfg.method);
      // The labels-only companion: the same student, data and order, without the teacher.
      if (cfg.method !== 'none') d.sessions.baseline = await build('none');
      d.student = cfg.student;
      const info = d.sessions.distilled.describe();
      out.info.textContent = `${info.student} (${info.params.toLocaleString('en-US')} parameters) learns from ${info.teacher} with ` +
        `'${cfg.method}' (loss terms: ${info.terms.join(', ')}); ${info.dispatches_per_step} GPU dispatches per step; ` +
        `${info.train_images} training and ${info.test_images} test images; ${$('#adapter').textContent}.`;
      makePlots(!!d.sessions.baseline);
      out.state.textContent = 'Evaluating the untrained students…';
      await evaluate(); // accuracy before training: the curves' first points
    } catch (e) {
      await freeSessions().catch(() => {});
      showError(e, 'Could not build the distillation');
      out.state.textContent = 'Could not build the sessions.';
      setButtons('idle');
      return;
    }
    startLoop();
  });

  btn.stop.addEventListener('click', () => {
    running = false;
    btn.stop.disabled = true;
    out.state.textContent = 'Stopping…';
  });

  btn.resume.addEventListener('click', () => startLoop());

  btn.reset.addEventListener('click', async () => {
    running = false;
    setButtons('busy');
    if (loop) await loop;
    await freeSessions();
    clearData();
    plots = {};
    $('#distil-loss-chart', panel).textContent = '';
    $('#distil-acc-chart', panel).textContent = '';
    out.info.textContent = '';
    out.state.textContent = 'Ready.';
    window.__distil = undefined;
    setButtons('idle');
  });

  clearData();
  setButtons('busy');
  loadAssets(app).then(() => {
    out.state.textContent = 'Ready.';
    setButtons('idle');
  }, (e) => {
    showError(e, 'Distil');
    out.state.textContent = 'The teacher or the data could not be loaded.';
  });
}

/** A CKA matrix ({ rows, cols, values } row-major) as a heatmap with its numbers. */
function drawHeatmap(canvas, c) {
  const nr = c.rows.length;
  const nc = c.cols.length;
  const cell = Math.max(34, Math.min(64, Math.floor(360 / Math.max(nr, nc))));
  const left = 70;
  const top = 22;
  const dpr = window.devicePixelRatio || 1;
  const w = left + nc * cell + 4;
  const h = top + nr * cell + 40;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.fillStyle = '#fff';
  g.fillRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  // From dark blue (0) through teal to yellow (1), like viridis.
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const color = (v) => {
    const x = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const t = x - i;
    const [r, gg, b] = stops[i].map((a, k) => Math.round(a + t * (stops[i + 1][k] - a)));
    return `rgb(${r},${gg},${b})`;
  };
  for (let i = 0; i < nr; i++) {
    for (let j = 0; j < nc; j++) {
      const v = c.values[i * nc + j];
      g.fillStyle = color(v);
      g.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
      g.fillStyle = v > 0.6 ? '#111' : '#fff';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(Number.isFinite(v) ? v.toFixed(2) : '–', left + j * cell + cell / 2, top + i * cell + cell / 2);
    }
  }
  g.fillStyle = '#4b5563';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  c.rows.forEach((name, i) => g.fillText(`T ${name}`, left - 6, top + i * cell + cell / 2));
  g.textAlign = 'center';
  g.textBaseline = 'top';
  c.cols.forEach((name, j) => g.fillText(name.replace('stage ', 'S '), left + j * cell + cell / 2, top + nr * cell + 4));
  g.fillText('student stages', left + (nc * cell) / 2, top + nr * cell + 20);
  g.textAlign = 'left';
  g.textBaseline = 'bottom';
  g.fillText('teacher stages \u2193', 2, top - 4);
}

// ---------------------------------------------------------------- OBoW

function mountObow(panel, app) {
  const form = $('#obow-settings', panel);
  const fixedChunk = query.has('ochunk') ? Math.max(1, parseInt(query.get('ochunk'), 10) || 1) : 0;
  const intParam = (k, d) => (query.has(k) ? parseInt(query.get(k), 10) || d : d);
  // The linear probe's budget (features of this many images, epochs of SGD) and the word grid.
  const probeArgs = { train_images: intParam('probe_train', 1000), test_images: intParam('probe_test', 500), epochs: intParam('probe_epochs', 10) };
  const wordArgs = { words: intParam('words_shown', 8), per_word: 6, test_images: intParam('word_images', 300) };
  const btn = {
    start: $('#obow-start', panel), stop: $('#obow-stop', panel),
    resume: $('#obow-resume', panel), reset: $('#obow-reset', panel),
  };
  const out = {
    step: $('#o-step', panel), loss: $('#o-loss', panel), ips: $('#o-ips', panel),
    probe: $('#o-probe', panel), probeRandom: $('#o-probe-random', panel), probeInfo: $('#obow-probe-info', panel),
    state: $('#obow-state', panel), info: $('#obow-info', panel), words: $('#obow-words', panel),
  };

  let session = null;
  let running = false;
  let loop = null;
  let step = 0;
  let lossData; // step, BoW loss
  let plot = null;
  let speed;
  let first;
  let last;

  function clearData() {
    lossData = [[], []];
    speed = { steps: 0, seconds: 0, examples: 0 };
    first = undefined;
    last = undefined;
    for (const k of ['step', 'loss', 'ips', 'probe', 'probeRandom']) out[k].textContent = '–';
    out.probeInfo.textContent = '';
    out.words.hidden = true;
  }

  function settings() {
    const f = form.elements;
    const s = {
      model: f.model.value, batch: parseInt(f.batch.value, 10), lr: parseFloat(f.lr.value), words: parseInt(f.words.value, 10),
      train_limit: parseInt(f.trainLimit.value, 10), test_limit: parseInt(f.testLimit.value, 10),
    };
    // The learning-rate and teacher-momentum schedules span the steps asked for.
    s.epochs = Math.max(1, Math.ceil((parseInt(f.steps.value, 10) * s.batch) / s.train_limit));
    return s;
  }
  const maxSteps = () => parseInt(form.elements.steps.value, 10) || 0;

  function setButtons(state) {
    btn.start.disabled = state !== 'idle';
    btn.stop.disabled = state !== 'running';
    btn.resume.disabled = state !== 'paused';
    btn.reset.disabled = state === 'idle' || state === 'busy';
    form.querySelectorAll('input, select').forEach((i) => { i.disabled = state !== 'idle'; });
  }

  function makePlot() {
    const chart = $('#obow-loss-chart', panel);
    chart.textContent = '';
    plot = new uPlot({
      width: Math.max(300, chart.clientWidth || 440), height: 260, scales: { x: { time: false }, y: {} },
      axes: [{ label: 'step' }, { label: 'BoW loss' }],
      series: [{ label: 'step' }, { label: 'BoW loss', stroke: '#7c3aed', width: 1.5, points: { show: false } }],
    }, lossData, chart);
  }
  window.addEventListener('resize', () => {
    if (plot) plot.setSize({ width: Math.max(300, $('#obow-loss-chart', panel).clientWidth), height: 260 });
  });

  async function probe() {
    out.state.textContent = 'Linear probes: OBoW features vs random init…';
    const p = await app.gpu(() => session.query('probe', probeArgs));
    out.probe.textContent = `${(p.obow * 100).toFixed(1)}%`;
    out.probeRandom.textContent = `${(p.random * 100).toFixed(1)}%`;
    out.probeInfo.textContent = `Linear probe at step ${p.step}: a linear classifier trained for ${p.epochs} epoch${p.epochs === 1 ? '' : 's'} on the frozen features ` +
      `of ${p.train_images} training images, top-1 on ${p.test_images} test images (${p.seconds.toFixed(1)} s).`;
    return p;
  }

  async function drawWords() {
    out.state.textContent = 'Drawing the visual words…';
    const w = await app.gpu(() => session.query('words', wordArgs));
    const canvas = $('#obow-words-canvas', panel);
    canvas.width = w.width;
    canvas.height = w.height;
    canvas.style.width = `${Math.min(440, w.width * 2)}px`;
    canvas.getContext('2d').putImageData(new ImageData(Uint8ClampedArray.from(w.pixels), w.width, w.height), 0, 0);
    $('#obow-words-caption', panel).textContent = `Each row: ${w.patch}x${w.patch}-pixel test-image patches (what a stage-${w.stage} ` +
      `feature-map cell sees) whose features fall on one visual word of vocabulary ${w.level}.`;
    out.words.hidden = false;
    return { width: w.width, height: w.height, level: w.level, stage: w.stage, patch: w.patch };
  }

  async function run() {
    let chunk = fixedChunk || 1;
    while (running) {
      const n = Math.min(chunk, Math.max(0, maxSteps() - step));
      if (n <= 0) break;
      const m = await app.gpu(() => session.step(n));
      step = m.step;
      if (first === undefined) first = m.loss; // the first call also compiles the kernels: not timed
      else {
        speed.steps += n;
        speed.seconds += m.seconds;
        speed.examples += m.examples;
      }
      last = m.loss;
      lossData[0].push(step);
      lossData[1].push(m.loss);
      out.step.textContent = String(step);
      out.loss.textContent = fmt(m.loss);
      if (speed.seconds > 0) out.ips.textContent = fmt(speed.examples / speed.seconds, 3);
      if (!fixedChunk) {
        if (m.seconds < 0.1 && n === chunk) chunk = Math.min(200, chunk * 2);
        else if (m.seconds > 0.3) chunk = Math.max(1, Math.floor(chunk / 2));
      }
      plot.setData(lossData);
      await yieldToBrowser();
    }
    running = false;
    const finished = step >= maxSteps();
    const p = await probe();
    const words = await drawWords();
    out.state.textContent = finished ? `Finished ${step} steps.` : `Stopped at step ${step}.`;
    setButtons(finished ? 'finished' : 'paused');
    if (finished) {
      window.__obow = {
        ok: true, settings: settings(), steps: step, first_loss: first, last_loss: last, losses: lossData[1].slice(),
        steps_per_sec: speed.steps / speed.seconds, images_per_sec: speed.examples / speed.seconds, probe: p, words,
      };
    }
  }

  function startLoop() {
    running = true;
    setButtons('running');
    out.state.textContent = 'Training…';
    loop = run().catch((e) => {
      running = false;
      showError(e, 'OBoW stopped');
      out.state.textContent = 'Stopped by an error.';
      setButtons(session ? 'paused' : 'idle');
      window.__obow = { ok: false, error: describeError(e) };
    });
  }

  async function freeSession() {
    await app.gpu(() => {
      if (session) session.free();
    });
    session = null;
  }

  btn.start.addEventListener('click', async () => {
    setButtons('busy');
    clearData();
    step = 0;
    const cfg = settings();
    try {
      out.state.textContent = 'Loading the data…';
      const assets = await loadAssets(app);
      out.state.textContent = 'Building the session (compiling the plans)…';
      await freeSession();
      session = await app.gpu(() => wd.Session.create('obow', cfg, assets));
      const info = session.describe();
      out.info.textContent = `${info.model} (${info.params.toLocaleString('en-US')} parameters), vocabularies on stages ` +
        `${info.levels.join(', ')} of ${cfg.words} words each; ${info.dispatches_per_step} GPU dispatches per step; ` +
        `${info.train_images} training images (labels unused); ${$('#adapter').textContent}.`;
      makePlot();
    } catch (e) {
      await freeSession().catch(() => {});
      showError(e, 'Could not build the OBoW session');
      out.state.textContent = 'Could not build the session.';
      setButtons('idle');
      return;
    }
    startLoop();
  });

  btn.stop.addEventListener('click', () => {
    running = false;
    btn.stop.disabled = true;
    out.state.textContent = 'Stopping…';
  });

  btn.resume.addEventListener('click', () => startLoop());

  btn.reset.addEventListener('click', async () => {
    running = false;
    setButtons('busy');
    if (loop) await loop;
    await freeSession();
    clearData();
    plot = null;
    $('#obow-loss-chart', panel).textContent = '';
    out.info.textContent = '';
    out.state.textContent = 'Ready.';
    window.__obow = undefined;
    setButtons('idle');
  });

  clearData();
  setButtons('busy');
  loadAssets(app).then(() => {
    out.state.textContent = 'Ready.';
    setButtons('idle');
  }, (e) => {
    showError(e, 'OBoW');
    out.state.textContent = 'The data could not be loaded.';
  });
}

// ---------------------------------------------------------------- try it

function mountTry(panel, app) {
  const canvas = $('#try-canvas', panel);
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const state = $('#try-state', panel);
  let fallback = null; // an untrained student with the teacher, until the Distil tab trains one
  let fallbackStudent = null;
  let classes = null;

  const clear = () => {
    g.fillStyle = '#000';
    g.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();

  app.releaseTry = async () => {
    if (fallback) {
      const f = fallback;
      fallback = null;
      await app.gpu(() => f.free());
    }
  };

  // Called inside app.gpu(...) only: a job holds the session from choosing it to its last call.
  async function session() {
    const d = app.distil;
    if (d && d.sessions.distilled) return { s: d.sessions.distilled, name: `${d.student} (trained in the Distil tab)` };
    const student = $('#distil-settings select[name=student]').value;
    if (!fallback || fallbackStudent !== student) {
      if (fallback) fallback.free();
      fallback = null;
      state.textContent = 'Building the models…';
      const assets = await loadAssets(app);
      fallback = await wd.Session.create('distill', { student, method: 'none', train_limit: 64, test_limit: 64 }, assets);
      fallbackStudent = student;
    }
    return { s: fallback, name: `${student} (untrained: train it in the Distil tab)` };
  }

  function bars(box, probs, label) {
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

  async function predict(args, label) {
    try {
      state.textContent = 'Asking the models…';
      const { p, name } = await app.gpu(async () => {
        const { s, name } = await session();
        if (!classes) classes = await s.query('classes', {});
        return { p: await s.query('predict', args), name };
      });
      $('#try-student-name', panel).textContent = name;
      const teacher = p.teacher ? bars($('#try-teacher', panel), p.teacher, label) : null;
      const student = bars($('#try-student', panel), p.student, label);
      state.textContent = `Teacher: ${teacher || '–'}; student: ${student}.` + (label !== undefined ? ` (It is a ${classes[label]}.)` : '');
      window.__try = { teacher: p.teacher, student: p.student, teacher_class: teacher, student_class: student, label, classes };
    } catch (e) {
      showError(e, 'Try it');
      state.textContent = 'Could not predict.';
    }
  }

  async function show(index) {
    try {
      const smp = await app.gpu(async () => (await session()).s.query('sample', { index }));
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
      await predict({ index }, smp.label);
    } catch (e) {
      showError(e, 'Try it');
    }
  }

  /** The drawing as 28x28 grey values in [0, 1] (the mean of each 10x10 block). */
  function pixels(n = 28) {
    const img = g.getImageData(0, 0, canvas.width, canvas.height).data;
    const k = canvas.width / n;
    const out = new Array(n * n).fill(0);
    for (let y = 0; y < canvas.height; y++) {
      for (let x = 0; x < canvas.width; x++) out[Math.floor(y / k) * n + Math.floor(x / k)] += img[(y * canvas.width + x) * 4];
    }
    return out.map((v) => v / (k * k * 255));
  }

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
    predict({ pixels: pixels() });
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointerleave', end);

  $('#try-clear', panel).addEventListener('click', () => {
    clear();
    $('#try-teacher', panel).textContent = '';
    $('#try-student', panel).textContent = '';
    state.textContent = '\u00a0';
  });
  $('#try-pick', panel).addEventListener('click', () => show(parseInt($('#try-index', panel).value, 10) || 0));
  $('#try-sample', panel).addEventListener('click', () => {
    const i = Math.floor(Math.random() * 1000);
    $('#try-index', panel).value = String(i);
    show(i);
  });
}

// ---------------------------------------------------------------- start

function initOptions() {
  return query.has('matmul') ? { matmul: query.get('matmul') } : {};
}

async function main() {
  try {
    await initWasm();
  } catch (e) {
    showError(e, 'Could not load the WebAssembly module (was web/build run?)');
    window.__status = 'error';
    return;
  }
  $('#version').textContent = wd.version();
  const app = { gpu: makeQueue() };
  try {
    app.info = await wd.init(initOptions());
    window.__info = app.info;
  } catch (e) {
    if (e && (e.name === 'WebGpuUnavailable' || e.name === 'NoAdapterError')) {
      showNoWebGpu(e);
      window.__status = 'nowebgpu';
    } else {
      showError(e, 'Could not open the GPU');
      $('#adapter').textContent = 'The GPU could not be opened.';
      window.__status = 'error';
    }
    return;
  }
  $('#adapter').textContent = `GPU: ${app.info.name} (${app.info.backend}${app.info.software ? ', software' : ''})`;
  buildTabs(app);
  window.__status = 'ready';
}

main();
