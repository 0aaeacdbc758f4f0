"""The API process dies (SIGKILL) mid-campaign and comes back: the campaign, a Ray Job of its own,
goes on meanwhile; then its driver dies too, and the reconciler of the restarted API resumes it
(finished stages skipped); the campaign completes; the store holds each transition once.

Then the embedded Ray head of `pdistill serve`: it outlives a killed API, the restarted API
adopts it, and a clean shutdown stops it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from api_harness import ADMIN, TINY, ApiServer, api_env, cli, dashboard_job, wait_for

from orchestrator import ray_head
from orchestrator.store import Store

# The driver is killed as soon as the round trains (a Train run takes >10 s to start), so the
# round is short; few checkpoints (each one a PUT to S3) keep it fast.
UPDATES = 200


def test_api_and_driver_die_mid_campaign_and_the_campaign_completes(
    ray_head_proc: ray_head.Head, api_bucket: str, cache_dir: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    env = api_env(
        tmp=tmp_path,
        database_url=db,
        head=ray_head_proc,
        storage_uri=f"s3://{api_bucket}/{secrets.token_hex(4)}",
        cache_dir=cache_dir,
    )
    token = cli("token", "create", "--team", "vision", env=env).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    server = ApiServer(env, tmp_path / "serve.log")
    server.start()
    watcher: subprocess.Popen[str] | None = None
    try:
        distill = {"updates": UPDATES, "checkpoint_every": 50}
        spec = TINY | {"name": "api-restart", "distill": distill}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as h:
            r = h.post("/v1/campaigns", json=spec, headers={"Idempotency-Key": "k"})
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            wait_for(
                "the driver to report",
                lambda: h.get(f"/v1/campaigns/{cid}").json(),
                lambda c: c["status"] == "running",
                timeout=300,
                context=server.tail,
            )

        # A user follows the campaign through everything below.
        watcher = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "watch", cid],
            env=env | {"PDISTILL_API_TOKEN": token, "PDISTILL_API_URL": server.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # 1. The API dies. The campaign's driver is a Ray Job: it goes on.
        server.kill()
        first = f"pdistill-{cid}-a1"
        job = dashboard_job(ray_head_proc, first)
        assert job is not None and job["status"] in ("PENDING", "RUNNING"), job

        server.start()
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as h:
            # The same POST, retried after the crash, is the same campaign.
            again = h.post("/v1/campaigns", json=spec, headers={"Idempotency-Key": "k"})
            assert (again.status_code, again.json()["id"]) == (200, cid)
            training = wait_for(
                "round 1 to train",
                lambda: h.get(f"/v1/campaigns/{cid}/rounds").json()[0],
                lambda r: r["status"] not in ("pending", "tuning"),
                timeout=300,
                context=server.tail,
            )
            assert training["status"] == "training", f"the round ended too soon: {training}"
            # 2. The driver dies (SIGKILL): the reconciler requeues the campaign, attempt 2
            # skips the teacher (its stage record exists) and resumes the round.
            job = dashboard_job(ray_head_proc, first)
            assert job is not None and job["driver_info"], job
            os.kill(int(job["driver_info"]["pid"]), signal.SIGKILL)
            c = wait_for(
                "the campaign to end",
                lambda: h.get(f"/v1/campaigns/{cid}").json(),
                lambda c: c["status"] in ("succeeded", "failed", "cancelled"),
                timeout=600,
                context=server.tail,
            )
            assert c["status"] == "succeeded", c
            assert c["submission_id"] == f"pdistill-{cid}-a2"
            (rnd,) = h.get(f"/v1/campaigns/{cid}/rounds").json()
            assert (rnd["status"], rnd["updates_done"]) == ("succeeded", UPDATES)
            assert rnd["fid"] > 0
            second_log = h.get(f"/v1/campaigns/{cid}/logs", params={"lines": 100000}).text
        watched, _ = watcher.communicate(timeout=120)
    finally:
        server.stop()
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
    # The watcher said it lost the API and found it again, then saw the campaign to its end.
    assert watcher.returncode == 0, watched
    assert "trying again every 2 s, for up to 60 s" in watched, watched
    assert "the API answers again; following the campaign" in watched, watched
    assert f"campaign {cid} succeeded" in watched, watched
    assert "teacher: training" not in second_log  # finished stages are not run again
    with Store.from_url(db) as store:
        audit = store.audit(cid)
        assert len(store.list_campaigns(team_id=None)[0]) == 1
    trail = [(e.from_status, e.to_status, e.actor) for e in audit if e.from_status != e.to_status]
    # The round's training that attempt 2 started again, if attempt 1's had started.
    notes = [e.detail or "" for e in audit if e.from_status == e.to_status]
    assert len(notes) <= 1, notes
    assert all(n.startswith("round 1's training started again (restart 1) from ") for n in notes)
    assert trail == [
        (None, "queued", "team:vision"),
        ("queued", "starting", "scheduler"),
        ("starting", "running", "driver"),
        ("running", "queued", "scheduler"),
        ("queued", "starting", "scheduler"),
        ("starting", "running", "driver"),
        ("running", "succeeded", "driver"),
    ]
    assert dashboard_job(ray_head_proc, first)["status"] == "FAILED"  # type: ignore[index]
    assert dashboard_job(ray_head_proc, f"pdistill-{cid}-a3") is None  # nothing ran twice


def test_serve_embeds_a_ray_head_that_survives_a_crash_and_stops_cleanly(
    tmp_path: Path, cache_dir: Path
) -> None:
    env = api_env(
        tmp=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        head=None,  # nothing configured: `pdistill serve` starts its own head
        storage_uri=str(tmp_path / "storage"),
        cache_dir=cache_dir,
    ) | {"PDISTILL_EMBEDDED_RAY_CPUS": "1"}
    state = tmp_path / "state" / ray_head.STATE_FILE
    server = ApiServer(env, tmp_path / "serve.log")
    server.start()
    try:
        first = json.loads(state.read_text())
        assert oct(state.stat().st_mode & 0o777) == "0o600"  # it holds the cluster's token
        admin = {"Authorization": f"Bearer {ADMIN}"}
        cluster = httpx.get(f"{server.url}/v1/cluster", headers=admin, timeout=30).json()
        assert [n["cpus"] for n in cluster["nodes"]] == [1.0]
        server.kill()
        assert ray_head.load(tmp_path / "state") is not None  # the head is still up
        server.start()
        assert json.loads(state.read_text())["pid"] == first["pid"]  # adopted, not restarted
        assert "reusing a local Ray head" in server.tail()
    finally:
        server.stop()
    assert not state.exists()
    head = ray_head.Head(**first)
    assert not ray_head.answers(head)
    assert _gone(head.pid), f"the embedded head {head.pid} still runs"


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (its parent, the killed API, cannot reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] == "Z"


def test_ctrl_c_while_the_embedded_head_starts_leaves_no_head(tmp_path: Path) -> None:
    """The head runs in a session of its own (so it outlives an API crash); a start that is
    interrupted before it answers must stop it, or nothing would ever stop it."""
    script = (
        "from pathlib import Path; from orchestrator import ray_head; "
        f"ray_head.start(num_cpus=1, log_dir=Path({str(tmp_path)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (logs := list(tmp_path.glob("ray-head-*.log"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the head never started"
        time.sleep(0.1)
    port = logs[0].stem.removeprefix("ray-head-")
    marks = (f"--port={port}", f"--gcs_server_port={port}")  # `ray start` and its GCS
    deadline = time.monotonic() + 30
    while not _processes_with(marks):
        assert time.monotonic() < deadline, "no head process appeared"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in err
    deadline = time.monotonic() + 15
    while left := _processes_with(marks):
        assert time.monotonic() < deadline, f"the interrupted start left the head running: {left}"
        time.sleep(0.2)


def _processes_with(marks: tuple[str, ...]) -> list[int]:
    """Live (non-zombie) processes whose command line holds one of `marks`."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(m in argv for m in marks) and not _gone(int(d.name)):
            found.append(int(d.name))
    return found


