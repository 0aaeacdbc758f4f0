// A small SVG chart: lines and/or markers of a few series, linear or log axes, ticks, a legend.
//
//   chart({
//     title: 'FID vs steps', xLabel: 'steps', yLabel: 'FID',
//     logX: true, xTicks: [1, 2, 4, 8],   // or xInteger: true (ticks on whole numbers only)
//     series: [{ name: 'distilled', points: [{ x: 1, y: 9.1, label: 'round 3' }], line: true }],
//   })  → <svg class="chart">
//
// Colours come from CSS classes (s0, s1, …); series also differ by marker shape and dash, so
// they stay apart in grey print and for colour-blind readers.

import { s } from './dom.js';

const WIDTH = 560;
const HEIGHT = 300;
const MARGIN = { top: 34, right: 18, bottom: 46, left: 64 };
const MARKERS_UP_TO = 80; // more points than this: a line without markers
const SHAPES = ['circle', 'square', 'triangle', 'diamond'];

function finite(v, log) {
  return Number.isFinite(v) && (!log || v > 0);
}

function transform(log) {
  return log ? Math.log10 : (v) => v;
}

/** [lo, hi] of the values in the axis' own space, widened a little (and when lo === hi). */
function extent(values, log) {
  const f = transform(log);
  let lo = Math.min(...values.map(f));
  let hi = Math.max(...values.map(f));
  if (lo === hi) {
    const pad = log ? 0.3 : Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  } else {
    const pad = (hi - lo) * 0.06;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  return (unit >= 5 ? 10 : unit >= 2 ? 5 : unit >= 1 ? 2 : 1) * power;
}

function linearTicks(lo, hi, count = 5) {
  const step = niceStep(hi - lo, count);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

function logTicks(lo, hi) {
  // lo, hi are log10 values; decades first, then 2× and 5× when the range is short.
  const ticks = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      const lv = Math.log10(v);
      if (lv >= lo - 1e-9 && lv <= hi + 1e-9) ticks.push({ v, m });
    }
  }
  const decades = ticks.filter((t) => t.m === 1);
  const chosen = decades.length >= 3 ? decades : ticks;
  if (chosen.length >= 2) return chosen.map((t) => Number(t.v.toPrecision(12)));
  return linearTicks(10 ** lo, 10 ** hi, 3).filter((v) => v > 0);
}

export function tickLabel(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e3 && a < 1e9 && Number.isInteger(v)) {
    return a >= 1e6 ? `${Number((v / 1e6).toPrecision(3))}M` : `${Number((v / 1e3).toPrecision(3))}k`;
  }
  if (a >= 1e4 || a < 1e-2) {
    const [mant, exp] = v.toExponential(1).split('e');
    return `${mant.replace(/\.0$/, '')}e${Number(exp)}`;
  }
  return String(Number(v.toPrecision(3)));
}

function axis(values, log, [from, to], fixedTicks, integer) {
  const [lo, hi] = extent(values, log);
  const f = transform(log);
  const at = (v) => from + ((f(v) - lo) / (hi - lo)) * (to - from);
  const inRange = (v) => finite(v, log) && f(v) >= lo - 1e-9 && f(v) <= hi + 1e-9;
  let ticks = fixedTicks
    ? fixedTicks.filter(inRange)
    : log ? logTicks(lo, hi) : linearTicks(lo, hi);
  if (integer) ticks = ticks.filter(Number.isInteger);
  return { at, ticks };
}

function marker(shape, x, y, cls) {
  const r = 4;
  switch (shape) {
    case 'square':
      return s('rect', { class: cls, x: x - r, y: y - r, width: 2 * r, height: 2 * r });
    case 'triangle':
      return s('path', { class: cls, d: `M${x},${y - r - 1}L${x + r + 1},${y + r}L${x - r - 1},${y + r}Z` });
    case 'diamond':
      return s('path', { class: cls, d: `M${x},${y - r - 1}L${x + r + 1},${y}L${x},${y + r + 1}L${x - r - 1},${y}Z` });
    default:
      return s('circle', { class: cls, cx: x, cy: y, r });
  }
}

const round1 = (v) => Math.round(v * 10) / 10;

