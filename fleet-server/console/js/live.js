// Live updates: the server-sent-event stream at /api/v1/live, read with fetch so the
// bearer token travels in a header (EventSource cannot send one). Pages subscribe by
// event kind; the stream reconnects with backoff and says so in the header.

import { token } from './api.js';

const listeners = new Map();
let controller = null;
let retry = 1000;

export function on(kind, fn) {
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(fn);
  return () => listeners.get(kind).delete(fn);
}

function emit(kind, data) {
  for (const fn of listeners.get(kind) || []) {
    try { fn(data); } catch (e) { console.error('live listener failed', e); }
  }
}

function setState(connected) {
  const el = document.getElementById('live-state');
  if (!el) return;
  el.textContent = connected ? 'live' : 'reconnecting';
  el.classList.toggle('on', connected);
  document.body.dataset.live = connected ? 'on' : 'off';
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
}

export async function start() {
  stop();
  const mine = new AbortController();
  controller = mine;
  while (controller === mine) {
    try {
      const res = await fetch('/api/v1/live', {
        headers: { authorization: `Bearer ${token()}`, accept: 'text/event-stream' },
        signal: mine.signal,
      });
      if (res.status === 401 || res.status === 403) { setState(false); return; }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      await read(res.body.getReader(), mine);
    } catch (e) {
      if (mine.signal.aborted) return;
    }
    setState(false);
    await new Promise(r => setTimeout(r, retry));
    retry = Math.min(retry * 2, 30000);
  }
}

async function read(reader, mine) {
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done || mine.signal.aborted) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let kind = 'message';
      const data = [];
      for (const line of frame.split('\n')) {
        if (line.startsWith('event: ')) kind = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (frame.startsWith(':')) continue;
      if (kind === 'ready') { retry = 1000; setState(true); }
      let parsed = null;
      try { parsed = JSON.parse(data.join('\n') || 'null'); } catch { parsed = null; }
      emit(kind, parsed);
    }
  }
}
