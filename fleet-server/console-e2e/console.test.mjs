// The operator console end to end, in a real headless Chromium: a fleet-server on a temp
// SQLite database with its embedded broker, real edge-agent processes as cabinets (one
// killed, so it is genuinely offline; one raising a genuine door_forced alarm), a few
// hundred registered cabinets that never connected, couriers, parcels and a signed
// release. The browser logs in, finds the offline cabinet by search, opens a compartment
// remotely, follows a parcel's timeline, starts a rollout and pauses it, acknowledges an
// alarm that arrives live, and a courier's login cannot see rollouts (no navigation, a
// "Not permitted" page, and a 403 from the API). Every page is photographed at 1366×768,
// some at 1024×768 and 768×1024, with basic accessibility and layout checks.
//
// Needs LF_E2E_SERVER_BIN and LF_E2E_AGENT_BIN (scripts/console-e2e.sh builds and sets them)
// and CHROMIUM (default /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const HERE = dirname(fileURLToPath(import.meta.url));
const SHOTS = process.env.E2E_SCREENSHOTS || join(HERE, 'screenshots');
const SERVER_BIN = process.env.LF_E2E_SERVER_BIN;
const AGENT_BIN = process.env.LF_E2E_AGENT_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN = `lf_e2e-admin-${randomBytes(12).toString('hex')}`;
/** Registered cabinets that never connect, besides the real agents. */
const IDLE_CABINETS = Number(process.env.E2E_IDLE_CABINETS || 400);

const dir = mkdtempSync(join(tmpdir(), 'lf-console-e2e-'));
const procs = [];
const s = {}; // what the steps share
let browser;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

function run(name, bin, args) {
  const log = openSync(join(dir, `${name}.log`), 'a');
  const p = spawn(bin, args, { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: 'info' } });
  procs.push(p);
  return p;
}

async function until(what, check, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { if (await check()) return; } catch (e) { last = e; }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting until ${what}${last ? `: ${last.message}` : ''}`);
}

async function call(method, path, body, token = ADMIN, base = s.base) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: res.status, body: json };
}

async function ok(method, path, body, token) {
  const r = await call(method, path, body, token);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Starts one edge agent (a simulated cabinet) and registers it. */
async function agent(id, { tags, location }) {
  const http = await freePort();
  const data = join(dir, id);
  mkdirSync(data, { recursive: true });
  const config = join(dir, `${id}.toml`);
  writeFileSync(config, [
    `cabinet = "${id}"`, `data_dir = "${data}"`, 'sim_control = true', `http_listen = "127.0.0.1:${http}"`,
    'heartbeat_s = 2', '[mqtt]', `port = ${s.mqttPort}`,
    ...[['A1', 's'], ['A2', 'm'], ['A3', 'l'], ['B1', 's', true], ['B2', 'm', true], ['B3', 'xl']]
      .flatMap(([c, size, low]) => ['[[compartments]]', `id = "${c}"`, `size = "${size}"`, ...(low ? ['low = true'] : [])]),
  ].join('\n'));
  const registration = JSON.parse(execFileSync(AGENT_BIN, ['--config', config, 'provision']).toString());
  await ok('POST', '/api/v1/cabinets', { ...registration, tenant: 'acme', name: `Packstation ${id.slice(4)}`, tags, location, timezone: 'Europe/Berlin' });
  const proc = run(id, AGENT_BIN, ['--config', config, 'run']);
  return { id, proc, sim: `http://127.0.0.1:${http}` };
}

