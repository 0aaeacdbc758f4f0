// The parts of a campaign page that show its rounds: the round table, the FID-vs-steps chart,
// loss curves, the LR search of each round, sample grids. Pure renderers: data in, elements out.

import { chart } from '../chart.js';
import {
  badge, fmtCount, fmtDuration, fmtFid, fmtGpuHours, fmtLr, fmtNum, h,
} from '../dom.js';

// Charts in a grid of panels: a smaller canvas, so their text reads as large as the main chart's.
const PANEL = { width: 440, height: 270 };

// While a round evaluates: the samples drawn of those its FIDs need (its student's, then DDIM's).
function evalProgress(r) {
  if (r.status !== 'evaluating' || !r.eval_samples) return null;
  return h('span', { class: 'muted small', 'data-eval': '' },
    ` ${fmtCount(r.eval_samples_done)} / ${fmtCount(r.eval_samples)} samples`);
}

export function roundTable(rounds) {
  const fid = () => h('abbr', { title: 'Fréchet Inception Distance (lower is better)' }, 'FID');
  return h('table', { class: 'data', id: 'rounds' },
    h('caption', { class: 'visually-hidden' }, 'Rounds of this campaign'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', class: 'num' }, 'Round'),
      h('th', { scope: 'col' }, h('abbr', { title: 'sampling steps: teacher → student' }, 'Steps')),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'num' }, 'Updates'),
      h('th', { scope: 'col', class: 'num' }, 'Chosen LR'),
      h('th', { scope: 'col', class: 'num' }, 'Loss'),
      h('th', { scope: 'col', class: 'num' }, fid(), ' distilled'),
      h('th', { scope: 'col', class: 'num' }, fid(), ' DDIM, same steps'),
      h('th', { scope: 'col', class: 'num' }, 'Wall time'),
      h('th', { scope: 'col', class: 'num' }, 'GPU-hours'),
      h('th', { scope: 'col' }, 'Student'))),
    h('tbody', {}, rounds.map((r) => h('tr', { 'data-round': r.k },
      h('th', { scope: 'row', class: 'num' }, String(r.k)),
      h('td', { 'data-col': 'steps' }, `${r.teacher_steps} → ${r.student_steps}`),
      h('td', { 'data-col': 'status' }, badge(r.status), evalProgress(r)),
      h('td', { class: 'num', 'data-col': 'updates' }, `${fmtCount(r.updates_done)} / ${fmtCount(r.updates)}`),
      h('td', { class: 'num', 'data-col': 'lr' }, fmtLr(r.lr)),
      h('td', { class: 'num', 'data-col': 'loss' }, fmtNum(r.loss)),
      h('td', { class: 'num', 'data-col': 'fid' }, fmtFid(r.fid)),
      h('td', { class: 'num', 'data-col': 'ddim-fid' }, fmtFid(r.ddim_fid)),
      h('td', { class: 'num', 'data-col': 'wall' }, fmtDuration(r.wall_seconds)),
      h('td', { class: 'num', 'data-col': 'gpu-hours' }, fmtGpuHours(r.gpu_seconds)),
      h('td', { 'data-col': 'student' }, r.student_url
        ? h('button', {
          type: 'button',
          class: 'secondary small',
          'data-download': r.student_url,
          'aria-label': `Download the round ${r.k} student (${r.student_steps}-step sampling)`,
        }, 'Download')
        : h('span', { class: 'muted' }, '—'))))));
}

// The teacher's own FID (at its own steps) is the DDIM curve's rightmost point: where distillation starts.
export function fidChart(rounds, teacher) {
  const own = Number.isFinite(teacher?.fid)
    ? [{ x: teacher.steps, y: teacher.fid, label: `teacher, ${teacher.steps} steps: FID ${fmtFid(teacher.fid)}` }]
    : [];
  const steps = [...new Set([...rounds.map((r) => r.student_steps), ...own.map((p) => p.x)])].sort((a, b) => a - b);
  const at = (key) => rounds
    .filter((r) => Number.isFinite(r[key]))
    .map((r) => ({ x: r.student_steps, y: r[key], label: `round ${r.k}, ${r.student_steps} steps: FID ${fmtFid(r[key])}` }));
  return chart({
    title: 'FID vs sampling steps',
    xLabel: 'sampling steps (log scale)',
    yLabel: 'FID',
    logX: true,
    xTicks: steps,
    series: [
      { name: 'distilled student', points: at('fid') },
      { name: 'DDIM teacher', points: [...at('ddim_fid'), ...own] },
    ],
    emptyText: 'No round evaluated yet',
  });
}

