// DOM and number helpers shared by the tabs.

export const $ = (sel, root = document) => root.querySelector(sel);

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/** The elements of a panel by selector: { name: '#id', ... } -> { name: Element, ... }. */
export function elements(panel, selectors) {
  return Object.fromEntries(Object.entries(selectors).map(([k, sel]) => [k, $(sel, panel)]));
}

/** Shows '–' (no value yet) in out[k] for each of keys. */
export function dash(out, keys) {
  for (const k of keys) out[k].textContent = '–';
}

export function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toPrecision(digits);
}

/** An accuracy in [0, 1] as a percentage with one decimal: '87.5%'. */
export const percent = (x) => `${(x * 100).toFixed(1)}%`;

/** A form field's value as an integer or a float. */
export const intValue = (field) => parseInt(field.value, 10);
export const floatValue = (field) => parseFloat(field.value);

/** Let the browser handle input and paint before the next piece of work. */
export const yieldToBrowser = () => new Promise((resolve) => setTimeout(resolve, 0));
