// Cabinet search: text (id or name), state, tag and firmware filters, a page at a time
// from the server (keyset cursor), with the total that matches. The filters live in the
// address, so a filtered list can be bookmarked or shared. Rows update live as cabinets
// go online or offline.

import { api, query } from '../api.js';
import { h, fill, link, table, tableRow, heading, field, select, presenceBadge, when, debounce, errorBox } from '../ui.js';
import * as live from '../live.js';

const PAGE = 50;

export async function render(main, ctx) {
  const params = new URLSearchParams(location.search);
  const q = h('input', { type: 'search', name: 'q', value: params.get('q') || '', placeholder: 'e.g. cab-17 or Hauptbahnhof', autocomplete: 'off' });
  const state = select('state', [['', 'Any state'], ['online', 'Online'], ['offline', 'Offline']], params.get('state') || '');
  const tag = h('input', { type: 'text', name: 'tag', value: params.get('tag') || '', placeholder: 'region:berlin' });
  const firmware = h('input', { type: 'text', name: 'firmware', value: params.get('firmware') || '', placeholder: '1.4.2' });
  // A fleet-wide token may narrow to one tenant; a tenant's token sees only its own anyway.
  const tenant = ctx.me.tenant ? null : h('input', { type: 'text', name: 'tenant', value: params.get('tenant') || '', placeholder: 'all tenants' });
  const count = h('p', { 'aria-live': 'polite', class: 'muted', id: 'cabinet-count' });
  const results = h('div');
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more');
  const form = h('form', { class: 'panel', role: 'search', 'aria-label': 'Find cabinets' },
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, field('Search id or name', q)),
      h('div', {}, field('State', state)),
      h('div', {}, field('Tag', tag)),
      h('div', {}, field('Firmware', firmware)),
      tenant ? h('div', {}, field('Tenant', tenant)) : null,
      h('div', { class: 'submit' }, h('button', { type: 'submit' }, 'Search'))));
  fill(main, heading('Cabinets'), form, count, results, h('p', {}, more));

  const cols = [
    ['Cabinet', c => link(`/cabinets/${encodeURIComponent(c.id)}`, c.id)],
    ['Name', c => c.name, { narrow: true }],
    ['State', c => presenceBadge(c)],
    ['Last seen', c => when(c.last_seen_at)],
    ['Tenant', c => c.tenant, { narrow: true }],
    ['Firmware', c => c.firmware || '—'],
    ['Tags', c => c.tags.join(', ') || '—', { narrow: true }],
  ];
  let next = null;
  let rows = [];
  let seq = 0;
  const filters = () => ({
    q: q.value.trim(), state: state.value, tag: tag.value.trim(), firmware: firmware.value.trim(), tenant: tenant ? tenant.value.trim() : '',
  });

  async function load(append) {
    const mine = ++seq;
    const f = filters();
    if (!append) history.replaceState({}, '', `/console/cabinets${query(f)}`);
    try {
      const page = await api(`/cabinets${query({ ...f, limit: PAGE, after: append ? next : undefined })}`);
      if (mine !== seq) return;
      rows = append ? rows.concat(page.items) : page.items;
      next = page.next || null;
      fill(count, `${page.total.toLocaleString()} cabinet${page.total === 1 ? '' : 's'} match; showing ${rows.length.toLocaleString()}.`);
      fill(results, table('Cabinets', cols, rows, { empty: 'No cabinet matches.', rowAttrs: c => ({ 'data-cabinet': c.id }) }));
      more.hidden = !next;
    } catch (e) {
      if (mine === seq) fill(results, errorBox(e));
    }
  }
  const reload = debounce(() => load(false), 250);
  form.addEventListener('submit', e => { e.preventDefault(); load(false); });
  for (const el of [q, tag, firmware, tenant]) el?.addEventListener('input', reload);
  state.addEventListener('change', () => load(false));
  more.addEventListener('click', () => load(true));
  await load(false);

  const off = live.on('presence', ev => {
    const i = rows.findIndex(c => c.id === ev.cabinet);
    if (i < 0) return;
    rows[i] = { ...rows[i], online: ev.online, last_seen_at: ev.online ? ev.at : rows[i].last_seen_at };
    const tr = results.querySelector(`tr[data-cabinet="${CSS.escape(ev.cabinet)}"]`);
    if (tr) { const fresh = tableRow(cols, rows[i], c => ({ 'data-cabinet': c.id, class: 'fresh' })); tr.replaceWith(fresh); }
  });
  // Missed events (a burst bigger than the stream buffers): read the page again.
  const offLagged = live.on('lagged', () => load(false));
  return () => { off(); offLagged(); };
}
