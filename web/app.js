// The demo page: loads the wasm build of the library, opens the GPU, runs the self-test and
// drives training sessions. Tabs live in TABS below; see web/README.md for adding one.
//
// Hooks for the browser tests (web/test.mjs): window.__status ('loading' | 'ready' |
// 'nowebgpu' | 'error'), window.__selftest (the self-test report, or { error }),
// window.__result (set when a training run reaches its step limit), window.__errors,
// window.__info (what init() said about the adapter).
// Query parameters: ?steps=N (stop after N steps), ?chunk=K (steps per step() call, fixed),
// ?matmul=tiled|register (kernel override), #train (open a tab).

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

// Each tab: { id, title, template (id of a <template>), mount(panel, app) }. A tab appears
// only when it has something real to show. The Distil, OBoW and "Try it" tabs register here
// once their sessions exist in the library (Session.create('distil', ...) and so on).
const TABS = [
  { id: 'overview', title: 'Overview', template: 'tpl-overview', mount: mountOverview },
  { id: 'train', title: 'Train an MLP', template: 'tpl-train', mount: mountTrain },
];

function buildTabs(app) {
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
  const app = {};
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