async function sim(cab, path, body) {
  const res = await fetch(`${cab.sim}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const online = id => until(`${id} is online`, async () => (await call('GET', `/api/v1/cabinets/${id}`)).body.online === true);

before(async () => {
  assert.ok(SERVER_BIN && AGENT_BIN, 'LF_E2E_SERVER_BIN and LF_E2E_AGENT_BIN must name the built binaries (scripts/console-e2e.sh)');
  mkdirSync(SHOTS, { recursive: true });
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  s.base = `http://127.0.0.1:${httpPort}`;
  s.mqttPort = mqttPort;
  // A release key the server trusts.
  const key = JSON.parse(execFileSync(SERVER_BIN, ['artifact', 'keygen', '--out', join(dir, 'release.key')]).toString());
  writeFileSync(join(dir, 'fleet-server.toml'), [
    '[http]', `listen = "127.0.0.1:${httpPort}"`,
    '[database]', `url = "sqlite://${join(dir, 'fleet.db')}?mode=rwc"`,
    '[mqtt]', `listen = "127.0.0.1:${mqttPort}"`,
    '[auth]', `bootstrap_token = "${ADMIN}"`, `token_file = "${join(dir, 'admin.token')}"`,
    '[presence]', 'flush_interval_ms = 200',
    '[artifacts]', `dir = "${join(dir, 'artifacts')}"`, `trusted_keys = ["${key.public_key}"]`, 'conduct_interval_ms = 300',
  ].join('\n'));
  run('fleet-server', SERVER_BIN, ['--config', join(dir, 'fleet-server.toml')]);
  await until('the fleet-server is ready', async () => (await fetch(`${s.base}/readyz`)).ok, 30000);

  await ok('POST', '/api/v1/tenants', { id: 'acme', name: 'Acme Logistics' });
  await ok('POST', '/api/v1/tenants', { id: 'globex', name: 'Globex Parcels' });
  // Cabinets that never connect: Munich and Hamburg, for search, paging and the rollout.
  const idle = [];
  for (let i = 0; i < IDLE_CABINETS; i++) {
    const region = ['munich', 'hamburg', 'cologne'][i % 3];
    const lat = { munich: 48.1, hamburg: 53.5, cologne: 50.9 }[region] + (i % 7) * 0.05;
    const lon = { munich: 11.5, hamburg: 10.0, cologne: 6.9 }[region] + (i % 5) * 0.05;
    idle.push({
      id: `cab-${region.slice(0, 3)}-${String(i).padStart(4, '0')}`, tenant: i % 10 === 9 ? 'globex' : 'acme',
      public_key: randomBytes(32).toString('base64'), tags: [`region:${region}`], location: { lat, lon },
      compartments: [{ id: 'A1', size: 's' }, { id: 'A2', size: 'm' }, { id: 'A3', size: 'l' }],
    });
  }
  for (let i = 0; i < idle.length; i += 16) await Promise.all(idle.slice(i, i + 16).map(c => ok('POST', '/api/v1/cabinets', c)));

  // Real edge agents in Berlin: one stays, one is killed (its last will marks it offline).
  s.main = await agent('cab-berlin-1', { tags: ['region:berlin', 'indoor'], location: { lat: 52.52, lon: 13.40 } });
  s.gone = await agent('cab-berlin-2', { tags: ['region:berlin'], location: { lat: 52.50, lon: 13.45 } });
  s.third = await agent('cab-berlin-3', { tags: ['region:berlin'], location: { lat: 52.55, lon: 13.30 } });
  s.fourth = await agent('cab-berlin-4', { tags: ['region:berlin'], location: { lat: 52.48, lon: 13.35 } });
  await Promise.all(['cab-berlin-1', 'cab-berlin-2', 'cab-berlin-3', 'cab-berlin-4'].map(online));
  s.gone.proc.kill('SIGKILL');
  await until('cab-berlin-2 is offline', async () => (await call('GET', '/api/v1/cabinets/cab-berlin-2')).body.online === false);

  // Couriers and parcels; one parcel goes through a real courier deposit at the cabinet.
  await ok('POST', '/api/v1/couriers', { id: 'k-1', tenant: 'acme', name: 'Kim Berger' });
  await ok('POST', '/api/v1/couriers', { id: 'k-2', tenant: 'acme', name: 'Lee Okafor' });
  s.parcel = (await ok('POST', '/api/v1/parcels', { tenant: 'acme', reference: 'TRK-1001', courier: 'k-1', size: 'm', cabinet: 'cab-berlin-1' }));
  await ok('POST', '/api/v1/parcels', { tenant: 'acme', reference: 'TRK-1002', courier: 'k-1', size: 's', cabinet: 'cab-berlin-1' });
  await ok('POST', '/api/v1/parcels', { tenant: 'acme', reference: 'TRK-1003', courier: 'k-2', size: 'l', cabinet: 'cab-berlin-3' });
  const pass = (await ok('POST', '/api/v1/couriers/k-1/pass')).pass;
  let compartment;
  await until('the cabinet accepts the courier deposit', async () => {
    const r = await sim(s.main, '/sim/courier/deposit', { pass, parcel: s.parcel.id });
    compartment = r.body?.compartment;
    return r.status === 200;
  });
  await sim(s.main, '/sim/door', { compartment, open: true });
  await sim(s.main, '/sim/door', { compartment, open: false });
  await until('TRK-1001 is ready', async () => (await call('GET', `/api/v1/parcels/${s.parcel.id}`)).body.state === 'ready');

  // A signed release, uploaded with the release tool.
  writeFileSync(join(dir, 'image.bin'), randomBytes(4096));
  const manifest = execFileSync(SERVER_BIN, ['artifact', 'sign', '--key', join(dir, 'release.key'), '--file', join(dir, 'image.bin'),
    '--version', '9.9.0', '--hardware', 'lf-cab-sim', '--security-floor', '1.0.0', '--notes', 'console e2e']).toString();
  writeFileSync(join(dir, 'manifest.json'), manifest);
  execFileSync(SERVER_BIN, ['artifact', 'upload', '--server', s.base, '--token', ADMIN, '--manifest', join(dir, 'manifest.json'), '--file', join(dir, 'image.bin')]);

  const token = async (name, role, extra = {}) => (await ok('POST', '/api/v1/tokens', { name, role, tenant: 'acme', ...extra })).token;
  s.dispatcher = await token('Dana (dispatch)', 'dispatcher');
  s.courier = await token("Kim's phone", 'courier', { courier: 'k-1' });

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
});

