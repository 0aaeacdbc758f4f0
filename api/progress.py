"""Rich progress for long campaign stages (the CLI side of `orchestrator.local.Progress`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from workers.training import ProgressFn


def say(console: Console, text: str) -> None:
    """One line of progress: logged (time, source) on a terminal; elsewhere (CI logs, pipes)
    plain, with its time, and never wrapped, so that it reads and searches whole."""
    if console.is_terminal:
        console.log(text)
    else:
        stamped = f"{time.strftime('%H:%M:%S')} {text}"
        console.print(stamped, soft_wrap=True, markup=False, highlight=False)


class RichProgress:
    """One bar per stage with updates done, loss, elapsed time and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            # Not a terminal (CI logs, pipes): print a line now and then instead of redrawing.
            disable=not console.is_terminal,
        )
        self._plain_every = 30.0

    def __enter__(self) -> RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.__exit__(None, None, None)

    def note(self, text: str) -> None:
        say(self.console, text)

    def task(self, description: str, total: int) -> ProgressFn:
        """A training's bar: updates done of `total`, with the latest loss."""
        show = self._bar(description, total, "updates")

        def update(done: int, total_: int, loss: float) -> None:
            show(done, f"{loss:.4g}")

        return update

    def count(self, description: str, total: int) -> Callable[[int], None]:
        """An evaluation's bar: samples drawn of `total`; the function hears of each n drawn."""
        show = self._bar(description, total, "samples")
        drawn = [0]

        def add(n: int) -> None:
            drawn[0] += n
            show(drawn[0], "-")

        return add

    def _bar(self, description: str, total: int, unit: str) -> Callable[[int, str], None]:
        """(done, loss text) → the bar; when not a terminal, a line every 30 s and at the end."""
        task_id = self.bars.add_task(description, total=total, loss="-")
        started = time.monotonic()
        last_line = [started]

        def show(done: int, loss: str) -> None:
            self.bars.update(task_id, completed=done, loss=loss)
            now = time.monotonic()
            if not self.console.is_terminal and (
                now - last_line[0] > self._plain_every or done == total
            ):
                last_line[0] = now
                eta = (now - started) / max(done, 1) * (total - done)
                said = f", loss {loss}" if loss != "-" else ""
                say(self.console, f"{description}: {done}/{total} {unit}{said}, eta {eta:.0f}s")

        return show
