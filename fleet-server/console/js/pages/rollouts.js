// Rollouts: the list with live progress per wave; a form to start one (artifact, target,
// waves, thresholds, maintenance window); one rollout with its waves, failures, cabinets
// and the operator's commands (pause, resume, approve, retry failed, abort). Starting and
// steering need a fleet-wide token allowed to manage releases; others only watch.

import { api, query } from '../api.js';
import { h, fill, link, table, heading, field, select, badge, when, toast, errorBox } from '../ui.js';
import * as live from '../live.js';

/** Cabinets listed at once on a rollout's page. */
const CABINET_ROWS = 50;
const FAILED = ['failed', 'rejected', 'timed_out', 'silent', 'regressed', 'rolled_back'];
// The server's default thresholds (docs/ota.md); the form starts from them.
const THRESHOLDS = {
  failed: [5, 'pause'], rejected: [1, 'abort'], timed_out: [10, 'pause'],
  silent: [2, 'abort'], regressed: [5, 'pause'], rolled_back: [5, 'abort'],
};

export async function render(main, ctx) {
  return ctx.params[0] ? detail(main, ctx, ctx.params[0]) : overview(main, ctx);
}

function phaseOf(progress) {
  const p = progress.phase || {};
  return { name: p.phase || 'running', wave: p.wave, reason: p.reason, shortWave: p.short_wave === true };
}

