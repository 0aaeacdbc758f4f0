"""A local Ray head run as a separate process (`ray start --head --block`), for `pdistill serve`
when no cluster is configured, and for tests that need a cluster outside their own process.

The head lives in its own session (process group), so killing the API process does not kill
the campaigns running on it; its address, dashboard URL and auth token are kept in a state
file, so a restarted API finds it again. Every port is chosen free: Ray's defaults (6379 for the
GCS, 8265, 10001, 52365, ...) collide with Redis or with another Ray on the same machine.
Token authentication is on, with a token made here (Ray 2.60 reads RAY_AUTH_MODE and
RAY_AUTH_TOKEN from the environment of every process that talks to the cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

STATE_FILE = "ray-head.json"
# Where Ray's processes look for the state API (the dashboard) of their cluster.
STATE_API_ENV = "RAY_API_SERVER_ADDRESS"


class HeadError(RuntimeError):
    """The embedded Ray head did not start (the message quotes its log)."""


@dataclasses.dataclass(frozen=True)
class Head:
    pid: int
    address: str  # GCS host:port, for ray.init(address=...)
    dashboard_url: str  # http://127.0.0.1:PORT, the Jobs API
    token: str
    log: str
    temp_dir: str = ""  # Ray's sessions and sockets, removed with the head (kept: `log`)

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to talk to this head."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: each socket stays bound until all are picked (one picked and
    closed at a time, the kernel may give the same port twice; seen: Ray refused to start with
    its runtime-env agent and its dashboard agent on one port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited process that nobody reaped yet (our child, or one whose parent was killed)
    # still answers kill(0): reap it if it is ours, and count a zombie as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (not Linux): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def answers(head: Head, timeout: float = 3.0) -> bool:
    """True when the head's dashboard answers an authenticated request."""
    req = urllib.request.Request(
        f"{head.dashboard_url}/api/version", headers={"Authorization": f"Bearer {head.token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def jobs_ready(head: Head, timeout: float = 3.0) -> bool:
    """True when the head can take jobs and shows in the state API: its dashboard agent has
    registered (a job submitted before that is refused with "No available agent") and the node
    list is no longer empty (it is for a few seconds after start)."""
    auth = {"Authorization": f"Bearer {head.token}"}
    try:
        for path in ("/api/jobs/", "/api/v0/nodes?limit=1"):
            req = urllib.request.Request(f"{head.dashboard_url}{path}", headers=auth)
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
            if resp.status != 200:
                return False
        return bool(json.loads(body)["data"]["result"]["total"] >= 1)
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return False


def start(
    *,
    num_cpus: int,
    log_dir: Path,
    timeout_s: float = 120.0,
) -> Head:
    """Start a head with `num_cpus` CPUs (and no GPUs unless the machine has some); returns once
    its dashboard answers."""
    port, dashboard, client, agent, agent_grpc, runtime_env, metrics = free_ports(7)
    token = secrets.token_urlsafe(32)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Its own temp dir (sessions, logs, sockets): Ray's job supervisor gives each job's driver
    # the RAY_ADDRESS of the *newest* cluster in its temp dir (`ray_current_cluster`), so in the
    # shared /tmp/ray a job of this head would connect to any Ray started later on the machine
    # (seen: "InvalidAuthToken" from the other cluster). Short, for Ray's socket paths.
    temp_dir = tempfile.mkdtemp(prefix="pdistill-ray-")
    log = log_dir / f"ray-head-{port}.log"
    ray = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    full_env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # Train's PlacementGroupCleaner asks the state API whether its controller still lives;
        # an address inherited from this process's environment (another cluster's) made it fail
        # to ask, and a stopped Tune trial's workers kept their CPUs (seen: the next round never
        # started). Every process of the head inherits its own dashboard's address.
        STATE_API_ENV: f"http://127.0.0.1:{dashboard}",
        # Jobs run `python -m orchestrator.driver`: the same interpreter as this process.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    head = Head(
        pid=proc.pid,
        address=f"127.0.0.1:{port}",
        dashboard_url=f"http://127.0.0.1:{dashboard}",
        token=token,
        log=str(log),
        temp_dir=temp_dir,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not (answers(head) and jobs_ready(head)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise HeadError(f"the local Ray head did not start (log {log}):\n{tail}")
            time.sleep(0.5)
    except BaseException:  # a failed start, or Ctrl-C while waiting: leave no head behind
        stop(head)
        raise
    return head


def stop(head: Head, timeout_s: float = 3.0) -> None:
    """Stop the head: SIGTERM to its process group (`ray start --block`, the GCS, the raylet,
    the dashboard), SIGKILL to what is left after `timeout_s`, then remove its temp dir (each
    head's held a few MB of Ray's session files, and /tmp kept one per head ever started).
    Workers run in sessions of their own and exit by themselves once their raylet is gone."""
    if _alive(head.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(head.pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the group may outlive its leader
    if head.temp_dir:
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def save(head: Head, state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    # The token is a credential for the cluster: readable by this user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(head), f)
    tmp.replace(path)
    return path


def load(state_dir: Path) -> Head | None:
    """The head recorded in `state_dir`, if it is still alive and answers; else None."""
    path = state_dir / STATE_FILE
    try:
        head = Head(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return head if _alive(head.pid) and answers(head) else None


def forget(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()


def start_or_adopt(*, state_dir: Path, num_cpus: int | None) -> tuple[Head, bool]:
    """The embedded head recorded in `state_dir` if it still runs (an API restarted after a
    crash), else a new one; the flag says whether it was started now."""
    if (head := load(state_dir)) is not None:
        return head, False
    head = start(num_cpus=num_cpus or os.cpu_count() or 1, log_dir=state_dir / "logs")
    save(head, state_dir)
    return head, True
