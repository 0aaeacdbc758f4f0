"""A stage's histories as MLflow gives them (in no set order): the attempts of a training
that started again (a lost process, Train worker or node; a resumed campaign) and where from,
the points that lead to the model it holds now, a progress line with an ETA; the samples an
evaluation has drawn, and its restarts."""

from __future__ import annotations

from collections.abc import Sequence
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
# As an evaluation draws its samples (its student's, then its DDIM teacher's): how many it has
# drawn (value and step), on the round's run (the teacher's own evaluation: the campaign's run).
EVAL_SAMPLES = "eval/samples"


def _logged(m: Metric) -> tuple[int, int]:
    return m.timestamp, m.step


def _starts(history: list[Metric]) -> tuple[list[Metric], list[int]]:
    """A history in the order it was logged, and where its stage started again (a stage that
    restarts logs an earlier update, or sample count, again)."""
    points = sorted(history, key=_logged)
    return points, [i for i in range(1, len(points)) if points[i].step <= points[i - 1].step]


def current_attempt(history: list[Metric], starts: Sequence[Metric] = ()) -> list[Metric]:
    """The points of a loss history logged since its stage last (re)started: since the last of
    the attempts' `starts` (`TRAIN_START`, `TEACHER_START`) or its last step back, whichever
    came later; empty while the attempt running now has logged nothing."""
    points, backs = _starts(history)
    first = backs[-1] if backs else 0
    if starts:
        since = max(starts, key=_logged).timestamp
        first = max(
            first, next((i for i, m in enumerate(points) if m.timestamp >= since), len(points))
        )
    return points[first:]


def lineage(history: list[Metric], starts: Sequence[Metric] = ()) -> list[Metric]:
    """The points of a loss history that lead to the model its stage holds now, by update: a
    restart drops what the attempts before it logged after the update it went on from (a round
    that went back from update 80 to its checkpoint at 50 keeps the old 10…50 and the new
    60…). A restart is known from its start in `starts` as soon as that is logged, else from
    its first point that steps back."""
    points = sorted(history, key=_logged)
    # In time order; at one millisecond an attempt's start comes before the points it logs.
    events = sorted(
        [(m.timestamp, 0, m.step, n) for n, m in enumerate(starts)]
        + [(m.timestamp, 1, m.step, n) for n, m in enumerate(points)]
    )
    kept: list[Metric] = []
    for _, is_point, step, n in events:
        if not is_point:
            kept = [k for k in kept if k.step <= step]
            continue
        if kept and step <= kept[-1].step:  # a restart whose start is not in `starts`
            kept = [k for k in kept if k.step < step]
        kept.append(points[n])
    return kept


def drawn(history: list[Metric]) -> int:
    """The samples an evaluation has drawn (`EVAL_SAMPLES`): what it logged last (an evaluation
    that started again counts from 0 again), 0 before it logged."""
    return int(max(history, key=_logged).step) if history else 0


def redrawn(history: list[Metric]) -> list[int]:
    """Each time an evaluation started again (its process or node lost), known once it logged
    its first batch again (`EVAL_SAMPLES` steps back): the samples it had drawn before."""
    points, backs = _starts(history)
    return [int(points[i - 1].step) for i in backs]


def at(history: list[Metric], starts: Sequence[Metric] = ()) -> tuple[int, float | None]:
    """(the update a stage's training is at, its loss there) from its loss history and its
    attempts' starts: the current attempt's last point; before that attempt logs one, the
    update it went on from, with the loss logged there (None when none was)."""
    if points := current_attempt(history, starts):
        return int(points[-1].step), float(points[-1].value)
    if not starts:
        return 0, None
    step = int(max(starts, key=_logged).step)
    kept = lineage(history, starts)
    return step, float(kept[-1].value) if kept and kept[-1].step == step else None


def restarts(starts: list[Metric], history: list[Metric]) -> list[tuple[int, int | None]]:
    """Each time a stage's training started again, from the attempts it logged as they started
    (`starts`, every one after the first) and its loss history: (the update it went on from,
    the last update logged before it, None when none was)."""
    attempts = sorted(starts, key=_logged)[1:]
    out: list[tuple[int, int | None]] = []
    for a in attempts:
        before = [m for m in history if m.timestamp <= a.timestamp]
        last = max(before, key=_logged, default=None)
        out.append((int(a.step), None if last is None else int(last.step)))
    return out


def latest(history: list[Metric], total: int, starts: Sequence[Metric] = ()) -> str:
    """'update k/N, loss x, eta Ts' from a loss history and its attempts' starts; 'starting', or
    'resuming from update k/N', while the attempt running now has logged nothing. The ETA is
    from the current attempt's median rate between log points: a pause that logged nothing (a
    driver down, a campaign resumed from where its last point was logged, a first update that
    compiled) is one slow interval among many, not part of the rate."""
    points = current_attempt(history, starts)
    if not points:
        step, _ = at(history, starts)
        return f"resuming from update {step}/{total}" if step else "starting"
    last = points[-1]
    rates = [
        (b.step - a.step) / max(1e-3, (b.timestamp - a.timestamp) / 1e3)
        for a, b in pairwise(points)
    ]
    eta = f", eta {(total - last.step) / median(rates):.0f}s" if rates else ""
    return f"update {last.step}/{total}, loss {last.value:.4g}{eta}"