function bar(states, size) {
  const total = Math.max(size, 1);
  const parts = Object.entries(states).map(([s, n]) => {
    const kind = s === 'confirmed' ? 's-confirmed' : FAILED.includes(s) ? `s-${s}` : s === 'pending' ? 's-pending' : 's-other';
    const seg = h('span', { class: kind, title: `${s}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    return seg;
  });
  const confirmed = states.confirmed || 0;
  return h('div', { class: 'bar', role: 'img', 'aria-label': `${confirmed} of ${size} confirmed` }, parts);
}

function waveText(w) {
  return Object.entries(w.states).map(([s, n]) => `${s.replaceAll('_', ' ')} ${n}`).join(', ') || 'none yet';
}

async function overview(main, ctx) {
  const box = h('div');
  const manage = ctx.can('manage_releases');
  fill(main, heading('Rollouts'), manage ? await createForm(ctx) : h('p', { class: 'muted' }, 'Your role may watch rollouts; starting and steering them needs a fleet-wide release manager.'), box);
  let rows = await api('/rollouts');
  const cols = [
    ['Rollout', r => link(`/rollouts/${r.id}`, r.name)],
    ['Phase', r => { const p = phaseOf(r.progress); return [badge(p.name), p.wave !== undefined ? ` wave ${p.wave + 1}` : '']; }],
    ['Progress', r => h('div', {}, r.progress.waves.map((w, i) => h('div', { class: 'row' },
      h('span', { class: 'legend' }, `Wave ${i + 1}`), bar(w.states, w.size))))],
    ['Created', r => when(r.created_at), { narrow: true }],
  ];
  const draw = () => fill(box, h('h2', {}, 'All rollouts'), table('Rollouts', cols, rows, { empty: 'No rollout yet.', rowAttrs: r => ({ 'data-rollout': r.id }) }));
  draw();
  return live.on('rollout', ev => {
    const i = rows.findIndex(r => r.id === ev.id);
    if (i >= 0) { rows[i] = { ...rows[i], progress: ev.progress }; draw(); }
    else api('/rollouts').then(r => { rows = r; draw(); }).catch(() => {});
  });
}

async function createForm(ctx) {
  const artifacts = (await api('/artifacts')).filter(a => a.uploaded);
  const name = h('input', { type: 'text', name: 'name', required: true, placeholder: 'edge-agent 1.5.0 to Berlin' });
  const artifact = select('artifact', artifacts.length
    ? artifacts.map(a => [a.id, `${a.name} ${a.version} (${a.hardware.join(', ')})`])
    : [['', 'No uploaded release yet']], artifacts[0]?.id || '');
  const tags = h('input', { type: 'text', name: 'tags', placeholder: 'region:berlin, indoor' });
  const tenant = h('input', { type: 'text', name: 'tenant', placeholder: 'any tenant' });
  const cabinets = h('input', { type: 'text', name: 'cabinets', placeholder: 'all matching cabinets' });
  const waves = h('input', { type: 'text', name: 'waves', value: '1, 10, 50, 100', required: true });
  const success = h('input', { type: 'number', name: 'success', value: '95', min: '1', max: '100', step: '1' });
  const soak = h('input', { type: 'number', name: 'soak', value: '15', min: '0', step: '1' });
  const rate = h('input', { type: 'number', name: 'rate', value: '100', min: '1', step: '1' });
  const winStart = h('input', { type: 'time', name: 'window_start' });
  const winEnd = h('input', { type: 'time', name: 'window_end' });
  const approval = h('input', { type: 'checkbox', name: 'manual_approval' });
  const includeNew = h('input', { type: 'checkbox', name: 'include_new' });
  const thresholds = Object.entries(THRESHOLDS).map(([kind, [share, action]]) => ({
    kind,
    share: h('input', { type: 'number', name: `threshold_${kind}`, value: String(share), min: '0', max: '100', step: '0.5' }),
    action: select(`action_${kind}`, [['pause', 'pause'], ['abort', 'abort']], action),
  }));
  const msg = h('div', { 'aria-live': 'assertive' });
  const form = h('form', { class: 'panel', 'aria-labelledby': 'new-rollout-h' },
    h('h2', { id: 'new-rollout-h' }, 'Start a rollout'),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, field('Name', name)),
      h('div', { class: 'grow' }, field('Release', artifact))),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, field('Target tags', tags, 'Cabinets must carry all of them')),
      h('div', {}, field('Tenant', tenant)),
      h('div', { class: 'grow' }, field('Cabinet ids', cabinets, 'Comma-separated; empty for all that match'))),
    h('div', { class: 'row' },
      h('div', { class: 'grow' }, field('Waves (cumulative %)', waves, 'e.g. 1, 10, 50, 100')),
      h('div', {}, field('Wave success (%)', success)),
      h('div', {}, field('Soak (min)', soak)),
      h('div', {}, field('Offers per minute', rate))),
    h('fieldset', {}, h('legend', {}, 'Failure thresholds (share of a wave)'),
      h('div', { class: 'row' }, thresholds.map(t => h('div', { class: 'threshold' },
        field(`${t.kind.replaceAll('_', ' ')} (%)`, t.share), field('then', t.action))))),
    h('div', { class: 'row' },
      h('div', {}, field('Install window from', winStart, 'Cabinet local time; empty for any time')),
      h('div', {}, field('until', winEnd)),
      h('div', {}, h('label', { class: 'check' }, approval, 'Approve each wave by hand')),
      h('div', {}, h('label', { class: 'check' }, includeNew, 'Cabinets registered later join'))),
    h('p', {}, h('button', { type: 'submit', disabled: !artifacts.length }, 'Start rollout')),
    msg);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    const list = s => s.split(',').map(x => x.trim()).filter(Boolean);
    const minutes = v => { const [hh, mm] = v.split(':').map(Number); return hh * 60 + mm; };
    try {
      const waveSizes = list(waves.value).map(w => {
        const n = Number(w);
        if (!Number.isFinite(n) || n <= 0 || n > 100) throw new Error(`Waves: "${w}" is not a percentage between 0 and 100.`);
        return { percent: n };
      });
      const plan = {
        waves: waveSizes,
        success_share: Number(success.value) / 100,
        soak_s: Math.round(Number(soak.value) * 60),
        rate: { per_minute: Number(rate.value), growth: 1, max_per_minute: Number(rate.value) },
        manual_approval: approval.checked,
        thresholds: Object.fromEntries(thresholds.map(t => [t.kind, { share: Number(t.share.value) / 100, action: t.action.value }])),
      };
      if (winStart.value && winEnd.value) plan.window = { start_min: minutes(winStart.value), end_min: minutes(winEnd.value) };
      const target = { tags: list(tags.value), cabinets: list(cabinets.value) };
      if (tenant.value.trim()) target.tenant = tenant.value.trim();
      const r = await api('/rollouts', { method: 'POST', body: { name: name.value.trim(), artifact: artifact.value, target, plan, include_new: includeNew.checked } });
      toast(`Rollout "${r.name}" started.`);
      ctx.navigate(`/rollouts/${r.id}`);
    } catch (err) {
      fill(msg, errorBox(err));
    }
  });
  return form;
}

async function detail(main, ctx, id) {
  let r = await api(`/rollouts/${encodeURIComponent(id)}`);
  const manage = ctx.can('manage_releases');
  const head = h('div');
  const waves = h('div');
  const failures = h('div');
  const cabBox = h('div');
  const stateSel = select('state', [['', 'All states'], ['pending', 'pending'], ['offered', 'offered'], ['downloading', 'downloading'],
    ['confirmed', 'confirmed'], ['retry_wait', 'retry wait'], ...FAILED.map(f => [f, f.replaceAll('_', ' ')])], '');
  fill(main, h('p', {}, link('/rollouts', '← Rollouts')), heading(`Rollout ${r.name}`), head,
    h('section', { class: 'panel', 'aria-labelledby': 'waves-h' }, h('h2', { id: 'waves-h' }, 'Waves'), waves),
    h('section', { class: 'panel', 'aria-labelledby': 'fail-h' }, h('h2', { id: 'fail-h' }, 'Failures'), failures),
    h('section', { class: 'panel', 'aria-labelledby': 'cabs-h' }, h('h2', { id: 'cabs-h' }, 'Cabinets'),
      h('div', { class: 'row' }, h('div', {}, field('Show', stateSel))), cabBox));

  async function command(action) {
    try {
      await api(`/rollouts/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
      toast(`${action} sent; the conductor applies it within a second or two.`);
    } catch (err) { toast(err.message); }
  }
  function draw() {
    const p = phaseOf(r.progress);
    const buttons = [];
    if (manage) {
      if (p.name === 'running' || p.name === 'awaiting_approval') buttons.push(h('button', { type: 'button', onclick: () => command('pause') }, 'Pause'));
      if (p.name === 'paused') buttons.push(h('button', { type: 'button', onclick: () => command('resume') }, 'Resume'));
      if (p.name === 'awaiting_approval') buttons.push(h('button', { type: 'button', onclick: () => command('approve') }, 'Approve next wave'));
      // A wave that settled short of its success share: accept it as it is and go on.
      if (p.name === 'paused' && p.shortWave) buttons.push(h('button', { type: 'button', onclick: () => { if (confirm('Go on with this wave as it is? The next wave starts after the soak.')) command('approve'); } }, 'Accept wave and go on'));
      if (Object.keys(r.progress.failures).length && p.name !== 'aborted' && p.name !== 'completed') buttons.push(h('button', { type: 'button', class: 'secondary', onclick: () => command('retry-failed') }, 'Retry failed'));
      if (p.name !== 'aborted' && p.name !== 'completed') buttons.push(h('button', { type: 'button', class: 'danger', onclick: () => { if (confirm('Abort this rollout? Offers not yet installed are withdrawn.')) command('abort'); } }, 'Abort'));
    }
    fill(head, h('section', { class: 'panel' },
      h('dl', { class: 'facts' },
        h('dt', {}, 'Phase'), h('dd', { id: 'rollout-phase' }, badge(p.name), p.wave !== undefined ? ` wave ${p.wave + 1} of ${r.progress.waves.length}` : '', p.reason ? ` — ${p.reason}` : ''),
        h('dt', {}, 'Target'), h('dd', {}, targetText(r.target)),
        h('dt', {}, 'Window'), h('dd', {}, r.plan.window ? `${hhmm(r.plan.window.start_min)}–${hhmm(r.plan.window.end_min)} local` : 'any time'),
        h('dt', {}, 'Conducted by'), h('dd', {}, r.owner || '—'),
        h('dt', {}, 'Commands queued'), h('dd', {}, String(r.queued_inputs))),
      buttons.length ? h('div', { class: 'actions', role: 'group', 'aria-label': 'Rollout commands' }, buttons) : null));
    fill(waves, table('Waves', [
      ['Wave', w => String(w.i + 1)],
      ['Cabinets', w => String(w.size), { num: true }],
      ['Progress', w => bar(w.states, w.size)],
      ['States', w => waveText(w)],
    ], r.progress.waves.map((w, i) => ({ ...w, i })), { empty: 'No cabinet matches the target.' }));
    const f = Object.entries(r.progress.failures);
    fill(failures, f.length ? h('ul', {}, f.map(([k, n]) => h('li', {}, h('strong', {}, `${k.replaceAll('_', ' ')}: ${n}`),
      ' ', Object.entries((r.progress.reasons || {})[k] || {}).map(([why, c]) => `${why} (${c})`).join('; ')))) : h('p', { class: 'muted' }, 'No failures.'));
  }
  async function loadCabinets() {
    try {
      const cabs = await api(`/rollouts/${encodeURIComponent(id)}/cabinets${query({ state: stateSel.value })}`);
      fill(cabBox, table('Cabinets in this rollout', [
        ['Cabinet', c => link(`/cabinets/${encodeURIComponent(c.cabinet)}`, c.cabinet)],
        ['Wave', c => String(c.wave + 1), { num: true }],
        ['State', c => c.state.replaceAll('_', ' ')],
        ['Retries', c => String(c.retries), { num: true }],
        ['Reason', c => c.reason || '—'],
      ], cabs.slice(0, CABINET_ROWS), { empty: 'None.' }),
      cabs.length > CABINET_ROWS ? h('p', { class: 'muted' }, `Showing ${CABINET_ROWS} of ${cabs.length}; choose a state to narrow the list.`) : null);
    } catch (e) { fill(cabBox, errorBox(e)); }
  }
  stateSel.addEventListener('change', loadCabinets);
  draw();
  await loadCabinets();
  return live.on('rollout', ev => {
    if (ev.id !== id) return;
    r = { ...r, progress: ev.progress };
    draw();
  });
}

function hhmm(m) {
  return `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
}

function targetText(t) {
  const parts = [];
  if (t.tenant) parts.push(`tenant ${t.tenant}`);
  if (t.tags?.length) parts.push(`tags ${t.tags.join(', ')}`);
  if (t.hardware?.length) parts.push(`hardware ${t.hardware.join(', ')}`);
  if (t.region) parts.push(`time zone ${t.region}…`);
  if (t.cabinets?.length) parts.push(`${t.cabinets.length} named cabinets`);
  return parts.join('; ') || 'the whole fleet';
}
