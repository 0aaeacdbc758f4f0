"""Rich progress for long campaign stages (the CLI side of `orchestrator.local.Progress`)."""

from __future__ import annotations

import time

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
        self.console.log(text)

    def task(self, description: str, total: int) -> ProgressFn:
        task_id = self.bars.add_task(description, total=total, loss="-")
        started = time.monotonic()
        last_line = [started]

        def update(done: int, total_: int, loss: float) -> None:
            self.bars.update(task_id, completed=done, loss=f"{loss:.4g}")
            now = time.monotonic()
            if not self.console.is_terminal and (
                now - last_line[0] > self._plain_every or done == total_
            ):
                last_line[0] = now
                eta = (now - started) / done * (total_ - done)
                self.console.log(
                    f"{description}: {done}/{total_} updates, loss {loss:.4g}, eta {eta:.0f}s"
                )

        return update
