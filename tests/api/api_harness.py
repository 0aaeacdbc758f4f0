"""Helpers of the control-plane tests: the tiny campaign, PostgreSQL schemas, the API as a
`pdistill serve` subprocess, the CLI, polling. (A module of its own: conftest.py files are
not importable by name, two of them share it.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import ray_head
from orchestrator.ray_head import free_port

ADMIN = "admin-token-for-tests"
BUCKET = "pdistill-api"
# The tiny campaign of these tests: one round 2 → 1 steps on the 8×8 digits, one 1-CPU worker.
TINY: dict[str, Any] = {
    "name": "api-tiny",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 30, "batch_size": 16, "warmup_updates": 2}},
    "steps": {"start": 2, "target": 1},
    "distill": {"updates": 10, "batch_size": 16, "checkpoint_every": 5},
    "resources": {"workers": 1, "max_failures": 0},
    "evaluation": {"samples": 32, "batch_size": 32},
}


def dashboard_job(head: ray_head.Head, sid: str) -> dict[str, Any] | None:
    """The Jobs API's record of job `sid` (straight from the dashboard's REST API)."""
    resp = httpx.get(
        f"{head.dashboard_url}/api/jobs/{sid}",
        headers={"Authorization": f"Bearer {head.token}"},
        timeout=10,
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return dict(resp.json())


# -- the API as a process -------------------------------------------------------------------------
class ApiServer:
    """`pdistill serve` in a subprocess: started, killed (-9) and started again like a real one."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['PDISTILL_API_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"pdistill serve did not become ready:\n{self.tail()}")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace_s=30)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@contextlib.contextmanager
def idle_server(
    *, head: ray_head.Head, tmp: Path, cache_dir: Path
) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    """`pdistill serve` on SQLite without its reconciler, so a campaign stays where the test
    puts it (through the store, as a driver would); yields the server and the CLI's
    environment, with the token of a team `vision`."""
    env = api_env(
        tmp=tmp,
        database_url=f"sqlite:///{tmp / 'pdistill.db'}",
        head=head,
        storage_uri=str(tmp / "storage"),
        cache_dir=cache_dir,
    ) | {"PDISTILL_RECONCILE": "false"}
    made = cli("token", "create", "--team", "vision", env=env)
    assert made.returncode == 0, made.stderr
    server = ApiServer(env, tmp / "serve.log")
    server.start()
    try:
        yield server, env | {"PDISTILL_API_TOKEN": made.stdout.strip()}
    finally:
        server.stop()


def stop_process(proc: subprocess.Popen[bytes], *, grace_s: float) -> None:
    """SIGTERM, and SIGKILL if it is still there after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def api_env(
    *,
    tmp: Path,
    database_url: str,
    head: ray_head.Head | None,
    storage_uri: str,
    cache_dir: Path,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDISTILL_", "RAY_"))} | {
        "PDISTILL_DATABASE_URL": database_url,
        "PDISTILL_ADMIN_TOKEN": ADMIN,
        "PDISTILL_API_HOST": "127.0.0.1",
        "PDISTILL_API_PORT": str(free_port()),
        "PDISTILL_STORAGE_URI": storage_uri,
        "PDISTILL_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PDISTILL_CACHE_DIR": str(cache_dir),
        "PDISTILL_STATE_DIR": str(tmp / "state"),
        "PDISTILL_RECONCILE_INTERVAL_S": "0.5",
        "PDISTILL_EVENTS_POLL_S": "0.5",
    }
    if head is not None:
        env |= head.env() | {
            "PDISTILL_RAY_ADDRESS": head.address,
            "PDISTILL_RAY_DASHBOARD_URL": head.dashboard_url,
        }
    env["PDISTILL_API_URL"] = f"http://127.0.0.1:{env['PDISTILL_API_PORT']}"
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    what: str,
    fetch: Callable[[], Any],
    done: Callable[[Any], bool],
    *,
    timeout: float,
    context: Callable[[], str] = lambda: "",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last: {value}\n{context()}")
        time.sleep(0.5)
