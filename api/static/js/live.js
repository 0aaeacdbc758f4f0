// Live updates of one campaign: the server-sent events of /v1/campaigns/{id}/events, read with
// fetch() and a streaming body (EventSource cannot send the Authorization header). When the
// stream cannot be had or breaks (a proxy that buffers, a restart), the page polls instead and
// tries the stream again now and then. After a final status it only looks, slowly, whether the
// campaign was resumed elsewhere.

import { ApiError, isAbort, request } from './api.js';
import { sleep } from './dom.js';

export const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
export const POLL_MS = 3000;
const STREAM_RETRY_MS = 30000;
const FINAL_POLL_MS = 15000;

/** Split an event-stream block ("event: x\ndata: y") into {event, data, id}; null for comments. */
function parseBlock(block) {
  let event = 'message';
  let id = null;
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  return data.length ? { event, id, data: data.join('\n') } : null;
}

/** Read the stream until it ends; calls onEvent per event. Resolves when the server closes it. */
export async function readEvents(path, { signal, onOpen, onEvent }) {
  const response = await request(path, { signal, raw: true, accept: 'text/event-stream' });
  if (!response.body) throw new ApiError(0, 'this browser cannot read a streaming response');
  onOpen?.();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const parsed = parseBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (parsed) onEvent(parsed);
    }
  }
}

async function snapshot(id, signal) {
  const base = `v1/campaigns/${encodeURIComponent(id)}`;
  const [campaign, rounds] = await Promise.all([
    request(base, { signal }),
    request(`${base}/rounds`, { signal }),
  ]);
  return { campaign, rounds };
}

/**
 * Follow campaign `id` until `signal` aborts. onSnapshot({campaign, rounds}) gets every new
 * state; onMode(mode, detail) tells how: 'connecting' | 'live' | 'polling' | 'final' | 'offline'
 * | 'gone'. A 401 ends it (the login page takes over); a 404 ends it with 'gone'.
 */
export async function follow(id, { signal, onSnapshot, onMode }) {
  let final = false;
  const take = (snap) => {
    final = FINAL.has(snap.campaign.status);
    onSnapshot(snap);
  };
  const stopped = (err) => signal.aborted || isAbort(err) || err?.status === 401;

  while (!signal.aborted) {
    if (!final) {
      onMode('connecting');
      try {
        await readEvents(`v1/campaigns/${encodeURIComponent(id)}/events`, {
          signal,
          onOpen: () => onMode('live'),
          onEvent: (ev) => {
            if (ev.event === 'campaign') take(JSON.parse(ev.data));
          },
        });
      } catch (err) {
        if (stopped(err)) return;
        if (err?.status === 404) { onMode('gone', err.detail); return; }
      }
    }
    // The stream ended: at a final status (by design) or not (then poll).
    const until = Date.now() + (final ? Infinity : STREAM_RETRY_MS);
    onMode(final ? 'final' : 'polling');
    while (!signal.aborted && Date.now() < until) {
      const wasFinal = final;
      try {
        take(await snapshot(id, signal));
        onMode(final ? 'final' : 'polling');
      } catch (err) {
        if (stopped(err)) return;
        if (err?.status === 404) { onMode('gone', err.detail); return; }
        onMode('offline', err.message);
      }
      if (wasFinal && !final) break; // resumed elsewhere: back to the stream
      await sleep(final ? FINAL_POLL_MS : POLL_MS, signal);
    }
  }
}
