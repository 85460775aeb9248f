// The Overview tab: the GPU adapter's limits and the self-test (window.__selftest).

import { $, el, fmt } from './dom.js';
import { describeError } from './errors.js';
import { wd } from './wasm.js';

export function mountOverview(panel, app) {
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
