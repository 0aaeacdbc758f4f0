// #/cluster: the Ray cluster as the control plane sees it (worker groups, nodes, CPUs and GPUs in
// use, what waits for resources) and the demand of running and queued campaigns, refreshed every
// few seconds.

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

function bundleText(resources) {
  return `{${Object.entries(resources).map(([k, v]) => `${k}: ${fmtNum(v)}`).join(', ')}}`;
}

// Pending demand is cluster-wide (Ray does not say which group would take it): one footer row
// under the groups, its CPUs and GPUs summed over the waiting bundles, then the bundles themselves.
function pendingTotal(pending, name) {
  return pending.reduce((sum, p) => sum + (p.resources[name] || 0) * p.count, 0);
}

function groupsSection(c) {
  const pending = c.pending;
  const foot = pending === null
    ? h('tr', { 'data-pending': 'unknown' },
      h('th', { scope: 'row' }, 'Pending'),
      h('td', { colspan: '3', class: 'muted' }, 'unknown (Ray\'s status not read yet, or unreadable)'))
    : h('tr', { 'data-pending': 'cluster' },
      h('th', { scope: 'row' }, 'Pending (whole cluster)'),
      h('td', { class: 'num' }, '—'),
      h('td', { class: 'num' }, fmtNum(pendingTotal(pending, 'CPU'))),
      h('td', { class: 'num' }, fmtNum(pendingTotal(pending, 'GPU'))));
  return h('section', { 'aria-labelledby': 'groups-h' },
    h('h2', { id: 'groups-h' }, `Worker groups (${c.groups.length})`),
    h('table', { class: 'data narrow', id: 'groups' },
      h('caption', { class: 'visually-hidden' }, 'Ray worker groups'),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Group'),
        h('th', { scope: 'col', class: 'num' }, 'Nodes'),
        h('th', { scope: 'col', class: 'num' }, 'CPUs'),
        h('th', { scope: 'col', class: 'num' }, 'GPUs'))),
      h('tbody', {}, c.groups.map((g) => h('tr', { 'data-group': g.name },
        h('th', { scope: 'row', class: 'mono' }, g.name),
        h('td', { class: 'num' }, String(g.nodes)),
        h('td', { class: 'num' }, fmtNum(g.cpus)),
        h('td', { class: 'num' }, fmtNum(g.gpus))))),
      h('tfoot', {}, foot)),
    pending && pending.length
      ? h('p', { class: 'muted small', id: 'pending' }, 'Waiting for resources: ',
        pending.map((p) => h('code', { class: 'bundle', title: p.source.replace('_', ' ') },
          `${bundleText(p.resources)} × ${p.count}`)))
      : null);
}

function render(box, c) {
  const bundles = c.autoscaler_request.map(bundleText);
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
        bundles.length ? bundles.map((b) => h('code', { class: 'bundle' }, b)) : 'nothing')),
    groupsSection(c),
    h('section', { 'aria-labelledby': 'nodes-h' },
      h('h2', { id: 'nodes-h' }, `Nodes (${c.nodes.length})`),
      h('table', { class: 'data', id: 'nodes' },
        h('caption', { class: 'visually-hidden' }, 'Ray nodes'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Node'),
          h('th', { scope: 'col' }, 'Group'),
          h('th', { scope: 'col' }, 'Address'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'num' }, 'CPUs'),
          h('th', { scope: 'col', class: 'num' }, 'GPUs'))),
        h('tbody', {}, c.nodes.map((n) => h('tr', { 'data-node': n.id },
          h('th', { scope: 'row', class: 'mono', title: n.id }, n.id.slice(0, 12)),
          h('td', { class: 'mono' }, n.group),
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
