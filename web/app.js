// The demo page's entry (an ES module): loads the wasm build of the library, opens the GPU and
// mounts the tabs (web/js/*.js, one module per tab; see web/README.md for adding one).
//
// Hooks for the browser tests (web/test.mjs): window.__status ('loading' | 'ready' |
// 'nowebgpu' | 'error' | 'devicelost'), window.__selftest (the self-test report, or { error }),
// window.__result (set when a training run reaches its step limit), window.__errors,
// window.__info (what init() said about the adapter), window.__distil (set when a Distil run
// reaches its step count), window.__obow (set when an OBoW run reaches its step count, after
// its probe and word grid), window.__try (the last "Try it" predictions), window.__yours (set
// when a "Your data" run reaches its step count).
// Query parameters: ?steps=N (stop after N steps), ?chunk=K (steps per step() call, fixed),
// ?matmul=tiled|tiled-wide|tiled64|register|register-scalar (kernel override),
// ?max_binding_mib=N (a device with storage bindings of at most N MiB: a small GPU's limits),
// #train (open a tab); for the Distil tab:
// ?dchunk=K (steps per step() call, fixed), ?eval_ms=T (held-out evaluation every T ms of
// training; default 4000), ?cka_images=N (test images for CKA; default 128); for the OBoW tab:
// ?ochunk=K (steps per step() call), ?probe_train=N, ?probe_test=N, ?probe_epochs=N (the
// linear probe's budget; default 1000, 500, 10), ?words_shown=N, ?word_images=N (the word
// grid: words drawn, test images searched; default 8, 300).

import { $ } from './js/dom.js';
import { showError, showNoWebGpu } from './js/errors.js';
import { mountDistil } from './js/distil.js';
import { mountObow } from './js/obow.js';
import { mountOverview } from './js/overview.js';
import { query } from './js/params.js';
import { buildTabs } from './js/tabs.js';
import { mountTrain } from './js/train.js';
import { mountTry } from './js/tryit.js';
import { mountYours } from './js/yours.js';
import { initWasm, makeGpuQueue, wd } from './js/wasm.js';

window.__status = 'loading';

// Each tab: { id, title, template (id of a <template>), mount(panel, app), kind (the session
// kind it needs; the tab appears only when the library has it) }. app: { gpu (the GPU queue),
// info (the adapter), assets (loadAssets' cache), distil (the Distil tab's sessions, for Try
// it), releaseTry (frees Try it's own session) }.
const TABS = [
  { id: 'overview', title: 'Overview', template: 'tpl-overview', mount: mountOverview },
  { id: 'distil', title: 'Distil', template: 'tpl-distil', mount: mountDistil, kind: 'distill' },
  { id: 'obow', title: 'OBoW', template: 'tpl-obow', mount: mountObow, kind: 'obow' },
  { id: 'try', title: 'Try it', template: 'tpl-try', mount: mountTry, kind: 'distill' },
  { id: 'yours', title: 'Your data', template: 'tpl-yours', mount: mountYours, kind: 'distill' },
  { id: 'train', title: 'Train an MLP', template: 'tpl-train', mount: mountTrain, kind: 'mlp' },
];

/** Opens the GPU; on failure shows why (no WebGPU, or an error) and sets window.__status. */
async function openGpu() {
  try {
    const options = {};
    if (query.has('matmul')) options.matmul = query.get('matmul');
    // A small GPU's limits on any GPU (and the page's tests of what it says then).
    if (query.has('max_binding_mib')) options.max_binding_mib = parseFloat(query.get('max_binding_mib'));
    return await wd.init(options);
  } catch (e) {
    if (e && (e.name === 'WebGpuUnavailable' || e.name === 'NoAdapterError')) {
      showNoWebGpu(e);
      window.__status = 'nowebgpu';
    } else {
      showError(e, 'Could not open the GPU');
      $('#adapter').textContent = 'The GPU could not be opened.';
      window.__status = 'error';
    }
    return null;
  }
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
  const app = { gpu: makeGpuQueue() };
  app.info = await openGpu();
  if (!app.info) return;
  window.__info = app.info;
  $('#adapter').textContent = `GPU: ${app.info.name} (${app.info.backend}${app.info.software ? ', software' : ''})`;
  buildTabs(app, TABS);
  window.__status = 'ready';
}

main();
