// DOM helpers. Text always goes in as text nodes, never as HTML, so nothing a cabinet or
// an operator typed can become markup.

/** h('a', {href: '/x', class: 'y'}, 'text', child…) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the console (handled by the router, no page load). */
export function link(href, ...children) {
  return h('a', { href: `/console${href}`, 'data-nav': true }, ...children);
}

const STATE_CLASS = {
  online: 'ok', offline: 'bad', never: 'plain',
  assigned: 'info', deposited: 'info', ready: 'ok', picked_up: 'plain', expired: 'warn', returned: 'plain',
  cancelled: 'plain', created: 'plain',
  running: 'info', paused: 'warn', awaiting_approval: 'warn', aborted: 'bad', completed: 'ok',
  open: 'bad', acknowledged: 'plain', deliver: 'info', collect: 'warn',
};

export function badge(state, text) {
  return h('span', { class: `badge ${STATE_CLASS[state] || 'plain'}` }, text || state.replaceAll('_', ' '));
}

export function presenceBadge(c) {
  if (c.online) return badge('online');
  if (!c.last_seen_at) return badge('never', 'never seen');
  return badge('offline');
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h('time', { datetime: iso, title: d.toLocaleString() }, ago(d));
}

export function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < -60) return `in ${span(-s)}`;
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return d.toLocaleDateString();
}

function span(s) {
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

/** A table; `columns` are [heading, row => cell, {num: bool, narrow: bool}]. */
export function table(caption, columns, rows, { empty = 'Nothing to show.', rowAttrs } = {}) {
  const thead = h('thead', {}, h('tr', {}, columns.map(([title, , o = {}]) =>
    h('th', { scope: 'col', class: cls(o) }, title))));
  const tbody = h('tbody');
  for (const r of rows) tbody.append(tableRow(columns, r, rowAttrs));
  if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, empty)));
  return h('div', { class: 'table-wrap' }, h('table', {}, h('caption', { class: 'sr-only' }, caption), thead, tbody));
}

export function tableRow(columns, r, rowAttrs) {
  return h('tr', rowAttrs ? rowAttrs(r) : {}, columns.map(([, cell, o = {}]) => h('td', { class: cls(o) }, cell(r))));
}

function cls(o) {
  return [o.num ? 'num' : '', o.narrow ? 'hide-narrow' : ''].join(' ').trim() || undefined;
}

/** A labelled form field; the label is tied to the control by id. */
let fieldSeq = 0;
export function field(labelText, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  const parts = [h('label', { for: id }, labelText), control];
  if (hint) {
    const hid = `${id}-hint`;
    control.setAttribute('aria-describedby', hid);
    parts.push(h('small', { id: hid, class: 'muted' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function select(name, options, value) {
  return h('select', { name }, options.map(([v, t]) => h('option', { value: v, selected: v === value }, t)));
}

export function toast(message) {
  const box = document.getElementById('toast');
  const p = h('p', {}, message);
  box.append(p);
  setTimeout(() => p.remove(), 5000);
}

export function errorBox(e) {
  return h('p', { class: 'error', role: 'alert' }, e.message || String(e));
}

/** Runs `fn` at most once per `ms`, trailing. */
export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export function heading(text) {
  document.title = `${text} · Lockerfleet`;
  return h('h1', {}, text);
}