after(async () => {
  if (browser) await browser.close();
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 300));
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  if (!process.env.E2E_KEEP) rmSync(dir, { recursive: true, force: true });
});

/** A logged-in page at a viewport; fails the test on any CSP violation or page error. */
async function session(secret, viewport = { width: 1366, height: 768 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.problems.push(m.text()); });
  page.on('pageerror', e => page.problems.push(e.message));
  page.on('dialog', d => d.accept());
  await page.goto(`${s.base}/console/`);
  await page.getByLabel('API token').fill(secret);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#nav').waitFor();
  return page;
}

/** Screenshot, and the checks every page must pass. */
async function shot(page, name) {
  // The live stream keeps a request open, so "network idle" never comes: wait for the
  // page to have drawn instead.
  await page.locator('main .loading').waitFor({ state: 'detached' });
  const v = page.viewportSize();
  await page.screenshot({ path: join(SHOTS, `${v.width}x${v.height}-${name}.png`), fullPage: true });
  const problems = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden' || el.closest('[hidden]')) continue;
      if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) out.push(`unlabelled ${el.tagName.toLowerCase()} "${el.name}"`);
    }
    for (const b of document.querySelectorAll('button, a[href]')) {
      if (!b.textContent.trim() && !b.getAttribute('aria-label')) out.push(`control without a name: ${b.outerHTML.slice(0, 80)}`);
    }
    if (document.querySelectorAll('h1').length !== 1) out.push(`${document.querySelectorAll('h1').length} h1 elements`);
    if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push(`page is ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window`);
    return out;
  });
  assert.deepEqual(problems, [], `${name}: accessibility or layout problems`);
  assert.deepEqual(page.problems, [], `${name}: errors in the page`);
}

test('an operator logs in and sees the fleet at a glance', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const login = await context.newPage();
  await login.goto(`${s.base}/console/`);
  await login.getByLabel('API token').waitFor();
  await login.screenshot({ path: join(SHOTS, '1366x768-login.png') });
  await login.getByLabel('API token').fill('lf_wrong');
  await login.getByRole('button', { name: 'Log in' }).click();
  await login.getByRole('alert').filter({ hasText: 'unknown, revoked or expired' }).waitFor();
  await context.close();

  s.page = await session(ADMIN);
  const page = s.page;
  await page.getByRole('heading', { name: 'Fleet overview' }).waitFor();
  const total = IDLE_CABINETS + 4;
  await page.locator('.card', { hasText: 'Cabinets' }).getByText(total.toLocaleString('en-US')).waitFor();
  assert.equal(await page.locator('.card', { hasText: 'Online' }).locator('.n').textContent(), '3');
  assert.equal(await page.locator('.card', { hasText: 'Offline' }).locator('.n').textContent(), (total - 3).toLocaleString('en-US'));
  await page.getByRole('cell', { name: 'berlin', exact: true }).waitFor();
  await shot(page, 'overview');
});