/** A figure per round with its training loss by update (log y when it spans decades). */
// A training loss by update (log scale when it spans more than 50×), or why it is missing.
function lossPanel(key, caption, name, points, problem, emptyText) {
  const ys = points.map((p) => p.loss).filter((v) => v > 0);
  const logY = ys.length > 1 && Math.max(...ys) / Math.min(...ys) > 50;
  const body = problem
    ? h('p', { class: 'muted' }, problem)
    : chart({
      title: `Training loss, ${caption}`,
      xLabel: 'update',
      yLabel: logY ? 'loss (log scale)' : 'loss',
      logY,
      xInteger: true,
      ...PANEL,
      series: [{ name, points: points.map((p) => ({ x: p.step, y: p.loss })) }],
      emptyText,
    });
  return h('figure', { class: 'panel', 'data-loss-round': key }, body, h('figcaption', {}, caption));
}

export function lossFigure(round, points, problem) {
  const caption = `Round ${round.k} (${round.teacher_steps} → ${round.student_steps} steps)`;
  return lossPanel(round.k, caption, `round ${round.k}`, points, problem,
    round.status === 'pending' ? 'Not started' : 'No loss logged yet');
}

/** The teacher's training loss (a campaign that trains its teacher). */
export function teacherLossFigure(teacher, points, problem) {
  return lossPanel('teacher', `Teacher (${teacher.steps} steps)`, 'teacher', points, problem,
    teacher.status === 'pending' ? 'Not started' : 'No loss logged yet');
}

/** The LR search of a round: held-out loss by learning rate, the chosen LR highlighted. */
export function trialsFigure(round, trials) {
  const caption = `Round ${round.k}: ${trials.length} trials; chosen LR ${fmtLr(round.lr)}`;
  const point = (t) => ({
    x: t.lr,
    y: t.val_loss,
    highlight: Number.isFinite(round.lr) && Math.abs(t.lr - round.lr) <= 1e-9 * Math.abs(round.lr),
    label: `trial ${t.index}: LR ${fmtLr(t.lr)}, held-out loss ${fmtNum(t.val_loss)} (${t.status})`,
  });
  const done = trials.filter((t) => Number.isFinite(t.val_loss));
  const svg = chart({
    title: `LR search, round ${round.k}`,
    xLabel: 'learning rate (log scale)',
    yLabel: 'held-out loss',
    logX: true,
    ...PANEL,
    series: [{ name: 'trials (ringed: chosen)', points: done.map(point), line: false, markers: true }],
    emptyText: 'No trial finished yet',
  });
  const list = h('ul', { class: 'trial-list small' }, trials.map((t) => h('li', {},
    `#${t.index} LR ${fmtLr(t.lr)} → ${fmtNum(t.val_loss)} `, h('span', { class: 'muted' }, `(${t.status})`))));
  return h('figure', { class: 'panel', 'data-trials-round': round.k }, svg,
    h('figcaption', {}, caption), list);
}

const stepsText = (n) => `${n} step${n === 1 ? '' : 's'}`;

export function sampleFigure(round, src) {
  return h('figure', { class: 'panel samples', 'data-samples-round': round.k },
    h('img', {
      src,
      alt: `Sample grid of the distilled student of round ${round.k} at ${round.student_steps} sampling steps`,
    }),
    h('figcaption', {}, `Round ${round.k}: ${stepsText(round.student_steps)}, FID ${fmtFid(round.fid)}`));
}

/** The teacher's grid, drawn from the same noise as every round's: the quality they distil. */
export function teacherSampleFigure(teacher, src) {
  return h('figure', { class: 'panel samples', 'data-samples-round': 'teacher' },
    h('img', { src, alt: `Sample grid of the teacher at ${teacher.steps} sampling steps (DDIM)` }),
    h('figcaption', {}, `Teacher: ${stepsText(teacher.steps)} (DDIM), FID ${fmtFid(teacher.fid)}`));
}
