// Parcel search by the sender's reference (prefix), state or cabinet; and one parcel
// with its timeline: every transition, with when, why and who (cabinet, API, sweeper).

import { api, query } from '../api.js';
import { h, fill, link, table, heading, field, select, badge, when, errorBox, debounce } from '../ui.js';

const STATES = ['created', 'assigned', 'deposited', 'ready', 'picked_up', 'expired', 'returned', 'cancelled'];

export async function render(main, ctx) {
  if (ctx.params[0]) return detail(main, ctx.params[0]);
  const params = new URLSearchParams(location.search);
  const ref = h('input', { type: 'search', name: 'reference', value: params.get('reference') || '', placeholder: 'TRK-…', autocomplete: 'off' });
  const state = select('state', [['', 'Any state'], ...STATES.map(s => [s, s.replace('_', ' ')])], params.get('state') || '');
  const cabinet = h('input', { type: 'text', name: 'cabinet', value: params.get('cabinet') || '', placeholder: 'cab-17' });
  const results = h('div');
  const form = h('form', { class: 'panel', role: 'search', 'aria-label': 'Find parcels' },
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, field('Reference', ref, 'The sender\'s tracking number, or its beginning')),
      h('div', {}, field('State', state)),
      h('div', {}, field('Cabinet', cabinet)),
      h('div', { class: 'submit' }, h('button', { type: 'submit' }, 'Search'))));
  fill(main, heading('Parcels'), form, results);
  let seq = 0;
  async function load() {
    const mine = ++seq;
    const f = { reference: ref.value.trim(), state: state.value, cabinet: cabinet.value.trim() };
    history.replaceState({}, '', `/console/parcels${query(f)}`);
    try {
      const page = await api(`/parcels${query({ ...f, sort: '-created', limit: 50 })}`);
      if (mine !== seq) return;
      fill(results, table('Parcels', [
        ['Reference', p => link(`/parcels/${p.id}`, p.reference)],
        ['State', p => badge(p.state)],
        ['Cabinet', p => p.cabinet ? link(`/cabinets/${encodeURIComponent(p.cabinet)}`, `${p.cabinet} ${p.compartment || ''}`) : '—'],
        ['Courier', p => p.courier || '—', { narrow: true }],
        ['Deadline', p => when(p.deadline), { narrow: true }],
        ['Updated', p => when(p.updated_at)],
      ], page.items, { empty: 'No parcel matches.' }));
    } catch (e) { if (mine === seq) fill(results, errorBox(e)); }
  }
  form.addEventListener('submit', e => { e.preventDefault(); load(); });
  ref.addEventListener('input', debounce(load, 250));
  state.addEventListener('change', load);
  await load();
}

async function detail(main, id) {
  const [p, tl] = await Promise.all([api(`/parcels/${encodeURIComponent(id)}`), api(`/parcels/${encodeURIComponent(id)}/events`)]);
  fill(main,
    h('p', {}, link('/parcels', '← Parcels')),
    heading(`Parcel ${p.reference}`),
    h('div', { class: 'cols' },
      h('section', { class: 'panel' }, h('h2', {}, 'Now'),
        h('dl', { class: 'facts' },
          h('dt', {}, 'State'), h('dd', {}, badge(p.state)),
          h('dt', {}, 'Cabinet'), h('dd', {}, p.cabinet ? link(`/cabinets/${encodeURIComponent(p.cabinet)}`, p.cabinet) : '—'),
          h('dt', {}, 'Compartment'), h('dd', {}, p.compartment || '—'),
          h('dt', {}, 'Size'), h('dd', {}, `${p.size.toUpperCase()}${p.need_low ? ', low compartment' : ''}`),
          h('dt', {}, 'Courier'), h('dd', {}, p.courier ? link(`/couriers/${encodeURIComponent(p.courier)}`, p.courier) : '—'),
          h('dt', {}, 'Deadline'), h('dd', {}, p.deadline ? [when(p.deadline), p.extended ? ' (extended)' : ''] : '—'),
          h('dt', {}, 'Parcel id'), h('dd', { class: 'mono' }, p.id))),
      h('section', { class: 'panel', 'aria-labelledby': 'tl-h' }, h('h2', { id: 'tl-h' }, 'Timeline'),
        h('ol', { class: 'timeline' }, tl.items.map(e => h('li', {},
          h('strong', {}, e.kind.replaceAll('_', ' ')), ' ',
          e.from ? [`${e.from.replace('_', ' ')} → `, badge(e.to), ' '] : '',
          h('span', { class: 'muted' }, `by ${e.source} · `), when(e.at)))))));
}
