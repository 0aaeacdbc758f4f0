// #/cluster: the Ray cluster as the control plane sees it (nodes, CPUs and GPUs in use) and the
// demand of running and queued campaigns, refreshed every few seconds.

import { request } from '../api.js';
import { clockTime, fill, fmtNum, h, sleep } from '../dom.js';

const REFRESH_MS = 5000;

function usage(label, u, id) {
  const text = u.total > 0 ? `${fmtNum(u.in_use)} of ${fmtNum(u.total)} in use` : 'none in the cluster';
  return h('div', { class: 'usage', id },
    h('span', { class: 'usage-label' }, label),
    h('meter', { min: '0', max: String(Math.max(u.total, 1)), value: String(u.in_use), 'aria-label': `${label} in use` }),
    h('span', { class: 'usage-text' }, text));
}

function demandRow(label, d) {
  return h('tr', { 'data-demand': label.toLowerCase() },
    h('th', { scope: 'row' }, label),
    h('td', { class: 'num' }, String(d.campaigns)),
    h('td', { class: 'num' }, fmtNum(d.cpus)),
    h('td', { class: 'num' }, fmtNum(d.gpus)));
}

function render(box, c) {
  const bundles = c.autoscaler_request.map((b) => Object.entries(b).map(([k, v]) => `${k}: ${fmtNum(v)}`).join(', '));
  fill(box,
    h('section', { 'aria-labelledby': 'res-h' },
      h('h2', { id: 'res-h' }, 'Resources'),
      usage('CPUs', c.cpus, 'cpus'),
      usage('GPUs', c.gpus, 'gpus')),
    h('section', { 'aria-labelledby': 'demand-h' },
      h('h2', { id: 'demand-h' }, 'Demand'),
      h('table', { class: 'data narrow', id: 'demand' },
        h('caption', { class: 'visually-hidden' }, 'Demand of campaigns'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Campaigns'),
          h('th', { scope: 'col', class: 'num' }, 'Count'),
          h('th', { scope: 'col', class: 'num' }, 'CPUs'),
          h('th', { scope: 'col', class: 'num' }, 'GPUs'))),
        h('tbody', {}, demandRow('Running', c.running), demandRow('Queued', c.queued))),
      h('p', { class: 'muted small' }, 'Asked of the Ray autoscaler: ',
        bundles.length ? bundles.map((b) => h('code', { class: 'bundle' }, `{${b}}`)) : 'nothing')),
    h('section', { 'aria-labelledby': 'nodes-h' },
      h('h2', { id: 'nodes-h' }, `Nodes (${c.nodes.length})`),
      h('table', { class: 'data', id: 'nodes' },
        h('caption', { class: 'visually-hidden' }, 'Ray nodes'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Node'),
          h('th', { scope: 'col' }, 'Address'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'num' }, 'CPUs'),
          h('th', { scope: 'col', class: 'num' }, 'GPUs'))),
        h('tbody', {}, c.nodes.map((n) => h('tr', { 'data-node': n.id },
          h('th', { scope: 'row', class: 'mono', title: n.id }, n.id.slice(0, 12)),
          h('td', { class: 'mono' }, n.address),
          h('td', {}, h('span', { class: `badge ${n.alive ? 'status-succeeded' : 'status-failed'}` }, n.alive ? 'alive' : 'dead')),
          h('td', { class: 'num' }, fmtNum(n.cpus)),
          h('td', { class: 'num' }, fmtNum(n.gpus))))))));
}

export function clusterView(main, ctx) {
  const updated = h('span', { class: 'muted small' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const box = h('div', { id: 'cluster' }, h('p', { class: 'muted' }, 'Loading…'));
  document.title = 'Cluster · pdistill';
  fill(main, h('div', { class: 'title-row' }, h('h1', { tabindex: '-1' }, 'Cluster'), updated), error, box);

  (async () => {
    while (!ctx.signal.aborted) {
      try {
        render(box, await request('v1/cluster', { signal: ctx.signal }));
        error.hidden = true;
        fill(updated, `updated ${clockTime()}, refreshes every ${REFRESH_MS / 1000} s`);
      } catch (err) {
        if (ctx.signal.aborted || err.status === 401) return;
        fill(error, err.status === 503 ? `The Ray cluster does not answer: ${err.detail}` : `Could not load the cluster: ${err.message}`);
        error.hidden = false;
        if (!box.querySelector('section')) fill(box);
      }
      await sleep(REFRESH_MS, ctx.signal);
      while (document.hidden && !ctx.signal.aborted) await sleep(1000, ctx.signal);
    }
  })();
}