test('the offline cabinet is found by search and its detail says why', async () => {
  const page = s.page;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Cabinets' }).click();
  await page.getByText(/cabinets match/).waitFor();
  await shot(page, 'cabinets');
  await page.getByLabel('State').selectOption('offline');
  await page.getByLabel('Search id or name').fill('berlin');
  await page.getByText('1 cabinet match').waitFor();
  const row = page.getByRole('row', { name: /cab-berlin-2/ });
  assert.match(await row.textContent(), /offline/);
  await shot(page, 'cabinets-offline-search');
  await row.getByRole('link', { name: 'cab-berlin-2' }).click();
  await page.getByRole('heading', { name: 'Cabinet cab-berlin-2' }).waitFor();
  assert.equal((await page.locator('#cabinet-state').textContent()).trim(), 'offline');
  // Why: its connection dropped and the broker announced its last will.
  await page.locator('#offline-why').getByText(/connection dropped/).waitFor();
  await shot(page, 'cabinet-offline');
  // A remote open is not sent to an offline cabinet.
  await page.getByRole('button', { name: 'Open compartment A1' }).click();
  await page.locator('#toast').getByText(/offline; a remote open is not sent/).waitFor();
});

test('a cabinet that loses power turns offline on the page without a reload', async () => {
  const page = s.page;
  await page.goto(`${s.base}/console/cabinets?q=berlin-4`);
  const row = page.getByRole('row', { name: /cab-berlin-4/ });
  await row.getByText('online').waitFor();
  await page.locator('body[data-live="on"]').waitFor();
  const loads = [];
  page.on('request', r => { if (r.url().includes('/api/v1/cabinets?')) loads.push(r.url()); });
  s.fourth.proc.kill('SIGKILL');
  await row.getByText('offline').waitFor({ timeout: 15000 });
  assert.deepEqual(loads, [], 'the row changed from the live stream, not by reloading the list');
  await shot(page, 'cabinets-live-offline');
});

test('an online cabinet shows its compartment grid and opens a compartment remotely', async () => {
  const page = s.page;
  await page.goto(`${s.base}/console/cabinets/cab-berlin-1`);
  await page.getByRole('heading', { name: 'Cabinet cab-berlin-1' }).waitFor();
  assert.equal((await page.locator('#cabinet-state').textContent()).trim(), 'online');
  const grid = page.getByRole('list', { name: 'Compartment grid' });
  await grid.locator('li', { hasText: 'TRK-1001' }).getByText('ready').waitFor();
  await grid.locator('li', { hasText: 'TRK-1002' }).getByText('assigned').waitFor();
  assert.equal(await page.locator('#templates-held').textContent(), '0');
  await page.getByRole('button', { name: 'Open compartment B3' }).click();
  await page.locator('#toast').getByText('Open sent to cab-berlin-1 B3.').waitFor();
  // The real cabinet released the lock: B3 is unlocked and waits to be opened.
  await until('the cabinet reports B3 unlocked', async () => {
    const st = await (await fetch(`${s.main.sim}/status`)).json();
    return st.busy === true;
  });
  await shot(page, 'cabinet-online');
});

test('a parcel is found by its reference and its timeline followed', async () => {
  const page = s.page;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Parcels' }).click();
  await page.getByLabel('Reference').fill('TRK-1001');
  const link = page.getByRole('link', { name: 'TRK-1001' });
  await until('the search shows TRK-1001 alone', async () => (await page.getByRole('link', { name: /^TRK-/ }).count()) === 1);
  await link.waitFor();
  await shot(page, 'parcels');
  await link.click();
  await page.getByRole('heading', { name: 'Parcel TRK-1001' }).waitFor();
  const timeline = page.locator('ol.timeline li');
  await until('the timeline shows the deposit', async () => (await timeline.count()) >= 3);
  const steps = await timeline.allTextContents();
  assert.match(steps[0], /created/);
  assert.ok(steps.some(t => /assign/.test(t)), steps.join(' | '));
  assert.ok(steps.some(t => /deposit/.test(t) && /by cabinet/.test(t)), steps.join(' | '));
  assert.match(steps.at(-1), /ready/);
  await shot(page, 'parcel-timeline');
});

