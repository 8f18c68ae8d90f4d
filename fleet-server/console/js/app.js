// The console shell: login state, navigation built from what the caller's role may do,
// and a router over /console/… paths. Each page is a module with
// `render(main, ctx)` that may return a clean-up function (stop listening, timers).
// Hiding is a convenience only: the API refuses whatever the role may not do.

import { api, setToken, token, ApiError } from './api.js';
import { h, fill, errorBox } from './ui.js';
import * as live from './live.js';

const ROUTES = [
  { re: /^\/overview$/, page: 'overview', needs: 'read_cabinets', nav: 'Overview' },
  { re: /^\/cabinets$/, page: 'cabinets', needs: 'read_cabinets', nav: 'Cabinets' },
  { re: /^\/cabinets\/([^/]+)$/, page: 'cabinet', needs: 'read_cabinets', section: 'cabinets' },
  { re: /^\/parcels$/, page: 'parcels', needs: 'read_parcels', nav: 'Parcels' },
  { re: /^\/parcels\/([^/]+)$/, page: 'parcels', needs: 'read_parcels', section: 'parcels' },
  { re: /^\/couriers$/, page: 'couriers', needs: 'read_parcels', nav: 'Couriers' },
  { re: /^\/couriers\/([^/]+)$/, page: 'couriers', needs: 'read_parcels', section: 'couriers' },
  { re: /^\/tasks$/, page: 'couriers', needs: 'courier', nav: 'My tasks' },
  { re: /^\/rollouts$/, page: 'rollouts', needs: 'read_cabinets', nav: 'Rollouts' },
  { re: /^\/rollouts\/([^/]+)$/, page: 'rollouts', needs: 'read_cabinets', section: 'rollouts' },
  { re: /^\/alarms$/, page: 'alarms', needs: 'read_cabinets', nav: 'Alarms' },
  { re: /^\/login$/, page: 'login', needs: null },
];

let me = null;
let cleanup = null;

function can(action) {
  if (!me) return false;
  if (action === 'courier') return me.role === 'courier' && !!me.courier;
  return me.actions.includes(action);
}

function home() {
  if (can('read_cabinets')) return '/overview';
  if (can('read_parcels')) return '/parcels';
  if (can('courier')) return '/tasks';
  return '/login';
}

function currentPath() {
  const p = location.pathname.replace(/^\/console/, '').replace(/\/+$/, '');
  return p || '/';
}

export function navigate(path, { replace = false } = {}) {
  const url = `/console${path}`;
  if (replace) history.replaceState({}, '', url);
  else history.pushState({}, '', url);
  route();
}

function buildNav(activeSection) {
  const nav = document.getElementById('nav');
  const list = document.getElementById('nav-list');
  const who = document.getElementById('who');
  if (!me) { nav.hidden = true; who.hidden = true; return; }
  fill(list, ROUTES.filter(r => r.nav && can(r.needs)).map(r => {
    const path = r.re.source.replace(/^\^\\\//, '/').replace(/\$$/, '');
    const section = path.slice(1);
    return h('li', {}, h('a', {
      href: `/console${path}`, 'data-nav': true, 'aria-current': section === activeSection ? 'page' : undefined,
    }, r.nav));
  }));
  nav.hidden = false;
  who.hidden = false;
  const scope = me.tenant ? `tenant ${me.tenant}` : 'fleet-wide';
  fill(document.getElementById('who-name'), `${me.name} · ${me.role} · ${scope}`);
}

function notPermitted(main, section) {
  document.title = 'Not permitted · Lockerfleet';
  fill(main, h('section', { class: 'panel denied' },
    h('h1', {}, 'Not permitted'),
    h('p', {}, `A ${me.role} token may not see this page${section ? ` (${section})` : ''}.`),
    h('p', {}, h('a', { href: `/console${home()}`, 'data-nav': true }, 'Go to your start page'))));
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* page already gone */ } cleanup = null; }
  const main = document.getElementById('main');
  let path = currentPath();
  if (!token() && path !== '/login') { navigate('/login', { replace: true }); return; }
  if (token() && !me && path !== '/login') {
    try {
      me = await api('/me');
      startLive();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { setToken(null); navigate('/login', { replace: true }); return; }
      fill(main, errorBox(e));
      return;
    }
  }
  if (path === '/') { navigate(home(), { replace: true }); return; }
  const r = ROUTES.find(x => x.re.test(path));
  if (!r) {
    buildNav(null);
    fill(main, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: `/console${home()}`, 'data-nav': true }, 'Start page')));
    return;
  }
  const section = r.section || r.page;
  buildNav(r.nav ? path.slice(1) : section);
  if (r.needs && !can(r.needs)) { notPermitted(main, section); return; }
  const params = path.match(r.re).slice(1).map(decodeURIComponent);
  fill(main, h('p', { class: 'loading' }, 'Loading…'));
  try {
    const mod = await import(`./pages/${r.page}.js`);
    const ctx = { me, can, params, path, navigate, login };
    cleanup = (await mod.render(main, ctx)) || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { logout(); return; }
    if (e instanceof ApiError && e.status === 403) { notPermitted(main, section); return; }
    fill(main, h('h1', {}, 'Something went wrong'), errorBox(e));
  }
  main.focus({ preventScroll: true });
}

/** The live stream is for roles that see the fleet; a courier's page has none. */
function startLive() {
  const indicator = document.getElementById('live-state');
  indicator.hidden = !can('read_cabinets');
  if (can('read_cabinets')) live.start();
}

/** Called by the login page with a token that /me accepted. */
function login(secret, who) {
  setToken(secret);
  me = who;
  startLive();
  navigate(home(), { replace: true });
}

function logout() {
  live.stop();
  setToken(null);
  me = null;
  buildNav(null);
  navigate('/login', { replace: true });
}

document.addEventListener('click', e => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  const url = new URL(a.href);
  navigate((url.pathname.replace(/^\/console/, '') || '/') + url.search);
});
window.addEventListener('popstate', route);
document.getElementById('logout').addEventListener('click', logout);
route();
