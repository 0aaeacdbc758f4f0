"""The client commands: `pdistill submit/status/watch/cancel/logs/fetch`, against the API at
PDISTILL_API_URL with the token PDISTILL_API_TOKEN."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from api.cli_errors import err, fail
from api.client import ApiError, Client
from api.watch import history_line, rounds_table, teacher_line
from api.watch import watch as follow
from orchestrator.settings import Settings

console = Console(soft_wrap=True)  # a path or an id is never cut in two
if not console.is_terminal:  # pipes and logs: whole ids and statuses, not 80 truncated columns
    console.width = max(console.width, 160)


def _client() -> Client:
    settings = Settings()
    if settings.api_token is None:
        raise fail("no API token: set PDISTILL_API_TOKEN (`pdistill token create`)", 2)
    return Client(settings.api_url, settings.api_token.get_secret_value())


def _fail(exc: ApiError) -> typer.Exit:
    return fail(exc, exc.exit_code)


def _ago(iso: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="campaign spec")],
    priority: Annotated[int | None, typer.Option(help="higher starts first")] = None,
) -> None:
    """Submit a campaign; prints its id."""
    try:
        data = yaml.safe_load(spec_path.read_text())
    except OSError as exc:
        raise fail(f"{spec_path}: cannot read spec: {exc}", 2) from exc
    except yaml.YAMLError as exc:
        raise fail(f"{spec_path}: not valid YAML: {exc}", 2) from exc
    if not isinstance(data, dict):
        raise fail(f"{spec_path}: a campaign spec is a YAML mapping", 2)
    if priority is not None:
        data["priority"] = priority
    with _client() as client:
        try:
            c = client.submit(data)
        except ApiError as exc:
            raise _fail(exc) from exc
    err.print(f"campaign {c['id']} ({c['name']}) {c['status']}; `pdistill watch {c['id']}`")
    print(c["id"])


def _table(items: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("id", "name", "team", "status", "round", "progress", "best FID", "created"):
        table.add_column(col)
    for c in items:
        table.add_row(
            c["id"],
            c["name"],
            c["team"],
            c["status"],
            f"{c['current_round'] or '-'}/{c['rounds_total']}",
            f"{100 * c['progress']:.0f}%",
            "-" if c["best_fid"] is None else f"{c['best_fid']:.2f}",
            _ago(c["created_at"]),
        )
    return table


def status(
    campaign_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Your campaigns, or one campaign with its rounds and its history."""
    with _client() as client:
        try:
            if campaign_id is None:
                page = client.get("/v1/campaigns", limit=limit)
                console.print(_table(page["items"]))
                console.print(f"{len(page['items'])} of {page['total']} campaigns")
                return
            c = client.get(f"/v1/campaigns/{campaign_id}")
            rounds = client.get(f"/v1/campaigns/{campaign_id}/rounds")
            history = client.get(f"/v1/campaigns/{campaign_id}/history")
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(_table([c]))
    if c.get("reason"):
        console.print(f"reason: {c['reason']}", highlight=False)
    teacher = c["teacher"]
    kept = f"; kept at {teacher['checkpoint_uri']}" if teacher.get("checkpoint_uri") else ""
    console.print(teacher_line(teacher) + kept, highlight=False, soft_wrap=True)
    console.print(rounds_table(c, rounds))
    console.print("history:")
    for e in history:
        console.print(f"  {history_line(e)}", highlight=False, soft_wrap=True)


def watch(campaign_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Follow a campaign live until it ends; exit 0 when it succeeded, 1 otherwise."""
    with _client() as client:
        try:
            code = follow(client, campaign_id, console)
        except ApiError as exc:
            raise _fail(exc) from exc
    raise typer.Exit(code)


def cancel(campaign_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a campaign (its running round stops)."""
    with _client() as client:
        try:
            c = client.cancel(campaign_id)
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(f"campaign {c['id']}: {c['status']}")


def logs(
    campaign_id: Annotated[str, typer.Argument(metavar="ID")],
    lines: Annotated[int, typer.Option(min=1, help="last lines")] = 200,
) -> None:
    """The tail of the campaign driver's log."""
    with _client() as client:
        try:
            text = client.logs(campaign_id, lines)
        except ApiError as exc:
            raise _fail(exc) from exc
    print(text, end="")


@contextmanager
def _transfer_bar(what: str) -> Iterator[Callable[[int, int | None], None]]:
    """A byte-count bar on stderr while a file arrives (a terminal only; it is erased after)."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=True, disable=not err.is_interactive) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def fetch(
    campaign_id: Annotated[str, typer.Argument(metavar="ID")],
    round_k: Annotated[
        int | None,
        typer.Option("--round", min=1, help="the round (default: the last trained one)"),
    ] = None,
    teacher: Annotated[
        bool, typer.Option("--teacher", help="the campaign's teacher instead of a student")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="a file, or a directory for the server's file name (default: .)"
        ),
    ] = None,
) -> None:
    """Download a round's distilled student, or the teacher.

    One safetensors file that holds its config (`pdistill sample` draws images from it)."""
    if teacher and round_k is not None:
        raise fail("--teacher and --round exclude each other", 2)
    target = out.expanduser() if out is not None else None
    if target is not None and not (target.is_dir() or target.parent.is_dir()):
        raise fail(f"--out: {out}: no such directory", 2)
    with _client() as client:
        try:
            if teacher:  # the API answers 404 with the teacher's status until it is ready
                what, where = "teacher", f"/v1/campaigns/{campaign_id}/teacher.safetensors"
            else:
                what, where = _student(client, campaign_id, round_k)
            with _transfer_bar(what) as report:
                path, size = client.download(where, target, progress=report)
        except ApiError as exc:
            raise _fail(exc) from exc
    console.print(f"{what}: {path} ({size / 1e6:.1f} MB)", highlight=False)


def _student(client: Client, campaign_id: str, round_k: int | None) -> tuple[str, str]:
    """('round K student, N-step sampling', its API path): round K, or the last trained one."""
    rounds = client.get(f"/v1/campaigns/{campaign_id}/rounds")
    if round_k is None:
        trained = [r for r in rounds if r["student_url"]]
        if not trained:
            states = ", ".join(f"round {r['k']} {r['status']}" for r in rounds)
            raise fail(f"campaign {campaign_id} has no trained round yet ({states})", 1)
        round_k = trained[-1]["k"]
    r = next((r for r in rounds if r["k"] == round_k), None)
    steps = f", {r['student_steps']}-step sampling" if r else ""
    where = f"/v1/campaigns/{campaign_id}/rounds/{round_k}/student.safetensors"
    return f"round {round_k} student{steps}", where
