// One cabinet: what it is and runs, whether it is online, its compartment grid (door
// and occupancy of each, remote open for roles that may operate cabinets), its open
// alarms and recent events. Face templates appear only as a count.

import { api } from '../api.js';
import { h, fill, link, table, heading, presenceBadge, badge, when, toast } from '../ui.js';
import * as live from '../live.js';

export async function render(main, ctx) {
  const id = ctx.params[0];
  const enc = encodeURIComponent(id);
  const [cab, status, events, alarms] = await Promise.all([
    api(`/cabinets/${enc}`),
    api(`/cabinets/${enc}/compartments`),
    api(`/cabinets/${enc}/events?limit=20`),
    api(`/alarms?cabinet=${enc}&state=open&limit=20`),
  ]);
  const state = h('span', { id: 'cabinet-state' }, presenceBadge(cab));
  const grid = h('div');
  const alarmBox = h('div');
  const eventBox = h('div');
  fill(main,
    h('p', {}, link('/cabinets', '← Cabinets')),
    heading(`Cabinet ${cab.id}`),
    h('div', { class: 'cols' },
      h('section', { class: 'panel', 'aria-labelledby': 'facts-h' },
        h('h2', { id: 'facts-h' }, 'State'),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Connection'), h('dd', {}, state),
          h('dt', {}, 'Last seen'), h('dd', {}, when(cab.last_seen_at)),
          cab.online ? null : [h('dt', {}, 'Why offline'), h('dd', { id: 'offline-why' }, whyOffline(cab, status))],
          h('dt', {}, 'Sessions (24 h)'), h('dd', {}, `${status.sessions_24h}${status.sessions_24h > 5 ? ' — it keeps reconnecting' : ''}`),
          h('dt', {}, 'Name'), h('dd', {}, cab.name),
          h('dt', {}, 'Tenant'), h('dd', {}, cab.tenant),
          h('dt', {}, 'Firmware'), h('dd', {}, cab.firmware ? `${cab.firmware} (slot ${cab.slot || '?'})` : 'not reported yet'),
          h('dt', {}, 'Hardware'), h('dd', {}, cab.hardware || '—'),
          h('dt', {}, 'Time zone'), h('dd', {}, cab.timezone),
          h('dt', {}, 'Location'), h('dd', {}, cab.location ? `${cab.location.lat.toFixed(4)}, ${cab.location.lon.toFixed(4)}` : '—'),
          h('dt', {}, 'Tags'), h('dd', {}, cab.tags.length ? cab.tags.join(', ') : '—'),
          h('dt', {}, 'Face templates held'), h('dd', { id: 'templates-held' }, String(status.templates_held)),
          h('dt', {}, 'Desired state'), h('dd', {}, desired(cab.desired)))),
      h('section', { class: 'panel', 'aria-labelledby': 'alarms-h' }, h('h2', { id: 'alarms-h' }, 'Open alarms'), alarmBox)),
    h('section', { class: 'panel', 'aria-labelledby': 'grid-h' },
      h('h2', { id: 'grid-h' }, 'Compartments'),
      h('p', { class: 'legend' }, status.doors_reported_at
        ? ['Doors as of the last heartbeat, ', when(status.doors_reported_at), '.']
        : 'Door states are not known until the cabinet sends a heartbeat.',
        ' Solid blue: holds a parcel. Dashed: reserved for a parcel on its way. Red: door open.'),
      grid),
    h('section', { class: 'panel', 'aria-labelledby': 'events-h' }, h('h2', { id: 'events-h' }, 'Recent events'), eventBox));

  let online = status.online;
  const drawGrid = st => fill(grid, h('ul', { class: 'grid', 'aria-label': 'Compartment grid' },
    st.compartments.map(c => compartment(c, ctx, cab, () => online, refresh))));
  async function refresh() {
    const st = await api(`/cabinets/${enc}/compartments`);
    online = st.online;
    drawGrid(st);
  }
  drawGrid(status);
  drawAlarms(alarmBox, alarms.items, ctx);
  fill(eventBox, table('Recent events', [
    ['When', e => when(e.at)],
    ['Kind', e => e.kind.replaceAll('_', ' ')],
    ['Detail', e => describe(e.detail)],
    ['Seq', e => String(e.seq), { num: true, narrow: true }],
  ], events, { empty: 'No events reported yet.' }));

  const offs = [
    live.on('presence', ev => {
      if (ev.cabinet !== id) return;
      online = ev.online;
      fill(state, presenceBadge({ online: ev.online, last_seen_at: ev.at }));
      refresh().catch(() => {});
    }),
    live.on('alarm', ev => {
      if (ev.cabinet !== id) return;
      api(`/alarms?cabinet=${enc}&state=open&limit=20`).then(a => drawAlarms(alarmBox, a.items, ctx)).catch(() => {});
    }),
    live.on('alarm_acknowledged', ev => {
      if (ev.cabinet !== id) return;
      alarmBox.querySelector(`[data-alarm="${CSS.escape(ev.id)}"]`)?.remove();
    }),
  ];
  return () => offs.forEach(off => off());
}

