// The alarm inbox: every alarm the caller's cabinets raised, newest first, open ones by
// default; acknowledging keeps who and when (and an optional note). New alarms arrive
// live at the top; ones another operator acknowledges leave the open list.

import { api, query } from '../api.js';
import { h, fill, link, table, heading, when, badge, toast, errorBox } from '../ui.js';
import * as live from '../live.js';

export async function render(main, ctx) {
  const params = new URLSearchParams(location.search);
  const state = ['open', 'acknowledged', 'all'].includes(params.get('state')) ? params.get('state') : 'open';
  const box = h('div');
  const count = h('p', { class: 'muted', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show older');
  fill(main, heading('Alarms'),
    h('nav', { class: 'tabs', 'aria-label': 'Alarm state' }, ['open', 'acknowledged', 'all'].map(s =>
      link(`/alarms?state=${s}`, s[0].toUpperCase() + s.slice(1)))),
    count, box, h('p', {}, more));
  main.querySelectorAll('.tabs a').forEach(a => { if (a.href.endsWith(`state=${state}`)) a.setAttribute('aria-current', 'page'); });

  let rows = [];
  let next = null;
  let total = 0;
  const canAck = ctx.can('acknowledge_alarms');
  const cols = [
    ['Raised', a => when(a.at)],
    ['Cabinet', a => link(`/cabinets/${encodeURIComponent(a.cabinet)}`, a.cabinet)],
    ['Alarm', a => h('strong', {}, a.code.replaceAll('_', ' '))],
    ['Detail', a => a.detail || '—'],
    ['Tenant', a => a.tenant, { narrow: true }],
    ['Status', a => a.acknowledged
      ? [badge('acknowledged'), ` by ${a.acknowledged.by} `, when(a.acknowledged.at), a.acknowledged.note ? ` — ${a.acknowledged.note}` : '']
      : canAck ? ackForm(a) : badge('open')],
  ];
  const draw = () => {
    fill(count, `${total.toLocaleString()} ${state === 'all' ? '' : `${state} `}alarm${total === 1 ? '' : 's'}.`);
    fill(box, table('Alarms', cols, rows, { empty: state === 'open' ? 'No open alarms. All quiet.' : 'No alarms.', rowAttrs: a => ({ 'data-alarm': a.id }) }));
    more.hidden = !next;
  };

  function ackForm(a) {
    const note = h('input', { type: 'text', name: 'note', placeholder: 'note (optional)', 'aria-label': `Note for alarm ${a.code} at ${a.cabinet}` });
    const form = h('form', { class: 'row' }, h('div', { class: 'grow' }, note),
      h('button', { type: 'submit', 'aria-label': `Acknowledge ${a.code.replaceAll('_', ' ')} at ${a.cabinet}` }, 'Acknowledge'));
    form.addEventListener('submit', async e => {
      e.preventDefault();
      form.querySelector('button').disabled = true;
      try {
        const done = await api(`/alarms/${a.id}/acknowledge`, { method: 'POST', body: note.value.trim() ? { note: note.value.trim() } : {} });
        settle(done);
        toast(`Acknowledged ${a.code.replaceAll('_', ' ')} at ${a.cabinet}.`);
      } catch (err) {
        toast(err.message);
        form.querySelector('button').disabled = false;
      }
    });
    return form;
  }

  function settle(done) {
    const i = rows.findIndex(r => r.id === done.id);
    if (i < 0) return;
    if (state === 'open') { rows.splice(i, 1); total = Math.max(0, total - 1); } else rows[i] = done;
    draw();
  }

  async function load(append) {
    try {
      const page = await api(`/alarms${query({ state, limit: 50, before: append ? next : undefined })}`);
      rows = append ? rows.concat(page.items) : page.items;
      total = page.total;
      next = page.next || null;
      draw();
    } catch (e) { fill(box, errorBox(e)); }
  }
  more.addEventListener('click', () => load(true));
  await load(false);

  const offs = [
    live.on('alarm', ev => {
      if (state === 'acknowledged' || rows.some(r => r.id === ev.id)) return;
      const a = { id: ev.id, cabinet: ev.cabinet, tenant: ev.tenant, code: ev.code, detail: ev.detail, at: ev.at, received_at: ev.received_at, acknowledged: null };
      rows.unshift(a);
      total += 1;
      draw();
      box.querySelector(`tr[data-alarm="${CSS.escape(a.id)}"]`)?.classList.add('fresh');
    }),
    live.on('lagged', () => load(false)),
    live.on('alarm_acknowledged', ev => {
      const i = rows.findIndex(r => r.id === ev.id);
      if (i < 0 || rows[i].acknowledged) return;
      settle({ ...rows[i], acknowledged: { by: ev.by, at: ev.at, note: null } });
    }),
  ];
  return () => offs.forEach(off => off());
}


