"""Campaigns through the whole control plane: the `pdistill` CLI → `pdistill serve` (PostgreSQL
store) → one Ray Job per campaign on a real local Ray head → the driver writing progress back;
checkpoints on S3 (moto_server), MLflow on SQLite. Nothing is mocked."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from api_harness import TINY, ApiServer, api_env, cli, dashboard_job, wait_for

from orchestrator import ray_head
from orchestrator.store import Store
from workers.checkpoint import load_checkpoint
from workers.data import read_uri_bytes

# The e2e campaign also searches its LR: two short Tune trials before the round trains.
TUNED = TINY | {
    "name": "api-e2e",
    "tune": {"enabled": True, "trials": 2, "trial_updates": 5, "lr_min": 5e-5, "lr_max": 2e-4},
}


@dataclass
class Stack:
    server: ApiServer
    env: dict[str, str]  # the CLI's environment, with the team's token
    head: ray_head.Head
    database_url: str
    tmp: Path

    def http(self) -> httpx.Client:
        token = self.env["PDISTILL_API_TOKEN"]
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def get(self, path: str) -> Any:
        with self.http() as h:
            r = h.get(path)
            r.raise_for_status()
            return r.json()

    def logs(self) -> str:
        return f"--- API log ---\n{self.server.tail()}"

    def spec_file(self, spec: dict[str, Any]) -> str:
        path = self.tmp / f"{spec['name']}-{secrets.token_hex(3)}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return str(path)


@pytest.fixture(scope="module")
def stack(
    ray_head_proc: ray_head.Head,
    pg_schemas: Callable[[], AbstractContextManager[str]],
    api_bucket: str,
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ray-campaigns")
    with pg_schemas() as url:
        env = api_env(
            tmp=tmp,
            database_url=url,
            head=ray_head_proc,
            storage_uri=f"s3://{api_bucket}/{secrets.token_hex(4)}",
            cache_dir=cache_dir,
        ) | {"PDISTILL_AUTOSCALER_REFRESH_S": "2"}
        made = cli("token", "create", "--team", "vision", "--gpu-quota", "1", env=env)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("pd_") and "created team vision" in made.stderr
        server = ApiServer(env, tmp / "serve.log")
        server.start()
        try:
            yield Stack(server, env | {"PDISTILL_API_TOKEN": token}, ray_head_proc, url, tmp)
        finally:
            server.stop()


def readme_python(containing: str) -> str:
    """The README's python block that contains `containing`."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if containing in b]
    return block


def _audit(stack: Stack, cid: str) -> list[tuple[str | None, str, str]]:
    with Store.from_url(stack.database_url) as store:
        return [(e.from_status, e.to_status, e.actor) for e in store.audit(cid)]