function whyOffline(cab, status) {
  if (!cab.last_seen_at) return 'It has never connected since it was registered: check its power, network and broker credentials.';
  if (status.offline?.cause === 'will') return ['Its connection dropped (the broker announced its last will) ', when(status.offline.since), '.'];
  if (status.offline?.cause === 'silent') return ['Nothing heard from it for too long; marked offline ', when(status.offline.since), '.'];
  return ['Not connected; last heard from ', when(cab.last_seen_at), '.'];
}

function desired(d) {
  if (!d) return '—';
  const behind = d.parcels_applied < d.parcels_version || d.templates_applied < d.templates_version;
  return [`parcels v${d.parcels_applied}/${d.parcels_version}, templates v${d.templates_applied}/${d.templates_version} `,
    behind ? badge('expired', 'catching up') : badge('ready', 'in step')];
}

function describe(d) {
  if (!d || typeof d !== 'object') return '—';
  if (d.type === 'alarm') return `${d.code}: ${d.detail}`;
  const parts = [];
  if (d.compartment) parts.push(`compartment ${d.compartment}`);
  if (d.parcel) parts.push(`parcel ${String(d.parcel).slice(0, 8)}…`);
  if (d.method) parts.push(`by ${d.method}`);
  if (d.reason) parts.push(d.reason);
  return parts.join(', ') || d.type || '—';
}

function compartment(c, ctx, cab, isOnline, refresh) {
  const p = c.parcel;
  const inside = p && ['deposited', 'ready', 'expired', 'cancelled'].includes(p.state);
  const cls = ['cell', c.door === 'open' ? 'door-open' : '', inside ? 'occupied' : p ? 'reserved' : ''].join(' ');
  const open = ctx.can('operate_cabinets')
    ? h('button', { type: 'button', class: 'secondary', 'aria-label': `Open compartment ${c.id}`,
      onclick: async e => {
        if (!isOnline()) { toast(`Cabinet ${cab.id} is offline; a remote open is not sent.`); return; }
        if (!confirm(`Open compartment ${c.id} of ${cab.id} now? Someone should be standing at the cabinet.`)) return;
        e.target.disabled = true;
        try {
          await api(`/cabinets/${encodeURIComponent(cab.id)}/compartments/${encodeURIComponent(c.id)}/open`, { method: 'POST' });
          toast(`Open sent to ${cab.id} ${c.id}.`);
          setTimeout(() => refresh().catch(() => {}), 1500);
        } catch (err) {
          toast(err.message);
        } finally {
          e.target.disabled = false;
        }
      } }, 'Open')
    : null;
  return h('li', { class: cls, 'data-compartment': c.id },
    h('span', { class: 'id' }, c.id),
    h('span', {}, `size ${c.size.toUpperCase()}${c.low ? ' · low' : ''}`),
    h('span', {}, 'door ', badge(c.door === 'open' ? 'open' : 'plain', c.door)),
    p ? h('span', {}, link(`/parcels/${p.id}`, p.reference), ' ', badge(p.state)) : h('span', { class: 'muted' }, 'empty'),
    open);
}

function drawAlarms(box, items, ctx) {
  if (!items.length) { fill(box, h('p', { class: 'muted' }, 'No open alarms.')); return; }
  fill(box, h('ul', {}, items.map(a => h('li', { 'data-alarm': a.id },
    h('strong', {}, a.code.replaceAll('_', ' ')), ` ${a.detail} · `, when(a.at), ' ',
    ctx.can('acknowledge_alarms') ? h('button', { type: 'button', class: 'quiet', onclick: async e => {
      e.target.disabled = true;
      try {
        await api(`/alarms/${a.id}/acknowledge`, { method: 'POST', body: {} });
        e.target.closest('li').remove();
        toast('Alarm acknowledged.');
      } catch (err) { toast(err.message); e.target.disabled = false; }
    } }, 'Acknowledge') : null))));
}


