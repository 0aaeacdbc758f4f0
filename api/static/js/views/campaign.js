// #/campaigns/ID: one campaign, live. The campaign and its rounds come from the event stream
// (live.js); loss curves, trials and sample grids are fetched per round when the round's state
// says they changed, the campaign's history when its status changed (and now and then while
// it runs).

import { download, imageUrl, isAbort, request } from '../api.js';
import {
  announce, badge, fill, fmtCount, fmtFid, fmtNum, h, keepFocus, progressEl, safeHref, timeEl,
} from '../dom.js';
import { POLL_MS, follow } from '../live.js';
import {
  fidChart, lossFigure, roundTable, sampleFigure, teacherLossFigure, teacherSampleFigure, trialsFigure,
} from './rounds.js';

const CANCELLABLE = new Set(['queued', 'starting', 'running']);
const RESUMABLE = new Set(['failed', 'cancelled']);
const ACTIVE_ROUND = new Set(['tuning', 'training', 'evaluating']);
const DETAIL_REFRESH_MS = 5000;
const MODES = {
  connecting: 'Connecting…',
  live: 'Live: updates as they happen',
  polling: `Polling every ${POLL_MS / 1000} s (the event stream is unavailable)`,
  final: 'Finished: no more updates',
  offline: 'Cannot reach the API; retrying',
  gone: 'This campaign is gone',
};

function fact(term, ...value) {
  return h('div', {}, h('dt', {}, term), h('dd', {}, ...value));
}

// The teacher stage: its status, and while it trains its updates, a bar and the latest loss.
function teacherFact(t) {
  const parts = [badge(t.status)];
  if (t.source === 'checkpoint') {
    parts.push(' loaded from a checkpoint');
  } else {
    parts.push(` ${fmtCount(t.updates_done)} / ${fmtCount(t.updates)} updates`);
    if (t.status === 'training') parts.push(' ', progressEl(t.updates_done / t.updates, 'Teacher training'));
    if (Number.isFinite(t.loss)) parts.push(` · loss ${fmtNum(t.loss)}`);
  }
  return fact('Teacher', h('span', { id: 'teacher' }, ...parts));
}

// Its FID at its own steps; while its evaluation runs, the samples drawn of those it needs.
function teacherFid(t) {
  if (Number.isFinite(t.fid)) return `${fmtFid(t.fid)} at ${t.steps} steps`;
  if (t.eval_samples_done > 0) return `evaluating: ${fmtCount(t.eval_samples_done)} / ${fmtCount(t.eval_samples)} samples`;
  return fmtFid(null);
}

// Where a ready teacher is kept: a new campaign can start from it (its spec's teacher.checkpoint);
// the same file can be downloaded from the API.
function teacherUriFacts(t) {
  if (!t.checkpoint_uri) return [];
  return [fact('Teacher checkpoint',
    h('code', { id: 'teacher-uri', class: 'uri', title: 'Use as teacher.checkpoint in a new campaign' }, t.checkpoint_uri),
    ' ',
    h('button', {
      type: 'button', class: 'secondary small', 'data-download': t.checkpoint_url, 'aria-label': 'Download the teacher',
    }, 'Download'))];
}

// One entry of the campaign's history: a status change (who, why), or a note while it ran.
function historyItem(e) {
  let change = `${e.from_status} → ${e.to_status}`;
  if (e.from_status === null) change = `submitted: ${e.to_status}`;
  else if (e.from_status === e.to_status) change = e.to_status;
  return h('li', { 'data-to': e.to_status, 'data-note': String(e.from_status === e.to_status) },
    timeEl(e.at), ' ', h('strong', {}, change), ' ', h('span', { class: 'muted' }, `by ${e.actor}`),
    e.detail ? h('span', { class: 'detail' }, `: ${e.detail}`) : '');
}

