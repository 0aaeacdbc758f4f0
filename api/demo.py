"""`pdistill demo [SPEC]`: the README's demo through the whole control plane.

It serves like `pdistill serve` (API, reconciler, the embedded Ray head unless
PDISTILL_RAY_ADDRESS is set), makes sure the team `demo` has a token (kept in
`state_dir/demo-token`, mode 0600, so every run logs in with the same one), submits the spec over
HTTP under an Idempotency-Key derived from the spec (running the demo again shows the same
campaign instead of starting a second one; a failed or cancelled one is resumed), follows it
like `pdistill watch`, prints the dashboard's page of the campaign and keeps serving until
Ctrl-C or SIGTERM: exit 0 when the campaign succeeded, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from api.cli_errors import fail
from api.cli_server import (
    control_plane_settings,
    refuse_taken_address,
    refuse_unreachable_storage,
    run_api,
)
from api.client import ApiError, Client
from api.watch import watch
from orchestrator.settings import Settings
from orchestrator.store import ConflictError, Store

DEMO_TEAM = "demo"
TOKEN_FILE = "demo-token"
DEFAULT_SPEC = Path("examples/mnist-demo.yaml")
UP_TIMEOUT_S = 120.0

console = Console(soft_wrap=True)  # a path or an id is never cut in two
if not console.is_terminal:  # `make demo > log`: whole round tables, not 80 truncated columns
    console.width = max(console.width, 160)


def read_spec(path: Path) -> dict[str, Any]:
    """The spec file as the API will receive it, checked here first (SpecError names the field)."""
    from orchestrator.spec import parse_spec, read_spec_file  # torch: only for this command

    data = read_spec_file(path)
    parse_spec(data, source=str(path))
    return data


def idempotency_key(spec: dict[str, Any]) -> str:
    """The same spec gives the same key (the API answers with the campaign it already has);
    an edited spec gives a new one, so a new campaign."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return f"demo-{digest[:40]}"


def demo_token(settings: Settings) -> str:
    """The demo team's token: the one kept in `state_dir/demo-token` while the store still
    accepts it, else a new one (the team is created on first use, with no GPU quota)."""
    path = settings.state_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text().strip()
        if kept:
            with Store.from_url(settings.database_url) as store:
                team = store.team_for_token(kept)
            if team is not None and team.name == DEMO_TEAM:
                return kept
    with Store.from_url(settings.database_url) as store:
        team = store.team_by_name(DEMO_TEAM)
        if team is None:
            with contextlib.suppress(ConflictError):  # created meanwhile by another process
                store.create_team(DEMO_TEAM, gpu_quota=0.0)
            team = store.team_by_name(DEMO_TEAM)
        assert team is not None
        plaintext, _ = store.create_token(team.id, "demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # A bearer token: readable by this user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plaintext + "\n")
    tmp.replace(path)
    return plaintext


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ApiError(f"the API at {url} did not answer /healthz within {UP_TIMEOUT_S:g} s")
        time.sleep(0.3)


class Presenter:
    """Submits the demo campaign once the API is up, follows it, and tells where to look.
    Runs in a thread beside the server; `code` is the process's exit code when it stops."""

    def __init__(self, *, url: str, token: str, token_path: Path, spec: dict[str, Any]) -> None:
        self.url, self.token, self.token_path, self.spec = url, token, token_path, spec
        self.code = 1  # until the campaign succeeded
        self.stopping = threading.Event()  # Ctrl-C: the API is stopping, nothing more to tell

    def where(self, campaign_id: str) -> None:
        # Plain prints: a URL or a token wrapped by the console could not be copied whole.
        print(f"dashboard: {self.url}/#/campaigns/{campaign_id}", flush=True)
        print(f"log in with the demo team's token: {self.token}", flush=True)
        print(f"(kept in {self.token_path}; Ctrl-C stops the demo)", flush=True)

    def run(self) -> None:
        try:
            self.code = self._present()
        except ApiError as exc:
            self.code = fail(exc, 1).exit_code  # the error line now; the exit when serving ends

    def _present(self) -> int:
        _wait_until_up(self.url)
        with Client(self.url, self.token) as client:
            c = client.submit(self.spec, key=idempotency_key(self.spec))
            cid = c["id"]
            console.print(f"campaign {cid} ({c['name']}): {c['status']}", highlight=False)
            if c["status"] in ("failed", "cancelled"):
                why = f" ({c['reason']})" if c.get("reason") else ""
                console.print(f"it {c['status']}{why}; resuming it (finished rounds are kept)")
                client.resume(cid)
            self.where(cid)
            code = watch(client, cid, console, stopped=self.stopping.is_set)
        if self.stopping.is_set():
            return code
        console.rule("the demo campaign " + ("succeeded" if code == 0 else "did not succeed"))
        self.where(cid)
        return code


def demo(
    spec_path: Annotated[
        Path, typer.Argument(metavar="SPEC.yaml", help="campaign spec")
    ] = DEFAULT_SPEC,
    host: Annotated[str | None, typer.Option(help="default: PDISTILL_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: PDISTILL_API_PORT")] = None,
) -> None:
    """Serve, run the demo campaign and follow it; then keep serving for the dashboard.

    Like `serve`, with the campaign submitted as the team `demo`; Ctrl-C stops (exit 0 when
    the campaign succeeded, 1 otherwise)."""
    from orchestrator.spec import SpecError

    try:
        spec = read_spec(spec_path)
    except SpecError as exc:
        raise fail(exc, 2) from exc
    settings = Settings()
    try:
        token = demo_token(settings)
    except SQLAlchemyError as exc:
        raise fail(
            f"the store at PDISTILL_DATABASE_URL={settings.database_url} cannot be used: {exc}", 1
        ) from exc
    host = host or settings.api_host
    port = port or settings.api_port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    presenter = Presenter(
        url=f"http://{shown}:{port}",
        token=token,
        token_path=settings.state_dir / TOKEN_FILE,
        spec=spec,
    )
    refuse_taken_address(host, port)
    refuse_unreachable_storage(spec.get("storage") or settings.storage_uri)
    with control_plane_settings() as resolved:
        threading.Thread(target=presenter.run, name="demo", daemon=True).start()
        try:
            run_api(
                resolved,
                host=host,
                port=port,
                exit_code=lambda: presenter.code,
                log_level="warning",
                on_stop=presenter.stopping.set,
            )
        finally:
            console.show_cursor(True)  # stopped mid-campaign: the live bars had hidden it
