"""`pdistill serve` and `pdistill token ...`: the commands that run beside the store."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Annotated

import typer

from api.cli_errors import err, fail
from orchestrator.settings import Settings
from orchestrator.store import ConflictError, NotFoundError, Store

token_app = typer.Typer(help="Team tokens (direct store access: PDISTILL_DATABASE_URL).")


def refuse_taken_address(host: str, port: int) -> None:
    """Exit 1 naming the address when it cannot be served on (something listens there), before
    a Ray head is started for nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as exc:
            raise fail(
                f"cannot serve on {host}:{port} ({exc.strerror}); stop what holds it, or choose "
                "another with --port or PDISTILL_API_PORT",
                1,
            ) from exc


def refuse_unreachable_storage(storage_uri: str) -> None:
    """Exit 1 naming the S3 endpoint when the campaigns' storage cannot be reached, before a Ray
    head is started (the patient retries would first say so at the first campaign, minutes on)."""
    from orchestrator.storage import Storage, StorageError

    try:
        Storage(storage_uri).probe()
    except StorageError as exc:
        raise fail(exc, 1) from exc


@contextlib.contextmanager
def control_plane_settings() -> Iterator[Settings]:
    """The service's settings, with the embedded Ray head when PDISTILL_RAY_ADDRESS is unset: a
    local head in its own process (it outlives a crash of this one, and a restarted API adopts
    it), stopped when the block ends."""
    from orchestrator import ray_head

    settings = Settings()
    if settings.ray_address:
        yield settings
        return
    try:
        head, started = ray_head.start_or_adopt(
            state_dir=settings.state_dir, num_cpus=settings.embedded_ray_cpus
        )
    except ray_head.HeadError as exc:
        raise fail(exc, 1) from exc
    os.environ.update(head.env())  # this process talks to the head with its token
    verb = "started" if started else "reusing"
    err.print(f"{verb} a local Ray head at {head.address} (dashboard {head.dashboard_url})")
    try:
        yield settings.model_copy(
            update={
                "ray_address": head.address,
                "ray_dashboard_url": head.dashboard_url,
                "ray_embedded": True,
            }
        )
    finally:  # a clean shutdown stops the embedded head (a crash leaves it)
        err.print(f"stopping the local Ray head at {head.address}")
        ray_head.stop(head)
        ray_head.forget(settings.state_dir)


def run_api(
    settings: Settings,
    *,
    host: str,
    port: int,
    exit_code: Callable[[], int] = lambda: 0,
    log_level: str = "info",
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve the API (and its reconciler) until SIGINT or SIGTERM, then leave with
    `exit_code()`; `on_stop()` is called as the signal arrives."""
    import uvicorn

    from api.app import create_app

    app = create_app(settings)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again under the
    # handler that was there before it: make that handler an exit, so the callers' `finally`
    # blocks still run (they stop the embedded head) and the exit code is the caller's.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(exit_code()))

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.stopping.set()  # the event streams end now (api/routes/events.py)
            on_stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=host, port=port, timeout_graceful_shutdown=5, log_level=log_level
    )
    server = Server(config)
    server.run()
    if not server.started:  # as uvicorn.run: the port or the app's start-up failed (logged)
        sys.exit(3)


def serve(
    host: Annotated[str | None, typer.Option(help="default: PDISTILL_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: PDISTILL_API_PORT")] = None,
) -> None:
    """Run the control plane: the HTTP API and dashboard, the reconciler, a local Ray head.

    The Ray head starts when PDISTILL_RAY_ADDRESS is unset, in its own process, which outlives
    a crash of this one."""
    configured = Settings()
    host, port = host or configured.api_host, port or configured.api_port
    refuse_taken_address(host, port)
    refuse_unreachable_storage(configured.storage_uri)
    with control_plane_settings() as settings:
        if settings.admin_token is None:  # (the demo needs none: it prints its team's token)
            err.print("no PDISTILL_ADMIN_TOKEN: only team tokens are accepted", highlight=False)
        run_api(settings, host=host, port=port)


def _store() -> Store:
    return Store.from_url(Settings().database_url)


@token_app.command("create")
def token_create(
    team: Annotated[str, typer.Option(help="team name (created if missing)")],
    gpu_quota: Annotated[
        float | None, typer.Option(min=0, help="GPUs the team may hold (sets it if given)")
    ] = None,
    name: Annotated[str, typer.Option(help="what the token is for")] = "default",
) -> None:
    """Create a token for TEAM and print it (once: only its hash is stored)."""
    with _store() as store:
        found = store.team_by_name(team)
        if found is None:
            try:
                found = store.create_team(team, gpu_quota=gpu_quota or 0.0)
            except ConflictError:  # created meanwhile by another process
                found = store.team_by_name(team)
            assert found is not None
            err.print(f"created team {team} with a GPU quota of {found.gpu_quota:g}")
        elif gpu_quota is not None:
            found = store.set_gpu_quota(found.id, gpu_quota)
            err.print(f"team {team}: GPU quota set to {gpu_quota:g}")
        plaintext, token = store.create_token(found.id, name)
    err.print(f"token {token.id} ({token.prefix}…) for team {team}; it is shown only now:")
    print(plaintext)


@token_app.command("list")
def token_list(team: Annotated[str, typer.Option(help="team name")]) -> None:
    """The team's tokens (id, name, first characters, created, revoked)."""
    with _store() as store:
        found = store.team_by_name(team)
        if found is None:
            raise fail(f"no team named {team!r}", 2)
        for t in store.list_tokens(found.id):
            revoked = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
            print(f"{t.id}\t{t.name}\t{t.prefix}…\t{t.created_at:%Y-%m-%d %H:%M}\t{revoked}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="the id from `token list`")]) -> None:
    """Revoke a token: requests that carry it are refused from now on."""
    with _store() as store:
        try:
            t = store.revoke_token(token_id)
        except NotFoundError as exc:
            raise fail(exc, 2) from exc
    err.print(f"token {t.id} ({t.prefix}…) revoked")