export function campaignView(main, ctx) {
  const [id] = ctx.params;
  const base = `v1/campaigns/${encodeURIComponent(id)}`;
  const { signal } = ctx;
  const state = {
    campaign: null, rounds: [], lossSeen: new Map(), loss: new Map(), trialsSeen: new Map(),
    trials: new Map(), samples: new Map(), problems: new Map(), historySeen: null,
  };

  // -- the page's skeleton; the parts are filled as data arrives ---------------------------------
  const title = h('h1', { tabindex: '-1' }, 'Campaign ', h('span', { class: 'mono' }, id));
  const status = h('span', { id: 'campaign-status' });
  const mode = h('span', { class: 'live-mode muted small', id: 'live-mode', 'data-mode': 'connecting' }, MODES.connecting);
  const reason = h('p', { class: 'reason', hidden: true });
  const facts = h('dl', { class: 'facts' });
  // Only the action that applies to the campaign's status is shown (none once it succeeded).
  const cancelBtn = h('button', { type: 'button', id: 'cancel', class: 'danger', hidden: true }, 'Cancel campaign');
  const resumeBtn = h('button', { type: 'button', id: 'resume', hidden: true }, 'Resume');
  const confirmYes = h('button', { type: 'button', id: 'cancel-confirm', class: 'danger' }, 'Yes, cancel it');
  const confirmNo = h('button', { type: 'button', class: 'secondary' }, 'No, keep it');
  const confirm = h('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm cancel', hidden: true },
    h('span', {}, 'Cancel this campaign? Its Ray job is stopped; finished rounds are kept and it can be resumed.'),
    confirmYes, confirmNo);
  const actionError = h('p', { class: 'error', role: 'alert', hidden: true });
  const roundsBox = h('div', { class: 'table-wrap' });
  const fidBox = h('div', { class: 'chart-box', id: 'fid-chart' });
  const lossBox = h('div', { class: 'panels', id: 'loss-charts' });
  const trialsSection = h('section', { 'aria-labelledby': 'trials-h', hidden: true },
    h('h2', { id: 'trials-h' }, 'Learning-rate search'));
  const trialsBox = h('div', { class: 'panels', id: 'trials' });
  trialsSection.append(trialsBox);
  const samplesBox = h('div', { class: 'panels', id: 'samples' },
    h('p', { class: 'muted' }, 'Nothing evaluated yet.'));
  const historyList = h('ol', { id: 'history', class: 'history' });
  const logPre = h('pre', { class: 'log', tabindex: '0' });
  const logDetails = h('details', { id: 'driver-log' }, h('summary', {}, 'Driver log (last 200 lines)'), logPre);

  document.title = `${id} · pdistill`;
  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, '← Campaigns')),
    h('div', { class: 'title-row' }, title, status, mode),
    reason,
    h('div', { class: 'actions' }, cancelBtn, resumeBtn, confirm),
    actionError,
    facts,
    h('section', { 'aria-labelledby': 'rounds-h' }, h('h2', { id: 'rounds-h' }, 'Rounds'), roundsBox),
    h('section', { 'aria-labelledby': 'fid-h' },
      h('h2', { id: 'fid-h' }, 'FID vs sampling steps'), fidBox,
      h('p', { class: 'muted small' }, 'Lower is better. Each distilled student against DDIM sampling of the teacher at the same number of steps; the rightmost DDIM point is the teacher at its own steps.')),
    h('section', { 'aria-labelledby': 'loss-h' }, h('h2', { id: 'loss-h' }, 'Training loss'), lossBox),
    trialsSection,
    h('section', { 'aria-labelledby': 'samples-h' }, h('h2', { id: 'samples-h' }, 'Samples'), samplesBox),
    h('section', { 'aria-labelledby': 'history-h' }, h('h2', { id: 'history-h' }, 'History'), historyList),
    h('section', { 'aria-labelledby': 'log-h' }, h('h2', { id: 'log-h', class: 'visually-hidden' }, 'Log'), logDetails));

  signal.addEventListener('abort', () => {
    for (const src of state.samples.values()) URL.revokeObjectURL(src);
  });

  // -- the campaign itself ------------------------------------------------------------------------
  function renderCampaign(c) {
    fill(title, c.name, ' ', h('span', { class: 'mono muted id' }, c.id));
    document.title = `${c.name} · pdistill`;
    const before = status.textContent;
    fill(status, badge(c.status));
    if (before && before !== c.status) announce(`Campaign ${c.name} is ${c.status}`);
    fill(reason, c.reason || '');
    reason.hidden = !c.reason;
    cancelBtn.hidden = !CANCELLABLE.has(c.status);
    resumeBtn.hidden = !RESUMABLE.has(c.status);
    resumeBtn.disabled = false; // a resume that failed may be tried again
    if (cancelBtn.hidden) confirm.hidden = true;
    const links = [];
    const mlflow = safeHref(c.links?.mlflow);
    const ray = safeHref(c.links?.ray_dashboard);
    if (mlflow) links.push(h('a', { href: mlflow, target: '_blank', rel: 'noopener noreferrer', id: 'mlflow-link' }, 'MLflow run'));
    if (ray) links.push(h('a', { href: ray, target: '_blank', rel: 'noopener noreferrer', id: 'ray-link' }, 'Ray job'));
    keepFocus(facts, () => fill(facts,
      fact('Team', c.team),
      teacherFact(c.teacher),
      ...teacherUriFacts(c.teacher),
      fact('Round', `${c.current_round ?? 0} of ${c.rounds_total}`),
      fact('Progress', progressEl(c.progress, 'Campaign progress')),
      fact('Best FID', fmtFid(c.best_fid)),
      fact('Teacher FID', h('span', { id: 'teacher-fid' }, teacherFid(c.teacher))),
      fact('Priority', String(c.priority)),
      fact('GPUs', String(c.gpus)),
      fact('Created', timeEl(c.created_at)),
      fact('Started', timeEl(c.started_at)),
      fact('Finished', timeEl(c.finished_at)),
      fact('Links', links.length ? links.flatMap((a, i) => (i ? [' · ', a] : [a])) : h('span', { class: 'muted' }, 'none yet'))));
  }

  function setMode(m, detail) {
    mode.dataset.mode = m;
    fill(mode, detail && m === 'offline' ? `${MODES[m]} (${detail})` : MODES[m] || m);
    if (m === 'gone') {
      fill(actionError, `${detail}. It may belong to another team, or the link is wrong.`);
      actionError.hidden = false;
      cancelBtn.hidden = true;
      resumeBtn.hidden = true;
      confirm.hidden = true;
    }
  }

  // -- per-round details, fetched only when a round's state moved ---------------------------------
  // An active round is looked at again at most every DETAIL_REFRESH_MS; any other round when
  // its key (what its details depend on) changed.
  function due(seen, r, key) {
    const last = seen.get(r.k);
    if (!last) return true;
    if (ACTIVE_ROUND.has(r.status)) return Date.now() - last.at >= DETAIL_REFRESH_MS;
    return last.key !== key;
  }

  // A loss curve, by round number or 'teacher' (whose status reads like a round's: training).
  async function loadLoss(r, key) {
    state.lossSeen.set(r.k, { key, at: Date.now() });
    const path = r.k === 'teacher' ? `${base}/teacher/loss` : `${base}/rounds/${r.k}/loss`;
    try {
      state.loss.set(r.k, await request(path, { signal }));
      state.problems.delete(r.k);
    } catch (err) {
      if (isAbort(err) || signal.aborted) return;
      state.problems.set(r.k, `Loss unavailable: ${err.message}`);
    }
  }

  async function loadTrials(r, key) {
    state.trialsSeen.set(r.k, { key, at: Date.now() });
    try {
      state.trials.set(r.k, await request(`${base}/rounds/${r.k}/trials`, { signal }));
    } catch (err) {
      if (!isAbort(err) && !signal.aborted) state.trials.set(r.k, []);
    }
  }

  // A sample grid, by round number or 'teacher', fetched once its URL is given.
  async function loadSamples(key, url) {
    if (!url || state.samples.has(key)) return;
    state.samples.set(key, null);
    try {
      state.samples.set(key, await imageUrl(url, signal));
    } catch (err) {
      state.samples.delete(key); // try again at the next update
    }
  }

  // The history: again when the status changed, and every DETAIL_REFRESH_MS while it runs (a
  // round's training that started again is noted without a status change).
  async function loadHistory(c) {
    const last = state.historySeen;
    const fresh = last && last.status === c.status
      && (!CANCELLABLE.has(c.status) || Date.now() - last.at < DETAIL_REFRESH_MS);
    if (fresh) return;
    state.historySeen = { status: c.status, at: Date.now() };
    try {
      const entries = await request(`${base}/history`, { signal });
      fill(historyList, ...entries.map(historyItem));
    } catch (err) {
      if (isAbort(err) || signal.aborted) return;
      state.historySeen = null; // try again at the next update
      fill(historyList, h('li', { class: 'muted' }, `History unavailable: ${err.message}`));
    }
  }

  function trainsTeacher() {
    const t = state.campaign?.teacher;
    return t && t.source === 'train' && t.status !== 'pending';
  }

  function renderDetails() {
    const started = state.rounds.filter((r) => r.status !== 'pending');
    const figures = started.map((r) => lossFigure(r, state.loss.get(r.k) || [], state.problems.get(r.k)));
    if (trainsTeacher()) {
      const t = state.campaign.teacher;
      figures.unshift(teacherLossFigure(t, state.loss.get('teacher') || [], state.problems.get('teacher')));
    }
    fill(lossBox, figures.length ? figures : h('p', { class: 'muted' }, 'Nothing has started training yet.'));
    const searched = state.rounds.filter((r) => (state.trials.get(r.k) || []).length);
    trialsSection.hidden = searched.length === 0;
    fill(trialsBox, searched.map((r) => trialsFigure(r, state.trials.get(r.k))));
    const shown = state.rounds.filter((r) => state.samples.get(r.k));
    const teacher = state.samples.get('teacher');
    // Keep figures whose image is already on screen (no flicker), add the new ones: the
    // teacher's first, then the rounds' in order.
    const onScreen = new Set([...samplesBox.querySelectorAll('figure')].map((f) => f.dataset.samplesRound));
    if ((shown.length || teacher) && onScreen.size === 0) samplesBox.replaceChildren();
    for (const r of shown) {
      if (!onScreen.has(String(r.k))) samplesBox.append(sampleFigure(r, state.samples.get(r.k)));
    }
    if (teacher && !onScreen.has('teacher')) samplesBox.prepend(teacherSampleFigure(state.campaign.teacher, teacher));
  }

  let busy = false;
  let again = false;
  async function refreshDetails() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const jobs = [loadSamples('teacher', state.campaign?.teacher?.samples_url)];
        if (state.campaign) jobs.push(loadHistory(state.campaign));
        if (trainsTeacher()) {
          const t = state.campaign.teacher;
          const lossKey = `${t.status}:${t.updates_done}`;
          if (due(state.lossSeen, { k: 'teacher', status: t.status }, lossKey)) jobs.push(loadLoss({ k: 'teacher' }, lossKey));
        }
        for (const r of state.rounds) {
          if (r.status === 'pending') continue;
          const lossKey = `${r.status}:${r.updates_done}`;
          if (due(state.lossSeen, r, lossKey)) jobs.push(loadLoss(r, lossKey));
          if (due(state.trialsSeen, r, r.status)) jobs.push(loadTrials(r, r.status));
          jobs.push(loadSamples(r.k, r.samples_url));
        }
        await Promise.all(jobs);
        if (signal.aborted) return;
        renderDetails();
      } while (again && !signal.aborted);
    } finally {
      busy = false;
    }
  }

  function onSnapshot({ campaign, rounds }) {
    state.campaign = campaign;
    state.rounds = rounds;
    renderCampaign(campaign);
    fill(roundsBox, rounds.length ? roundTable(rounds) : h('p', { class: 'muted' }, 'No rounds planned.'));
    fill(fidBox, fidChart(rounds, campaign.teacher));
    refreshDetails();
  }

  // -- actions ---------------------------------------------------------------------------------
  function showActionError(err) {
    fill(actionError, `${err.message}`);
    actionError.hidden = false;
  }

  cancelBtn.addEventListener('click', () => {
    confirm.hidden = false;
    actionError.hidden = true;
    confirmYes.focus();
  });
  confirmNo.addEventListener('click', () => {
    confirm.hidden = true;
    cancelBtn.focus();
  });
  confirmYes.addEventListener('click', async () => {
    confirmYes.disabled = true;
    try {
      const c = await request(`${base}/cancel`, { method: 'POST', signal });
      confirm.hidden = true;
      renderCampaign(c);
      announce(`Cancel requested: ${c.status}`);
    } catch (err) {
      if (!signal.aborted) showActionError(err);
    } finally {
      confirmYes.disabled = false;
    }
  });
  resumeBtn.addEventListener('click', async () => {
    resumeBtn.disabled = true;
    actionError.hidden = true;
    try {
      const c = await request(`${base}/resume`, { method: 'POST', signal });
      renderCampaign(c);
      announce(`Resumed: ${c.status}`);
      startFollowing(); // the stream had ended at the final status
    } catch (err) {
      if (!signal.aborted) showActionError(err);
      if (state.campaign) renderCampaign(state.campaign);
    }
  });

  // The round table and the facts are drawn again as the campaign moves: one listener on each
  // box for their Download buttons (the students', the teacher's).
  async function onDownload(event) {
    const button = event.target.closest('button[data-download]');
    if (!button) return;
    button.disabled = true;
    actionError.hidden = true;
    try {
      await download(button.dataset.download, signal);
    } catch (err) {
      if (!signal.aborted) showActionError(err);
    } finally {
      button.disabled = false;
    }
  }
  roundsBox.addEventListener('click', onDownload);
  facts.addEventListener('click', onDownload);

  logDetails.addEventListener('toggle', async () => {
    if (!logDetails.open) return;
    fill(logPre, 'Loading…');
    try {
      const response = await request(`${base}/logs?lines=200`, { signal, raw: true, accept: 'text/plain' });
      fill(logPre, (await response.text()) || '(empty)');
    } catch (err) {
      if (!signal.aborted) fill(logPre, `No log: ${err.message}`);
    }
  });

  // -- live --------------------------------------------------------------------------------------
  let following = null;
  function startFollowing() {
    following?.abort();
    following = new AbortController();
    const both = AbortSignal.any([signal, following.signal]);
    follow(id, { signal: both, onSnapshot, onMode: setMode });
  }
  startFollowing();
}
