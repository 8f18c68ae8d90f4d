// Log in with an API token (made with POST /api/v1/tokens). The token is checked with
// GET /api/v1/me before it is kept, in this tab's sessionStorage only.

import { ApiError } from '../api.js';
import { h, fill, field, heading } from '../ui.js';

export async function render(main, ctx) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const msg = h('div', { 'aria-live': 'assertive' });
  const form = h('form', { class: 'panel login', novalidate: true },
    heading('Log in'),
    h('p', { class: 'help' }, 'Paste the API token your administrator gave you. It stays in this browser tab only and is forgotten when the tab closes.'),
    field('API token', input),
    h('p', {}, h('button', { type: 'submit' }, 'Log in')),
    msg);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    const secret = input.value.trim();
    if (!secret) { fill(msg, h('p', { class: 'error', role: 'alert' }, 'Enter a token.')); input.focus(); return; }
    try {
      const res = await fetch('/api/v1/me', { headers: { authorization: `Bearer ${secret}` } });
      const body = await res.json().catch(() => null);
      if (!res.ok) throw new ApiError(res.status, body?.error?.code, body?.error?.message || `HTTP ${res.status}`);
      ctx.login(secret, body);
    } catch (err) {
      const text = err.status === 401 ? 'That token is unknown, revoked or expired.' : err.message;
      fill(msg, h('p', { class: 'error', role: 'alert' }, text));
      input.focus();
    }
  });
  fill(main, form);
  input.focus();
}