test('couriers and their open tasks', async () => {
  const page = s.page;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Couriers' }).click();
  await page.getByRole('link', { name: 'k-1' }).click();
  await page.getByRole('heading', { name: 'Courier k-1' }).waitFor();
  await page.getByText('1 open task: 1 to deliver, 0 to collect.').waitFor();
  await page.getByRole('cell', { name: 'TRK-1002' }).waitFor();
  await shot(page, 'courier-tasks');
});

test('a rollout is started with waves, thresholds and a window, and paused', async () => {
  const page = s.page;
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Rollouts' }).click();
  await page.getByRole('heading', { name: 'Start a rollout' }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('edge-agent 9.9.0 to Munich');
  assert.match(await page.getByLabel('Release').locator('option:checked').textContent(), /9\.9\.0/);
  await page.getByLabel('Target tags').fill('region:munich');
  await page.getByLabel('Waves (cumulative %)').fill('10, 50, 100');
  await page.getByLabel('rejected (%)').fill('20');
  await page.getByLabel('Install window from').fill('02:00');
  await page.getByLabel('until').fill('05:00');
  await shot(page, 'rollouts-new');
  await page.getByRole('button', { name: 'Start rollout' }).click();
  await page.getByRole('heading', { name: 'Rollout edge-agent 9.9.0 to Munich' }).waitFor();
  const id = page.url().split('/').at(-1);
  const created = (await call('GET', `/api/v1/rollouts/${id}`)).body;
  const munich = Math.ceil(IDLE_CABINETS / 3);
  assert.equal(created.progress.waves.reduce((n, w) => n + w.size, 0), munich);
  assert.deepEqual(created.plan.window, { start_min: 120, end_min: 300 });
  assert.equal(created.plan.thresholds.rejected.share, 0.2);
  await page.getByRole('table', { name: 'Waves' }).getByRole('row').nth(3).waitFor();
  await page.locator('#rollout-phase').getByText('running').waitFor();
  await page.getByRole('button', { name: 'Pause' }).click();
  // The conductor applies it; the page hears the new phase on the live stream.
  await page.locator('#rollout-phase').getByText('paused').waitFor({ timeout: 15000 });
  await page.getByRole('button', { name: 'Resume' }).waitFor();
  assert.equal((await call('GET', `/api/v1/rollouts/${id}`)).body.progress.phase.phase, 'paused');
  await shot(page, 'rollout-paused');
  await page.getByRole('link', { name: '← Rollouts' }).click();
  await page.getByRole('row', { name: /edge-agent 9\.9\.0 to Munich/ }).getByText('paused').waitFor();
  await shot(page, 'rollouts');
});

test('an alarm raised at a cabinet arrives live and a dispatcher acknowledges it', async () => {
  const page = await session(s.dispatcher);
  // A dispatcher watches rollouts but may not start them.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Rollouts' }).click();
  await page.getByText(/may watch rollouts/).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Start rollout' }).count(), 0);

  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Alarms' }).click();
  await page.getByText('No open alarms. All quiet.').waitFor();
  await page.locator('body[data-live="on"]').waitFor();
  // Someone forces door A3 of cab-berlin-3: the cabinet raises door_forced.
  await sim(s.third, '/sim/door', { compartment: 'A3', open: true });
  const row = page.getByRole('row', { name: /cab-berlin-3/ });
  await row.getByText('door forced').waitFor({ timeout: 15000 });
  await sim(s.third, '/sim/door', { compartment: 'A3', open: false });
  await page.getByText('1 open alarm.').waitFor();
  await shot(page, 'alarms-open');
  await row.getByRole('textbox').fill('door checked, closed by the driver');
  await row.getByRole('button', { name: 'Acknowledge door forced at cab-berlin-3' }).click();
  await page.getByText('No open alarms. All quiet.').waitFor();
  const acked = (await call('GET', '/api/v1/alarms?state=acknowledged')).body;
  assert.equal(acked.total, 1);
  assert.equal(acked.items[0].acknowledged.by, 'Dana (dispatch)');
  assert.equal(acked.items[0].acknowledged.note, 'door checked, closed by the driver');
  await page.getByRole('link', { name: 'Acknowledged' }).click();
  await page.getByRole('row', { name: /Dana \(dispatch\)/ }).waitFor();
  await shot(page, 'alarms-acknowledged');
  await page.context().close();
});

test('a courier sees its own tasks and cannot see rollouts', async () => {
  const page = await session(s.courier);
  await page.getByRole('heading', { name: 'My tasks' }).waitFor();
  const nav = page.getByRole('navigation', { name: 'Main' });
  assert.deepEqual(await nav.getByRole('link').allTextContents(), ['My tasks']);
  assert.equal(await page.locator('#live-state').isVisible(), false, 'no live view of the fleet for a courier');
  await page.getByRole('cell', { name: 'TRK-1002' }).waitFor();
  await shot(page, 'courier-my-tasks');
  await page.goto(`${s.base}/console/rollouts`);
  await page.getByRole('heading', { name: 'Not permitted' }).waitFor();
  assert.equal(await page.getByRole('heading', { name: 'Start a rollout' }).count(), 0);
  await shot(page, 'courier-rollouts-not-permitted');
  // Not only hidden: the API refuses the courier's token too.
  assert.equal((await call('GET', '/api/v1/rollouts', undefined, s.courier)).status, 403);
  assert.equal((await call('POST', '/api/v1/rollouts', { name: 'x', artifact: '00000000-0000-7000-8000-000000000000' }, s.courier)).status, 403);
  await page.context().close();
});

test('axe finds no serious accessibility problem on the main pages', async () => {
  // axe is injected as a script, which the console's own policy would rightly block.
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, bypassCSP: true });
  const page = await context.newPage();
  await page.goto(`${s.base}/console/`);
  await page.getByLabel('API token').fill(ADMIN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#nav').waitFor();
  const pages = [
    ['/overview', 'Fleet overview'], ['/cabinets', 'Cabinets'], ['/cabinets/cab-berlin-1', 'Cabinet cab-berlin-1'],
    [`/parcels/${s.parcel.id}`, 'Parcel TRK-1001'], ['/couriers/k-1', 'Courier k-1'], ['/rollouts', 'Rollouts'],
    ['/alarms?state=all', 'Alarms'],
  ];
  const found = [];
  for (const [path, title] of pages) {
    await page.goto(`${s.base}/console${path}`);
    await page.getByRole('heading', { name: title, exact: true }).waitFor();
    await page.locator('main .loading').waitFor({ state: 'detached' });
    await page.addScriptTag({ path: AXE });
    const violations = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .filter(v => v.impact === 'serious' || v.impact === 'critical')
      .map(v => `${v.id}: ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`));
    for (const v of violations) found.push(`${path} ${v}`);
  }
  assert.deepEqual(found, []);
  await context.close();
});

