"""Faults on a real local Ray cluster: a Train worker killed mid-round."""

import os
import signal
import subprocess
import threading
import time

from mlflow import MlflowClient

from orchestrator.campaign import run_campaign
from orchestrator.spec import parse_spec

KILL_SPEC = {
    "name": "ray-kill",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 30, "batch_size": 32, "warmup_updates": 5}},
    "steps": {"start": 2, "target": 1},
    "distill": {"updates": 1500, "batch_size": 32, "checkpoint_every": 100},
    "resources": {"workers": 2, "max_failures": 2},
    "evaluation": {"samples": 32, "batch_size": 32},
}


def _train_worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::RayTrainWorker" in line]


def _loss_history(client: MlflowClient, key: str) -> list[int]:
    exp = client.get_experiment_by_name("pdistill")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`pdistill.key` = '{key}'")
    if not runs:
        return []
    return [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]


def test_killed_train_worker_resumes_round_from_checkpoint(ray_cluster, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    key = "campaign/ray-kill/round-1"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = run_campaign(parse_spec(KILL_SPEC), settings, poll_s=0.5)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        steps = _loss_history(client, key)
        if steps and max(steps) >= 200 and (pids := _train_worker_pids()):
            killed, at_step, before = pids[-1], max(steps), set(pids)
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    replacements: set[int] = set()
    while thread.is_alive() and killed is not None and not replacements:
        replacements = set(_train_worker_pids()) - before
        time.sleep(0.2)
    thread.join(timeout=600)
    assert killed is not None, f"never saw a checkpoint to kill after: {outcome}"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"]["rounds"][0]["updates"] == 1500
    steps = _loss_history(client, key)
    # Resumed, not restarted: the first reports are not repeated, and the round reached its end.
    assert steps.count(100) == 1 and max(steps) == 1500, steps
    assert at_step in steps
    assert replacements, "Train did not start a new worker group after the kill"
