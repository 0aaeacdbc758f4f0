// #/campaigns[?status=S&offset=N]: the caller's campaigns, newest first, refreshed every few
// seconds while the page is open.

import { request } from '../api.js';
import {
  CAMPAIGN_STATUSES, badge, clockTime, fill, fmtFid, h, keepFocus, progressEl, sleep, timeEl,
} from '../dom.js';

const PAGE = 50;
const REFRESH_MS = 5000;

function listHash(status, offset) {
  const q = new URLSearchParams();
  if (status) q.set('status', status);
  if (offset) q.set('offset', String(offset));
  const text = q.toString();
  return `/campaigns${text ? `?${text}` : ''}`;
}

function row(c, showTeam) {
  const href = `#/campaigns/${encodeURIComponent(c.id)}`;
  const round = `${c.current_round ?? 0}/${c.rounds_total}`;
  return h('tr', { 'data-campaign-id': c.id },
    h('th', { scope: 'row' },
      h('a', { href, 'data-focus-key': c.id }, c.name),
      h('div', { class: 'muted small mono' }, c.id)),
    showTeam ? h('td', {}, c.team) : null,
    h('td', {}, badge(c.status),
      c.reason ? h('div', { class: 'muted small reason' }, c.reason) : null),
    h('td', { class: 'num', 'data-col': 'round' }, round),
    h('td', { 'data-col': 'progress' }, progressEl(c.progress, `Progress of ${c.name}`)),
    h('td', { class: 'num', 'data-col': 'best-fid' }, fmtFid(c.best_fid)),
    h('td', { 'data-col': 'created' }, timeEl(c.created_at)));
}

export function campaignsView(main, ctx) {
  const status = CAMPAIGN_STATUSES.includes(ctx.query.get('status')) ? ctx.query.get('status') : '';
  const offset = Math.max(0, Number.parseInt(ctx.query.get('offset') || '0', 10) || 0);
  const showTeam = Boolean(ctx.me?.admin);

  const select = h('select', { id: 'status-filter' },
    h('option', { value: '' }, 'all'),
    CAMPAIGN_STATUSES.map((st) => h('option', { value: st, selected: st === status }, st)));
  select.addEventListener('change', () => ctx.go(listHash(select.value, 0)));

  const updated = h('span', { class: 'muted small', id: 'list-updated' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id: 'campaigns' },
    h('caption', { class: 'visually-hidden' }, 'Campaigns, newest first'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Campaign'),
      showTeam ? h('th', { scope: 'col' }, 'Team') : null,
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'num' }, 'Round'),
      h('th', { scope: 'col' }, 'Progress'),
      h('th', { scope: 'col', class: 'num' }, h('abbr', { title: 'Fréchet Inception Distance, lowest of the distilled students' }, 'Best FID')),
      h('th', { scope: 'col' }, 'Created'))),
    tbody);
  const empty = h('p', { class: 'empty-state', hidden: true });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });

  document.title = 'Campaigns · pdistill';
  fill(main,
    h('div', { class: 'title-row' },
      h('h1', { tabindex: '-1' }, 'Campaigns'),
      h('div', { class: 'filters' }, h('label', { for: 'status-filter' }, 'Status '), select, updated)),
    error, table, empty, pager);

  let shown = null;
  function render(page) {
    fill(updated, ` · updated ${clockTime()}, refreshes every ${REFRESH_MS / 1000} s`);
    const key = JSON.stringify(page);
    if (key === shown) return; // nothing changed: leave the table (and the reader's focus) alone
    shown = key;
    keepFocus(tbody, () => fill(tbody, page.items.map((c) => row(c, showTeam))));
    table.hidden = page.items.length === 0;
    empty.hidden = page.items.length !== 0;
    fill(empty, status ? `No campaigns with status ${status}.` : 'No campaigns yet. Submit one with pdistill submit SPEC.yaml.');
    const last = Math.min(page.offset + page.items.length, page.total);
    fill(pager,
      page.total > 0 ? h('span', { class: 'muted' }, `${page.offset + 1}–${last} of ${page.total}`) : null,
      page.offset > 0 ? h('a', { href: `#${listHash(status, Math.max(0, page.offset - PAGE))}` }, '← Newer') : null,
      last < page.total ? h('a', { href: `#${listHash(status, page.offset + PAGE)}` }, 'Older →') : null);
  }

  (async () => {
    while (!ctx.signal.aborted) {
      const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
      if (status) q.set('status', status);
      try {
        render(await request(`v1/campaigns?${q}`, { signal: ctx.signal }));
        error.hidden = true;
      } catch (err) {
        if (ctx.signal.aborted || err.status === 401) return;
        fill(error, `Could not load the campaigns: ${err.message}. Retrying.`);
        error.hidden = false;
      }
      await sleep(REFRESH_MS, ctx.signal);
      // A hidden tab does not refresh; it catches up as soon as it is shown again.
      while (document.hidden && !ctx.signal.aborted) await sleep(1000, ctx.signal);
    }
  })();
}
