// Fleet overview: counts by state, open alarms, cabinets by region and tenant, firmware
// in use, and a map of where cabinets stand (cells coloured by their offline share).
// One small aggregate from the server however large the fleet; refreshed when live
// events say something changed.

import { api } from '../api.js';
import { h, fill, link, table, heading, debounce } from '../ui.js';
import * as live from '../live.js';

export async function render(main, ctx) {
  const body = h('div');
  fill(main, heading('Fleet overview'), body);
  const load = async () => draw(body, await api('/fleet/summary'), ctx);
  await load();
  // A burst of changes (a region losing power) costs one reload every few seconds.
  const again = debounce(() => load().catch(() => {}), 3000);
  const offs = ['presence', 'alarm', 'alarm_acknowledged', 'lagged'].map(kind => live.on(kind, again));
  return () => offs.forEach(off => off());
}

function card(label, n, kind, href) {
  const inner = [h('span', { class: 'n' }, n.toLocaleString()), h('span', { class: 'l' }, label)];
  return h('div', { class: `card ${kind || ''}` }, href ? link(href, ...inner) : inner);
}

function draw(body, s, ctx) {
  const c = s.cabinets;
  const groups = (obj, name) => Object.entries(obj).map(([k, v]) => ({ key: k || `(no ${name})`, raw: k, ...v }));
  const regionCols = [
    ['Region', r => r.raw ? link(`/cabinets?tag=${encodeURIComponent(`region:${r.raw}`)}`, r.key) : r.key],
    ['Cabinets', r => r.total.toLocaleString(), { num: true }],
    ['Online', r => r.online.toLocaleString(), { num: true }],
    ['Offline', r => r.offline.toLocaleString(), { num: true }],
  ];
  const tenantCols = [
    ['Tenant', r => r.key],
    ['Cabinets', r => r.total.toLocaleString(), { num: true }],
    ['Online', r => r.online.toLocaleString(), { num: true }],
    ['Offline', r => r.offline.toLocaleString(), { num: true }],
  ];
  const fw = Object.entries(s.by_firmware).map(([k, n]) => ({ k: k || '(never connected)', raw: k, n }))
    .sort((a, b) => b.n - a.n);
  const canvas = h('canvas', { class: 'map', role: 'img', width: 900, height: 260,
    'aria-label': `Map of ${c.total - s.unplaced} placed cabinets in ${s.map.length} areas; red areas have cabinets offline.` });
  fill(body,
    h('section', { class: 'cards', 'aria-label': 'Cabinet counts' },
      card('Cabinets', c.total, '', '/cabinets'),
      card('Online', c.online, 'ok', '/cabinets?state=online'),
      card('Offline', c.offline, c.offline ? 'bad' : '', '/cabinets?state=offline'),
      card('Never seen', c.never_seen, ''),
      card('Open alarms', s.open_alarms, s.open_alarms ? 'bad' : '', ctx.can('read_cabinets') ? '/alarms' : null)),
    h('div', { class: 'cols' },
      h('section', { class: 'panel' }, h('h2', {}, 'Map'), canvas,
        h('p', { class: 'legend' }, `Each dot is a ${s.cell_deg}° square; its size grows with the cabinets in it, red when some are offline. ${s.unplaced} cabinets have no location.`)),
      h('section', { class: 'panel' }, h('h2', {}, 'By region'),
        table('Cabinets by region', regionCols, groups(s.by_region, 'region').sort((a, b) => b.offline - a.offline || b.total - a.total)))),
    h('div', { class: 'cols' },
      Object.keys(s.by_tenant).length > 1 || !ctx.me.tenant
        ? h('section', { class: 'panel' }, h('h2', {}, 'By tenant'), table('Cabinets by tenant', tenantCols, groups(s.by_tenant, 'tenant')))
        : null,
      h('section', { class: 'panel' }, h('h2', {}, 'Firmware'),
        table('Firmware versions', [
          ['Version', r => r.raw ? link(`/cabinets?firmware=${encodeURIComponent(r.raw)}`, r.k) : r.k],
          ['Cabinets', r => r.n.toLocaleString(), { num: true }],
        ], fw))));
  drawMap(canvas, s);
}

function drawMap(canvas, s) {
  const g = canvas.getContext('2d');
  if (!g) return;
  // Draw at the size the page gives the canvas, so dots stay round.
  const ratio = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || 900, H = canvas.clientHeight || 260;
  canvas.width = Math.round(W * ratio);
  canvas.height = Math.round(H * ratio);
  g.scale(ratio, ratio);
  g.clearRect(0, 0, W, H);
  if (!s.map.length) {
    g.fillStyle = '#4b5563';
    g.font = '16px system-ui';
    g.fillText('No cabinet has a location yet.', 20, 30);
    return;
  }
  let [minLat, maxLat, minLon, maxLon] = [90, -90, 180, -180];
  for (const m of s.map) {
    minLat = Math.min(minLat, m.lat); maxLat = Math.max(maxLat, m.lat + s.cell_deg);
    minLon = Math.min(minLon, m.lon); maxLon = Math.max(maxLon, m.lon + s.cell_deg);
  }
  const pad = 24;
  const spanLon = Math.max(maxLon - minLon, 1), spanLat = Math.max(maxLat - minLat, 1);
  const scale = Math.min((W - 2 * pad) / spanLon, (H - 2 * pad) / spanLat);
  const max = Math.max(...s.map.map(m => m.total));
  for (const m of s.map) {
    const x = pad + (m.lon + s.cell_deg / 2 - minLon) * scale;
    const y = H - pad - (m.lat + s.cell_deg / 2 - minLat) * scale;
    const r = 4 + 14 * Math.sqrt(m.total / max);
    g.beginPath();
    g.arc(x, y, r, 0, 2 * Math.PI);
    g.fillStyle = m.offline ? `rgba(185, 28, 28, ${0.35 + 0.65 * (m.offline / m.total)})` : 'rgba(22, 101, 52, 0.7)';
    g.fill();
  }
}
