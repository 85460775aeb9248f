// Errors shown on the page (the #error box) and collected for the browser tests
// (window.__errors), and the notice for browsers without WebGPU.

import { $ } from './dom.js';
import { wd } from './wasm.js';

window.__errors = [];

export function describeError(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
    return `${name}${e.message}`;
  }
  return String(e);
}

/** What to do about an error, where its kind says (null otherwise). */
function advice(e) {
  const m = describeError(e);
  if (/device was lost/.test(m)) return null; // the device-lost notice says it
  if (e && e.name === 'TooLargeError') {
    return 'This GPU\'s limits are too small for the chosen settings: pick a smaller batch, a smaller student or ' +
      'fewer / smaller images (the adapter\'s limits are on the Overview tab).';
  }
  if (e && e.name === 'GpuError' && /out of memory|OutOfMemory/i.test(m)) {
    return 'The GPU ran out of memory: close other GPU-heavy tabs or pick a smaller batch or student.';
  }
  return null;
}

/** Shows that the GPU device is gone (a driver reset, the GPU removed, the browser reclaiming
 * it): nothing on it can be used again until the page is reloaded. */
export function showDeviceLost(msg) {
  const box = $('#devicelost');
  if (!box.hidden) return;
  $('#devicelost-detail').textContent = msg;
  box.hidden = false;
  window.__status = 'devicelost';
}

export function showError(e, what) {
  const msg = (what ? `${what}: ` : '') + describeError(e);
  window.__errors.push(msg);
  console.error(msg);
  if (/device was lost/.test(msg)) showDeviceLost(msg);
  else if (e && e.name === 'GpuError') {
    // The browser reports a lost device a moment after the call that failed because of it.
    setTimeout(() => {
      const why = wd.deviceLost && wd.deviceLost();
      if (why) showDeviceLost(`the GPU device was lost (${why}); the failed call: ${msg}`);
    }, 200);
  }
  const box = $('#error');
  const p = document.createElement('p');
  p.textContent = msg;
  box.append(p);
  const tip = advice(e);
  if (tip) box.append(Object.assign(document.createElement('p'), { className: 'advice', textContent: tip }));
  box.hidden = false;
}

window.addEventListener('error', (ev) => showError(ev.error || ev.message, 'Unexpected error'));
window.addEventListener('unhandledrejection', (ev) => showError(ev.reason, 'Unexpected error'));

export function showNoWebGpu(e) {
  $('#nowebgpu-detail').textContent = e.message;
  $('#nowebgpu').hidden = false;
  $('#adapter').textContent = 'No WebGPU adapter.';
}
