"""A stage's loss history as MLflow gives it (in no set order): the attempts of a stage that
started again (a lost process, Train worker or node; a resumed campaign) and where from, the
points that lead to the model it holds now, and a progress line with an ETA."""

from __future__ import annotations

from itertools import pairwise
from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Metric

TEACHER_LOSS = "teacher/loss"  # on the campaign's MLflow run, stepped by update
TRAIN_LOSS = "train/loss"  # on a round's MLflow run (and an LR trial's), stepped by update
# As each attempt of a stage's training starts: the update it starts from (value and step).
TEACHER_START = "teacher/start"
TRAIN_START = "train/start"


def _starts(history: list[Metric]) -> tuple[list[Metric], list[int]]:
    """A loss history in the order it was logged, and where its stage started again (a stage
    that restarts logs from an earlier update again)."""
    points = sorted(history, key=lambda m: (m.timestamp, m.step))
    return points, [i for i in range(1, len(points)) if points[i].step <= points[i - 1].step]


def current_attempt(history: list[Metric]) -> list[Metric]:
    """The points of a loss history logged since its stage last (re)started."""
    points, starts = _starts(history)
    return points[starts[-1] :] if starts else points


def lineage(history: list[Metric]) -> list[Metric]:
    """The points of a loss history that lead to the model its stage holds now, by update: each
    restart drops what the attempts before it logged from its own first update on (a round that
    went back from update 80 to its checkpoint at 50 keeps the old 10…50 and the new 60…)."""
    points, starts = _starts(history)
    restarted = set(starts)
    kept: list[Metric] = []
    for i, m in enumerate(points):
        if i in restarted:
            kept = [k for k in kept if k.step < m.step]
        kept.append(m)
    return kept


def restarts(starts: list[Metric], history: list[Metric]) -> list[tuple[int, int | None]]:
    """Each time a stage's training started again, from the attempts it logged as they started
    (`starts`, every one after the first) and its loss history: (the update it went on from,
    the last update logged before it, None when none was)."""
    attempts = sorted(starts, key=lambda m: (m.timestamp, m.step))[1:]
    out: list[tuple[int, int | None]] = []
    for a in attempts:
        before = [m for m in history if m.timestamp <= a.timestamp]
        last = max(before, key=lambda m: (m.timestamp, m.step), default=None)
        out.append((int(a.step), None if last is None else int(last.step)))
    return out


def latest(history: list[Metric], total: int) -> str:
    """'update k/N, loss x, eta Ts' from a loss history, or 'starting' when nothing is logged
    yet. The ETA is from the current attempt's median rate between log points: a pause that
    logged nothing (a driver down, a campaign resumed from where its last point was logged, a
    first update that compiled) is one slow interval among many, not part of the rate."""
    points = current_attempt(history)
    if not points:
        return "starting"
    last = points[-1]
    rates = [
        (b.step - a.step) / max(1e-3, (b.timestamp - a.timestamp) / 1e3)
        for a, b in pairwise(points)
    ]
    eta = f", eta {(total - last.step) / median(rates):.0f}s" if rates else ""
    return f"update {last.step}/{total}, loss {last.value:.4g}{eta}"
