// The tab bar: a button and a panel (a copy of the tab's <template>) per tab, #id in the URL.

import { $, el } from './dom.js';
import { wd } from './wasm.js';

/** Mounts the tabs whose session kind the wasm has (all: { id, title, template, mount, kind? })
 * and selects the one the URL's #hash names (or the first). */
export function buildTabs(app, all) {
  const kinds = wd.sessionKinds();
  const tabs = all.filter((t) => !t.kind || kinds.includes(t.kind));
  const nav = $('#tabs');
  const main = $('#panels');
  const buttons = new Map();
  const select = (id) => {
    for (const t of tabs) {
      const on = t.id === id;
      buttons.get(t.id).setAttribute('aria-selected', String(on));
      $(`#panel-${t.id}`).hidden = !on;
    }
  };
  for (const t of tabs) {
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
  select(tabs.some((t) => t.id === wanted) ? wanted : tabs[0].id);
}
