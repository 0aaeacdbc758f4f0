"""How every `pdistill` command fails: one `error:` line on stderr, never wrapped (a path or URI
in it stays whole for whoever copies it or greps a log), and an exit code (2: bad input, 1: it
failed)."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)  # the commands' other messages for people, too


def fail(message: object, code: int) -> typer.Exit:
    """Print the error line; the exit to raise (`raise fail(...) from exc`)."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)