def test_campaign_runs_to_completion_over_http(stack: Stack) -> None:
    sub = cli("submit", stack.spec_file(TUNED), "--priority", "3", env=stack.env)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    cid = sub.stdout.strip()
    watched = cli("watch", cid, env=stack.env, timeout=900)
    assert watched.returncode == 0, watched.stdout + watched.stderr + stack.logs()
    assert f"campaign {cid} succeeded" in watched.stdout
    assert "round 1 (2→1 steps): training" in watched.stdout
    assert "teacher: ready, 30/30 updates" in watched.stdout

    c = stack.get(f"/v1/campaigns/{cid}")
    sid = f"pdistill-{cid}-a1"
    assert (c["status"], c["progress"], c["priority"], c["submission_id"]) == (
        "succeeded",
        1.0,
        3,
        sid,
    )
    assert c["started_at"] <= c["finished_at"] and c["mlflow_run_id"]
    t = c["teacher"]
    assert (t["source"], t["status"], t["updates"], t["updates_done"]) == ("train", "ready", 30, 30)
    assert t["loss"] > 0 and c["started_at"] <= t["finished_at"] <= c["finished_at"]
    # The trained teacher, where a new campaign's teacher.checkpoint can name it.
    storage = stack.env["PDISTILL_STORAGE_URI"]
    assert t["checkpoint_uri"] == f"{storage}/campaigns/{cid}-api-e2e/teacher.safetensors"
    _, teacher_config = load_checkpoint(t["checkpoint_uri"])
    assert (teacher_config["role"], teacher_config["steps"]) == ("teacher", 2)
    # Its FID at its own 2 steps: the teacher-eval stage's, copied by the driver.
    folder = f"{storage}/campaigns/{cid}-api-e2e"
    evaluated = json.loads(read_uri_bytes(f"{folder}/stages/teacher-eval.json"))
    assert (t["steps"], t["fid"]) == (2, evaluated["fid"]) and t["fid"] > 0
    assert t["samples_url"] == f"/v1/campaigns/{cid}/teacher/samples.png"
    t_loss, t_fid = f"{t['loss']:.4g}", f"{t['fid']:.2f}"
    teacher_seen = f"teacher: ready, 30/30 updates, loss {t_loss}, FID {t_fid} at 2 steps"
    assert teacher_seen in watched.stdout
    assert c["links"]["ray_dashboard"].endswith(f"/#/jobs/{sid}")
    (r,) = stack.get(f"/v1/campaigns/{cid}/rounds")
    assert (r["status"], r["updates_done"], r["teacher_steps"], r["student_steps"]) == (
        "succeeded",
        10,
        2,
        1,
    )
    assert r["fid"] > 0 and r["ddim_fid"] > 0 and c["best_fid"] == r["fid"]
    assert 5e-5 * 0.999 <= r["lr"] <= 2e-4 * 1.001 and r["loss"] > 0
    assert r["wall_seconds"] > 0 and r["gpu_seconds"] == 0 and r["mlflow_run_id"]
    trials = stack.get(f"/v1/campaigns/{cid}/rounds/1/trials")
    assert [t["index"] for t in trials] == [0, 1]
    assert all(t["status"] == "succeeded" and t["val_loss"] > 0 for t in trials)
    assert r["lr"] in {t["lr"] for t in trials}
    loss = stack.get(f"/v1/campaigns/{cid}/rounds/1/loss")
    assert [p["step"] for p in loss][-1] == 10 and all(p["loss"] > 0 for p in loss)
    with stack.http() as h:
        for grid_url in (r["samples_url"], t["samples_url"]):
            png = h.get(grid_url)
            assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert png.headers["content-type"] == "image/png"
        assert r["student_url"] == f"/v1/campaigns/{cid}/rounds/1/student.safetensors"
        got = h.get(r["student_url"])
        assert got.status_code == 200, got.text
        assert got.headers["content-disposition"] == (
            f'attachment; filename="{cid}-api-e2e-round-1-1-step.safetensors"'
        )
        (stack.tmp / "got.safetensors").write_bytes(got.content)
        state, config = load_checkpoint(str(stack.tmp / "got.safetensors"))
        assert (config["role"], config["round"], config["steps"]) == ("student", 1, 1)
        assert config["lr"] == r["lr"] and state
        text = h.get(f"/v1/campaigns/{cid}/logs", params={"lines": 50}).text
    assert "rounds trained" in text or "round 1" in text, text
    assert "all 1 rounds trained" in cli("logs", cid, "--lines", "500", env=stack.env).stdout
    assert cid in cli("status", env=stack.env).stdout
    one = " ".join(cli("status", cid, env=stack.env).stdout.split())
    assert f"{teacher_seen}; kept at {t['checkpoint_uri']}" in one
    # The round table's first row: the teacher at its own steps, whose FID is its DDIM FID.
    cells = ["teacher", "2", "ready", "30/30", "-", t_loss, t_fid, t_fid, "-"]
    assert re.search(r"\W+".join(map(re.escape, cells)), one), one
    # Its history: each status change, when and by whom.
    said = r"history: \S+ \S+ submitted: queued by team:vision \S+ \S+ queued → starting by "
    assert re.search(said + r"scheduler \S+ \S+ starting → running by driver", one), one
    # The CLI fetches the same file (the last trained round by default), and the README's
    # snippet samples from it as it stands.
    fetched = cli("fetch", cid, "-o", str(stack.tmp), env=stack.env)
    assert fetched.returncode == 0, fetched.stderr
    path = stack.tmp / f"{cid}-api-e2e-round-1-1-step.safetensors"
    assert f"round 1 student, 1-step sampling: {path}" in " ".join(fetched.stdout.split())
    assert path.read_bytes() == got.content
    # In a terminal (as Rich sees one) a byte-count bar shows while the file arrives.
    tty = {**stack.env, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    fetched = cli("fetch", cid, "--round", "1", "-o", str(stack.tmp / "again.st"), env=tty)
    assert fetched.returncode == 0, fetched.stderr
    bar = re.search(
        r"round 1 student, 1-step sampling .*[\d.]+/[\d.]+ (bytes|kB|MB)", fetched.stderr
    )
    assert bar, fetched.stderr
    assert (stack.tmp / "again.st").read_bytes() == got.content
    # The teacher too, for a client without access to the campaign's storage.
    assert t["checkpoint_url"] == f"/v1/campaigns/{cid}/teacher.safetensors"
    fetched = cli("fetch", cid, "--teacher", "-o", str(stack.tmp), env=stack.env)
    assert fetched.returncode == 0, fetched.stderr
    path = stack.tmp / f"{cid}-api-e2e-teacher-2-step.safetensors"
    assert f"teacher: {path}" in " ".join(fetched.stdout.split())
    assert path.read_bytes() == read_uri_bytes(t["checkpoint_uri"])  # the file in S3
    work = stack.tmp / "sample-from-student"
    work.mkdir()
    (work / "student.safetensors").write_bytes(got.content)
    snippet = readme_python("load_unet")
    sampled = subprocess.run(
        [sys.executable, "-c", snippet], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert sampled.returncode == 0, sampled.stderr
    assert "16 samples in 1 steps: samples.png" in sampled.stdout
    assert (work / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # pdistill sample does the same from the command line: the same 16 images.
    drawn = cli(
        "sample", str(work / "student.safetensors"), "-n", "16", "-o", str(work / "cli.png"),
        env=stack.env,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    assert "16 images from the round 1 student in 1 steps" in " ".join(drawn.stdout.split())
    with np.load(work / "cli.npz") as a, np.load(work / "samples.npz") as b:
        assert np.array_equal(a["images"], b["images"])
    # Each transition once, by whom it should be.
    assert _audit(stack, cid) == [
        (None, "queued", "team:vision"),
        ("queued", "starting", "scheduler"),
        ("starting", "running", "driver"),
        ("running", "succeeded", "driver"),
    ]
    # The driver records the outcome, then exits: its Ray job ends SUCCEEDED moments later.
    wait_for(
        f"Ray job {sid} to succeed",
        lambda: (dashboard_job(stack.head, sid) or {}).get("status"),
        lambda status: status in {"SUCCEEDED", "FAILED", "STOPPED"},
        timeout=60,
    )
    assert dashboard_job(stack.head, sid)["status"] == "SUCCEEDED"  # type: ignore[index]
    cluster = stack.get("/v1/cluster")
    assert [(n["alive"], n["cpus"]) for n in cluster["nodes"]] == [(True, 2.0)]
    assert cluster["cpus"]["total"] == 2.0 and cluster["gpus"]["total"] == 0.0
    metrics = httpx.get(f"{stack.server.url}/metrics").text
    assert 'pdistill_campaigns{status="succeeded"} 1.0' in metrics


def test_cancel_stops_the_running_round_and_its_ray_job(stack: Stack) -> None:
    long = TINY | {"name": "api-cancel", "distill": {"updates": 5000, "checkpoint_every": 20}}
    cid = cli("submit", stack.spec_file(long), env=stack.env).stdout.strip()
    wait_for(
        "round 1 to train",
        lambda: stack.get(f"/v1/campaigns/{cid}/rounds")[0],
        lambda r: r["status"] == "training" and r["updates_done"] > 0,
        timeout=300,
        context=stack.logs,
    )
    out = cli("cancel", cid, env=stack.env)
    assert out.returncode == 0 and ("cancelling" in out.stdout or "cancelled" in out.stdout)
    c = wait_for(
        "the campaign to be cancelled",
        lambda: stack.get(f"/v1/campaigns/{cid}"),
        lambda c: c["status"] == "cancelled",
        timeout=120,
        context=stack.logs,
    )
    assert c["reason"] == "cancelled by team:vision"
    (r,) = stack.get(f"/v1/campaigns/{cid}/rounds")
    assert r["status"] == "cancelled" and 0 < r["updates_done"] < 5000
    job = dashboard_job(stack.head, c["submission_id"])
    assert job is not None and job["status"] == "STOPPED"
    assert _audit(stack, cid)[-2:] == [
        ("running", "cancelling", "team:vision"),
        ("cancelling", "cancelled", "scheduler"),
    ]
    watched = cli("watch", cid, env=stack.env)
    assert watched.returncode == 1 and "cancelled" in watched.stdout


_READ_REQUEST = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
from ray.autoscaler.v2.utils import is_autoscaler_v2
if is_autoscaler_v2():
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    state = get_cluster_resource_state(GcsClient(address=sys.argv[1]))
    print(json.dumps([
        dict(b.resources_bundle)
        for c in state.cluster_resource_constraints
        for r in c.resource_requests
        for b in [r.request] * r.count
    ]))
else:
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    print(raw.decode() if raw else "[]")
"""


def _ray_side(stack: Stack, *args: str) -> str:
    """Run Python against the test's Ray head in another process (the API never joins it)."""
    out = subprocess.run(
        [sys.executable, *args],
        env={**stack.env, **stack.head.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _requested(stack: Stack) -> list[dict[str, float]]:
    """What the Ray autoscaler was asked for, read back from the cluster."""
    out = _ray_side(stack, "-c", _READ_REQUEST, stack.head.address)
    return list(json.loads(out.strip().splitlines()[-1]))


def test_gpu_campaign_waits_and_its_demand_goes_to_the_autoscaler(stack: Stack) -> None:
    gpu = TINY | {"name": "api-gpu", "resources": {"workers": 1, "gpus_per_worker": 1}}
    cid = cli("submit", stack.spec_file(gpu), env=stack.env).stdout.strip()
    c = wait_for(
        "the GPU campaign to say why it waits",
        lambda: stack.get(f"/v1/campaigns/{cid}"),
        lambda c: (c["reason"] or "").startswith("waiting for cluster capacity"),
        timeout=60,
        context=stack.logs,
    )
    assert c["status"] == "queued" and "needs 1 CPUs and 1 GPUs" in c["reason"]
    cluster = wait_for(
        "the demand to go to the autoscaler",
        lambda: stack.get("/v1/cluster"),
        lambda cluster: cluster["autoscaler_request"] != [],
        timeout=60,
        context=stack.logs,
    )
    assert cluster["queued"] == {"campaigns": 1, "gpus": 1.0, "cpus": 1.0}
    assert cluster["autoscaler_request"] == [{"CPU": 1.0, "GPU": 1.0}]
    # `request_resources` is last-writer-wins, and Ray Train's own coordinator calls it too:
    # another client overwrites the request, and the reconciler puts its demand back.
    ours = [{"CPU": 1.0, "GPU": 1.0}]
    wait_for("Ray to hold the demand", lambda: _requested(stack), lambda r: r == ours, timeout=60)
    other = json.dumps([{"CPU": 1.0}])
    _ray_side(stack, "-m", "orchestrator.ray_link", "request-resources", stack.head.address, other)
    wait_for(
        "the reconciler to re-assert the demand",
        lambda: _requested(stack),
        lambda r: r == ours,
        timeout=60,
        context=stack.logs,
    )
    assert "pdistill_queue_gpus 1.0" in httpx.get(f"{stack.server.url}/metrics").text

    fetched = cli("fetch", cid, env=stack.env)
    assert fetched.returncode == 1
    assert f"campaign {cid} has no trained round yet (round 1 pending)" in fetched.stderr

    assert cli("cancel", cid, env=stack.env).returncode == 0
    wait_for(
        "the request to be cleared",
        lambda: stack.get("/v1/cluster")["autoscaler_request"],
        lambda req: req == [],
        timeout=30,
    )
    assert stack.get(f"/v1/campaigns/{cid}")["status"] == "cancelled"


def test_cli_errors_are_one_line_with_exit_codes(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(TINY | {"steps": {"start": 6, "target": 1}}))
    out = cli("submit", str(bad), env=stack.env)
    assert out.returncode == 2 and "steps.start" in out.stderr and "power of two" in out.stderr
    out = cli("status", "c-000000000000", env=stack.env)
    assert out.returncode == 2 and "no campaign 'c-000000000000'" in out.stderr
    out = cli("status", env=stack.env | {"PDISTILL_API_TOKEN": "pd_wrong"})
    assert out.returncode == 2 and "unknown or revoked token" in out.stderr
    no_token = {k: v for k, v in stack.env.items() if k != "PDISTILL_API_TOKEN"}
    out = cli("status", env=no_token)
    assert out.returncode == 2 and "PDISTILL_API_TOKEN" in out.stderr
    out = cli("status", env=stack.env | {"PDISTILL_API_URL": "http://127.0.0.1:9"})
    assert out.returncode == 1 and "cannot reach the API" in out.stderr
    out = cli("fetch", "c-000000000000", env=stack.env)
    assert out.returncode == 2 and "no campaign 'c-000000000000'" in out.stderr
    out = cli("fetch", "c-000000000000", "--teacher", env=stack.env)
    assert out.returncode == 2 and "no campaign 'c-000000000000'" in out.stderr
    out = cli("fetch", "c-000000000000", "--teacher", "--round", "1", env=stack.env)
    assert out.returncode == 2 and "--teacher and --round exclude each other" in out.stderr
    out = cli("fetch", "c-000000000000", "-o", str(tmp_path / "no" / "x.st"), env=stack.env)
    assert out.returncode == 2 and f"--out: {tmp_path / 'no' / 'x.st'}: no such directory" in (
        " ".join(out.stderr.split())
    )