/** The chart as an <svg> element; see the top of this file. */
export function chart({
  title, xLabel, yLabel, series, logX = false, logY = false, xTicks = null, xInteger = false,
  width = WIDTH, height = HEIGHT, emptyText = 'No data yet',
}) {
  const clean = series.map((se, i) => ({
    ...se,
    index: i,
    points: se.points.filter((p) => finite(p.x, logX) && finite(p.y, logY)).sort((a, b) => a.x - b.x),
  }));
  const all = clean.flatMap((se) => se.points);
  const summary = clean.map((se) => `${se.name}: ${se.points.length} points`).join('; ');
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `${title}. ${all.length ? summary : emptyText}`,
    preserveAspectRatio: 'xMidYMid meet',
  }, s('title', {}, title));
  const plot = { left: MARGIN.left, right: width - MARGIN.right, top: MARGIN.top, bottom: height - MARGIN.bottom };
  svg.append(s('rect', {
    class: 'frame', x: plot.left, y: plot.top, width: plot.right - plot.left, height: plot.bottom - plot.top,
  }));
  svg.append(s('text', { class: 'axis-label', x: (plot.left + plot.right) / 2, y: height - 8, 'text-anchor': 'middle' }, xLabel));
  svg.append(s('text', {
    class: 'axis-label', 'text-anchor': 'middle',
    transform: `translate(16 ${(plot.top + plot.bottom) / 2}) rotate(-90)`,
  }, yLabel));
  if (!all.length) {
    svg.append(s('text', { class: 'empty', x: (plot.left + plot.right) / 2, y: (plot.top + plot.bottom) / 2, 'text-anchor': 'middle' }, emptyText));
    return svg;
  }

  const xAxis = axis(all.map((p) => p.x), logX, [plot.left, plot.right], xTicks, xInteger);
  const yAxis = axis(all.map((p) => p.y), logY, [plot.bottom, plot.top], null);
  const grid = s('g', { class: 'grid' });
  for (const v of xAxis.ticks) {
    const x = round1(xAxis.at(v));
    grid.append(s('line', { x1: x, x2: x, y1: plot.top, y2: plot.bottom }));
    grid.append(s('text', { class: 'tick', x, y: plot.bottom + 16, 'text-anchor': 'middle' }, tickLabel(v)));
  }
  for (const v of yAxis.ticks) {
    const y = round1(yAxis.at(v));
    grid.append(s('line', { x1: plot.left, x2: plot.right, y1: y, y2: y }));
    grid.append(s('text', { class: 'tick', x: plot.left - 6, y: y + 4, 'text-anchor': 'end' }, tickLabel(v)));
  }
  svg.append(grid);

  const legend = s('g', { class: 'legend' });
  let legendX = plot.left;
  for (const se of clean) {
    const cls = `s${se.index % 4}`;
    const shape = SHAPES[se.index % SHAPES.length];
    const dashed = se.index % 2 === 1;
    const g = s('g', { class: `series ${cls}`, 'data-series': se.name });
    const xy = se.points.map((p) => [round1(xAxis.at(p.x)), round1(yAxis.at(p.y))]);
    if (se.line !== false && xy.length > 1) {
      g.append(s('path', {
        class: `series-line${dashed ? ' dashed' : ''}`,
        d: xy.map(([x, y], i) => `${i ? 'L' : 'M'}${x},${y}`).join(''),
      }));
    }
    const markers = se.markers ?? se.points.length <= MARKERS_UP_TO;
    if (markers || xy.length === 1) {
      se.points.forEach((p, i) => {
        const m = marker(shape, xy[i][0], xy[i][1], p.highlight ? 'point highlight' : 'point');
        m.append(s('title', {}, p.label || `${se.name}: ${tickLabel(p.x)}, ${tickLabel(p.y)}`));
        g.append(m);
      });
    }
    svg.append(g);
    // Legend entry: a short stroke with the series' marker, then its name.
    const entry = s('g', { class: `legend-entry ${cls}` });
    if (se.line !== false) {
      entry.append(s('line', { class: `series-line${dashed ? ' dashed' : ''}`, x1: legendX, x2: legendX + 22, y1: 14, y2: 14 }));
    }
    entry.append(marker(shape, legendX + 11, 14, 'point'));
    entry.append(s('text', { x: legendX + 28, y: 18 }, se.name));
    legend.append(entry);
    legendX += 40 + 7 * String(se.name).length;
  }
  svg.append(legend);
  return svg;
}