test('the pages hold on a tablet and a small laptop', async () => {
  for (const viewport of [{ width: 768, height: 1024 }, { width: 1024, height: 768 }]) {
    const page = await session(ADMIN, viewport);
    await page.getByRole('heading', { name: 'Fleet overview' }).waitFor();
    await shot(page, 'overview');
    await page.goto(`${s.base}/console/cabinets?state=offline`);
    await page.getByText(/cabinets match/).waitFor();
    await shot(page, 'cabinets');
    await page.goto(`${s.base}/console/cabinets/cab-berlin-1`);
    await page.getByRole('list', { name: 'Compartment grid' }).waitFor();
    await shot(page, 'cabinet');
    await page.goto(`${s.base}/console/alarms?state=all`);
    await page.getByRole('row', { name: /cab-berlin-3/ }).waitFor();
    await shot(page, 'alarms');
    await page.goto(`${s.base}/console/rollouts`);
    await page.getByRole('heading', { name: 'Start a rollout' }).waitFor();
    await shot(page, 'rollouts');
    // Keyboard: the skip link is the first thing to tab to, and it lands on the content.
    const first = await page.evaluate(() => document.querySelector('a[href], button, input, select, textarea').textContent);
    assert.equal(first, 'Skip to content');
    await page.locator('a.skip').focus();
    await page.keyboard.press('Enter');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
    await page.context().close();
  }
});
