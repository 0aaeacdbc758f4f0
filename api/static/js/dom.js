// Building the page from data, and formatting numbers for people.
//
// Elements are made with createElement and text goes in as text nodes: nothing the API returns
// is ever parsed as markup (no innerHTML anywhere in the dashboard).

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: h('td', {class: 'num'}, '3.14'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element (same calling convention as h). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

/**
 * Run render(), which replaces what is inside `container`, and give the focus back to the element
 * that had it (found again by its id or data-focus-key), so a keyboard or screen-reader user does
 * not lose their place when a live update redraws the part they are on.
 */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const inside = active && active !== container && container.contains(active);
  const key = inside ? active.id || active.dataset?.focusKey : null;
  render();
  if (!key) return;
  const again = active.id
    ? document.getElementById(key)
    : container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  again?.focus({ preventScroll: true });
}

/** Only http(s) links from the API become hrefs (never javascript: or data:). */
export function safeHref(url) {
  if (typeof url !== 'string') return null;
  try {
    const parsed = new URL(url, document.baseURI);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

export const CAMPAIGN_STATUSES = [
  'queued', 'starting', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled',
];
const KNOWN = new Set([
  ...CAMPAIGN_STATUSES, 'pending', 'tuning', 'training', 'evaluating', 'stopped', 'loading', 'ready',
]);

export function badge(status) {
  const cls = KNOWN.has(status) ? `status-${status}` : 'status-unknown';
  return h('span', { class: `badge ${cls}`, 'data-status': status }, status);
}

const DASH = '—';

export function fmtFid(v) {
  return Number.isFinite(v) ? v.toFixed(2) : DASH;
}

export function fmtLr(v) {
  return Number.isFinite(v) ? v.toExponential(1) : DASH;
}

export function fmtNum(v, digits = 4) {
  if (!Number.isFinite(v)) return DASH;
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 1);
  return String(Number(v.toPrecision(digits)));
}

export function fmtCount(v) {
  return Number.isFinite(v) ? v.toLocaleString('en-US') : DASH;
}

export function fmtDuration(seconds) {
  if (!Number.isFinite(seconds)) return DASH;
  const t = Math.round(seconds);
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${String(t % 60).padStart(2, '0')} s`;
  return `${Math.floor(t / 3600)} h ${String(Math.floor((t % 3600) / 60)).padStart(2, '0')} min`;
}

export function fmtGpuHours(seconds) {
  return Number.isFinite(seconds) ? (seconds / 3600).toFixed(2) : DASH;
}

export function fmtPercent(fraction) {
  return Number.isFinite(fraction) ? `${Math.round(fraction * 100)}%` : DASH;
}

/** A <time> in the reader's zone, YYYY-MM-DD HH:MM, with the exact UTC instant as its title. */
export function timeEl(iso) {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, '0');
  const text = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, text);
}

export function clockTime(date = new Date()) {
  return date.toLocaleTimeString('en-GB', { hour12: false });
}

/** A progress bar with its share as text beside it (the text is what screen readers read). */
export function progressEl(fraction, label) {
  const value = Number.isFinite(fraction) ? Math.min(Math.max(fraction, 0), 1) : 0;
  return h('span', { class: 'progress' },
    h('progress', { max: '1', value: String(value), 'aria-label': label }),
    h('span', { class: 'progress-text' }, fmtPercent(value)));
}

/** Speak a short message to screen readers (the page's polite live region). */
export function announce(text) {
  const region = document.getElementById('announce');
  if (region) region.textContent = text;
}

/** Resolves after ms, or at once when the signal aborts (callers check signal.aborted). */
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    function onAbort() { clearTimeout(timer); resolve(); }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
