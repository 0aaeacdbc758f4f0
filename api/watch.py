"""`pdistill watch ID`: live progress bars of the teacher and each round, from the campaign's
event stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.client import ApiError, Client

FINAL = {"succeeded", "failed", "cancelled"}
RECONNECTS = 30
RETRY_S = 2.0
NOTES_EVERY_S = 5.0  # how often the history is read for notes while the campaign runs


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _drawn(r: dict[str, Any]) -> str:
    """'16/64' while a round evaluates (of a round made before the store counted them: '')."""
    if r["status"] != "evaluating" or not r.get("eval_samples"):
        return ""
    return f"{r['eval_samples_done']}/{r['eval_samples']}"


def round_line(r: dict[str, Any]) -> str:
    head = f"round {r['k']} ({r['teacher_steps']}→{r['student_steps']} steps): {r['status']}"
    parts = [f"{r['updates_done']}/{r['updates']} updates"]
    if drawn := _drawn(r):
        parts.append(f"{drawn} samples")
    if r.get("loss") is not None:
        parts.append(f"loss {r['loss']:.4g}")
    if r.get("lr") is not None:
        parts.append(f"lr {r['lr']:.3g}")
    if r.get("fid") is not None:
        parts.append(f"FID {r['fid']:.2f} (DDIM {_fmt(r.get('ddim_fid'))})")
    return f"{head}, " + ", ".join(parts)


def teacher_line(t: dict[str, Any]) -> str:
    fid = f", FID {t['fid']:.2f} at {t['steps']} steps" if t.get("fid") is not None else ""
    if not fid and t.get("eval_samples_done"):
        fid = f", evaluating {t['eval_samples_done']}/{t['eval_samples']} samples"
    if t["source"] == "checkpoint":
        return f"teacher (from a checkpoint): {t['status']}{fid}"
    line = f"teacher: {t['status']}, {t['updates_done']}/{t['updates']} updates"
    return line + (f", loss {t['loss']:.4g}" if t.get("loss") is not None else "") + fid


def rounds_table(campaign: dict[str, Any], rounds: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{campaign['id']} {campaign['name']}: {campaign['status']}")
    for col in ("round", "steps", "status", "updates", "lr", "loss", "FID", "DDIM FID", "wall s"):
        table.add_column(col, justify="right")
    t = campaign["teacher"]
    table.add_row(
        "teacher",
        str(t["steps"]),
        t["status"],
        f"{t['updates_done']}/{t['updates']}" if t["source"] == "train" else "loaded",
        "-",
        _fmt(t.get("loss"), ".4g"),
        _fmt(t.get("fid")),
        _fmt(t.get("fid")),  # the teacher samples with DDIM: its own FID at its own steps
        "-",
    )
    for r in rounds:
        table.add_row(
            str(r["k"]),
            f"{r['teacher_steps']}→{r['student_steps']}",
            f"{r['status']} {drawn}" if (drawn := _drawn(r)) else r["status"],
            f"{r['updates_done']}/{r['updates']}",
            _fmt(r.get("lr"), ".3g"),
            _fmt(r.get("loss"), ".4g"),
            _fmt(r.get("fid")),
            _fmt(r.get("ddim_fid")),
            _fmt(r.get("wall_seconds"), ".0f"),
        )
    return table


def history_line(e: dict[str, Any]) -> str:
    """'2026-11-28 16:35:57  queued → starting by scheduler: why' (times in UTC)."""
    at = datetime.fromisoformat(e["at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    change = f"{e['from_status']} → {e['to_status']}"
    if e["from_status"] is None:
        change = f"submitted: {e['to_status']}"
    elif e["from_status"] == e["to_status"]:
        change = e["to_status"]
    detail = f": {e['detail']}" if e["detail"] else ""
    return f"{at}  {change} by {e['actor']}{detail}"


Shown = dict[int, tuple[str, int, bool]]  # stage (0: the teacher) → what was printed of it


def _print_change(
    console: Console, shown: Shown, key: int, line: str, done: int, total: int
) -> None:
    """Print `line` when its head (before the first comma: who and status) changed, or it
    gained an FID (the teacher's comes after it is ready), so these also reach logs where the
    bars do not show; there (a pipe, a file) also at each tenth of its updates, so a long stage
    shows it moves."""
    tenth = done * 10 // total if total > 0 and not console.is_terminal else 0
    mark = (line.split(",")[0], tenth, "FID" in line)
    if mark != shown.get(key):
        console.print(line, soft_wrap=True)
    shown[key] = mark


class Notes:
    """The notes of a campaign's history (a round's training that started again), each printed
    once: read at most every NOTES_EVERY_S, and once more when the campaign is final."""

    def __init__(self, client: Client, campaign_id: str, console: Console) -> None:
        self.client, self.campaign_id, self.console = client, campaign_id, console
        self.printed, self.read_at = 0, -NOTES_EVERY_S  # entries looked at; when

    def show(self, *, final: bool) -> None:
        if not final and time.monotonic() - self.read_at < NOTES_EVERY_S:
            return
        self.read_at = time.monotonic()
        entries = self.client.get(f"/v1/campaigns/{self.campaign_id}/history")
        for e in entries[self.printed :]:  # the history only grows
            if e["from_status"] == e["to_status"]:
                self.console.print(history_line(e), soft_wrap=True, highlight=False)
        self.printed = len(entries)


def watch(
    client: Client, campaign_id: str, console: Console, stopped: Callable[[], bool] = lambda: False
) -> int:
    """Follow the campaign until it is final: 0 when it succeeded, 1 otherwise. Across an API
    restart it follows again; when `stopped()` (the caller's own API is stopping: `pdistill
    demo` after Ctrl-C) it returns 1 at once, without a word."""
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    tasks: dict[int, Any] = {}
    shown: Shown = {}
    last: dict[str, Any] = {}
    status_shown = ""
    notes = Notes(client, campaign_id, console)
    lost = False  # the API is unreachable (since the last failed attempt)
    with bars:
        for attempt in range(RECONNECTS):
            try:
                for event, data in client.events(campaign_id):
                    if lost:
                        console.print("the API answers again; following the campaign")
                        lost = False
                    if event == "end" and data.get("reason") != "final" and not stopped():
                        console.print(f"the API ended the event stream: {data.get('reason')}")
                    if event != "campaign":
                        continue
                    last = data
                    t = data["campaign"]["teacher"]
                    if t["source"] == "train":  # task 0: the teacher's training
                        if 0 not in tasks:
                            tasks[0] = bars.add_task("teacher", total=t["updates"], info="")
                        info = t["status"] + (f" loss {t['loss']:.4g}" if t.get("loss") else "")
                        bars.update(tasks[0], completed=t["updates_done"], info=info)
                    _print_change(
                        console, shown, 0, teacher_line(t), t["updates_done"], t["updates"]
                    )
                    for r in data["rounds"]:
                        k = r["k"]
                        if k not in tasks:
                            desc = f"round {k} {r['teacher_steps']}→{r['student_steps']}"
                            tasks[k] = bars.add_task(desc, total=r["updates"], info="")
                        info = r["status"] + (f" loss {r['loss']:.4g}" if r.get("loss") else "")
                        if r.get("fid") is not None:
                            info += f" FID {r['fid']:.2f}"
                        bars.update(tasks[k], completed=r["updates_done"], info=info)
                        _print_change(
                            console, shown, k, round_line(r), r["updates_done"], r["updates"]
                        )
                    c = data["campaign"]
                    notes.show(final=c["status"] in FINAL)
                    if c["status"] != status_shown:
                        reason = f" ({c['reason']})" if c.get("reason") else ""
                        console.print(
                            f"{c['id']} {c['name']}: {c['status']}{reason}", soft_wrap=True
                        )
                        status_shown = c["status"]
                if last and last["campaign"]["status"] in FINAL:
                    break
            except ApiError as exc:
                if stopped():
                    return 1
                if exc.status is not None or attempt == RECONNECTS - 1:
                    raise
                if not lost:  # once per outage: a silent wait looks like a hang
                    console.print(
                        f"{exc}; trying again every {RETRY_S:g} s, for up to "
                        f"{RECONNECTS * RETRY_S:g} s",
                        soft_wrap=True,
                    )
                lost = True
            if stopped():
                return 1
            time.sleep(RETRY_S)  # the stream broke (API restarting?): follow it again
    if not last:
        raise ApiError(f"no events from campaign {campaign_id}")
    c = last["campaign"]
    console.print(rounds_table(c, last["rounds"]))
    if c["status"] == "succeeded":
        console.print(f"campaign {c['id']} succeeded; best FID {_fmt(c.get('best_fid'))}")
        return 0
    reason = c.get("reason") or "no reason given"
    console.print(f"campaign {c['id']} {c['status']}: {reason}", soft_wrap=True)
    return 1