def test_a_job_connects_to_its_own_head_when_another_ray_started_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's job supervisor gives a job's driver the address of the newest cluster in the head's
    temp dir: each embedded head has its own, so a campaign driver never reaches another Ray on
    the machine (it did, and failed on that cluster's auth token). Its processes ask their own
    head's state API too, whatever address the process that started the head had (Train's
    placement-group cleaner asked a stopped cluster's and never freed a stopped trial's CPUs)."""
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")  # another, stopped Ray
    older = ray_head.start(num_cpus=1, log_dir=tmp_path / "older")
    try:
        newer = ray_head.start(num_cpus=1, log_dir=tmp_path / "newer")
        try:
            url, auth = older.dashboard_url, {"Authorization": f"Bearer {older.token}"}
            show = (
                "import os; print('RAY_ADDRESS=' + os.environ['RAY_ADDRESS']); "
                "print('STATE_API=' + os.environ['RAY_API_SERVER_ADDRESS'])"
            )
            job = {"entrypoint": f'python -c "{show}"', "submission_id": "where"}
            r = httpx.post(f"{url}/api/jobs/", json=job, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            wait_for(
                "the job to end",
                lambda: httpx.get(f"{url}/api/jobs/where", headers=auth, timeout=10).json(),
                lambda job: job["status"] in ("SUCCEEDED", "FAILED"),
                timeout=120,
            )
            logs = httpx.get(f"{url}/api/jobs/where/logs", headers=auth, timeout=10).json()
            (line,) = [x for x in logs["logs"].splitlines() if x.startswith("RAY_ADDRESS=")]
            ports = {h.address.rsplit(":", 1)[1] for h in (older, newer)}
            assert len(ports) == 2 and line.rsplit(":", 1)[1] == older.address.rsplit(":", 1)[1]
            assert f"STATE_API={older.dashboard_url}" in logs["logs"].splitlines()
        finally:
            ray_head.stop(newer)
    finally:
        ray_head.stop(older)
    # Each head's temp dir went with it (they used to pile up in /tmp).
    assert older.temp_dir != newer.temp_dir and older.temp_dir.startswith(tempfile.gettempdir())
    assert not Path(older.temp_dir).exists() and not Path(newer.temp_dir).exists()
