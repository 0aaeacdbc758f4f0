"""`pdistill demo SPEC` as the README runs it: a real process that starts the embedded Ray head,
the SQLite store and local storage, submits the campaign over HTTP as the team `demo`, follows
it, keeps serving the dashboard, and stops its Ray head on SIGTERM. Run twice: the second run
shows the same campaign (Idempotency-Key from the spec) with the same token. Nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_harness import TINY, api_env, stop_process, wait_for

DEMO_SPEC = TINY | {"name": "demo-tiny"}
FINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class DemoRun:
    """One `pdistill demo` process, its output in `log`."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def context(self) -> str:
        return f"--- pdistill demo output ---\n{self.output()[-6000:]}"


@pytest.fixture
def demo_env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    env = api_env(
        tmp=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'pdistill.db'}",
        head=None,  # the demo starts its own
        storage_uri=str(tmp_path / "storage"),
        cache_dir=cache_dir,
    )
    env.pop("PDISTILL_ADMIN_TOKEN")  # the demo needs none: it makes its team's token
    return env | {
        "PDISTILL_EMBEDDED_RAY_CPUS": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo-tiny.yaml"
    path.write_text(yaml.safe_dump(DEMO_SPEC))
    return path


@pytest.fixture
def start_demo(
    demo_env: dict[str, str], spec_file: Path, tmp_path: Path
) -> Iterator[Callable[[], DemoRun]]:
    runs: list[DemoRun] = []

    def start() -> DemoRun:
        log = tmp_path / f"demo-{len(runs) + 1}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "demo", str(spec_file)],
                env=demo_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        runs.append(DemoRun(proc, log, demo_env["PDISTILL_API_URL"]))
        return runs[-1]

    yield start
    for run in runs:  # a failed test must not leave a demo (and its Ray head) behind
        stop_process(run.proc, grace_s=60)


def _campaigns(run: DemoRun, token: str) -> list[dict[str, Any]]:
    """The demo team's campaigns; none while the API is not up yet."""
    try:
        items: list[dict[str, Any]] = _get(run.url, token, "/v1/campaigns")["items"]
    except httpx.HTTPError:
        return []
    return items


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str, token: str, path: str) -> Any:
    resp = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    resp.raise_for_status()
    return resp.json()


def _token(state: Path, run: DemoRun) -> str:
    path = state / "demo-token"
    wait_for("the demo token file", path.exists, bool, timeout=60, context=run.context)
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


def _head(state: Path, run: DemoRun) -> dict[str, Any]:
    path = state / "ray-head.json"
    wait_for("the embedded head's state file", path.exists, bool, timeout=120, context=run.context)
    head: dict[str, Any] = json.loads(path.read_text())
    return head


def _holders(ray_token: str) -> list[int]:
    """Processes that carry the head's auth token in their environment: the head, its GCS,
    raylet, dashboard, workers and job drivers."""
    needle = f"RAY_AUTH_TOKEN={ray_token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _stop(run: DemoRun, head: dict[str, Any], state: Path) -> int:
    """SIGTERM, then check that the embedded Ray head and everything it started are gone."""
    assert _holders(head["token"]), "the head's processes should be found while it runs"
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(60)
    assert "stopping the local Ray head" in run.output(), run.context()
    assert not (state / "ray-head.json").exists()
    wait_for(
        "the Ray head's process group to exit",
        lambda: _group_alive(head["pid"]),
        lambda alive: not alive,
        timeout=30,
        context=run.context,
    )
    wait_for(
        "the Ray head's processes to exit",
        lambda: _holders(head["token"]),
        lambda pids: not pids,
        timeout=60,
        context=run.context,
    )
    return code


def test_demo_runs_the_campaign_and_serves_the_dashboard(
    start_demo: Callable[[], DemoRun], demo_env: dict[str, str]
) -> None:
    state = Path(demo_env["PDISTILL_STATE_DIR"])
    first = start_demo()
    token = _token(state, first)
    head = _head(state, first)
    listed = wait_for(
        "the demo campaign to finish",
        lambda: _campaigns(first, token),
        lambda items: first.proc.poll() is not None or (items and items[0]["status"] in FINAL),
        timeout=400,
        context=first.context,
    )
    assert first.proc.poll() is None, first.context()
    (c,) = listed
    cid = c["id"]
    assert (c["name"], c["team"], c["status"], c["progress"]) == (
        "demo-tiny",
        "demo",
        "succeeded",
        1.0,
    ), first.context()
    (r,) = _get(first.url, token, f"/v1/campaigns/{cid}/rounds")
    assert (r["status"], r["updates_done"], r["teacher_steps"], r["student_steps"]) == (
        "succeeded",
        10,
        2,
        1,
    )
    assert r["fid"] > 0 and c["best_fid"] == r["fid"]
    # The demo's own Ray head never grows: a campaign larger than it is refused, not queued.
    big = DEMO_SPEC | {"name": "too-big", "resources": {"workers": 8}}
    auth = {"Authorization": f"Bearer {token}"}
    resp = httpx.post(f"{first.url}/v1/campaigns", json=big, headers=auth, timeout=30)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "resources", "workers"], resp.text
    assert "own Ray head has 2 CPUs and 0 GPUs and does not grow" in resp.json()["message"]

    # The dashboard is served by the same process; the demo says where and with which token.
    page = httpx.get(f"{first.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="ui/js/main.js"' in page.text
    assert httpx.get(f"{first.url}/ui/js/main.js", timeout=10).status_code == 200
    link = f"dashboard: {first.url}/#/campaigns/{cid}"
    wait_for(
        "the demo's closing lines",
        first.output,
        lambda out: out.count(link) == 2 and "the demo campaign succeeded" in out,
        timeout=60,
        context=first.context,
    )
    assert f"token: {token}" in first.output()
    assert f"campaign {cid} succeeded" in first.output()
    assert "teacher: ready" in first.output()  # the teacher's progress is followed too
    assert "PDISTILL_ADMIN_TOKEN" not in first.output()  # no admin token is needed here
    assert _stop(first, head, state) == 0, first.context()

    # Again: a new head, the same token, the same campaign shown (not a second one).
    second = start_demo()
    assert _token(state, second) == token
    head2 = _head(state, second)
    assert head2["pid"] != head["pid"]
    wait_for(
        "the second demo's closing lines",
        second.output,
        lambda out: second.proc.poll() is not None or "the demo campaign succeeded" in out,
        timeout=120,
        context=second.context,
    )
    out = second.output()
    assert f"campaign {cid} (demo-tiny): succeeded" in out and link in out, second.context()
    page = _get(second.url, token, "/v1/campaigns")
    assert page["total"] == 1 and page["items"][0]["id"] == cid
    assert _stop(second, head2, state) == 0, second.context()
