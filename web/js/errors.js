// Errors shown on the page (the #error box) and collected for the browser tests
// (window.__errors), and the notice for browsers without WebGPU.

import { $ } from './dom.js';

window.__errors = [];

export function describeError(e) {
  if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
    const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
    return `${name}${e.message}`;
  }
  return String(e);
}

export function showError(e, what) {
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

export function showNoWebGpu(e) {
  $('#nowebgpu-detail').textContent = e.message;
  $('#nowebgpu').hidden = false;
  $('#adapter').textContent = 'No WebGPU adapter.';
}
