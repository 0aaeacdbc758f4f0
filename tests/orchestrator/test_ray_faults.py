"""Faults on a real local Ray cluster: processes killed mid-stage, a driver killed, retries
exhausted, S3 gone, LR trials that diverge."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import boto3
import pytest
import torch
from mlflow import MlflowClient

from orchestrator.campaign import run_campaign
from orchestrator.history import TEACHER_LOSS, TEACHER_START, TRAIN_START
from orchestrator.spec import parse_spec
from orchestrator.stages import START_ENV, TEACHER_STATE, StageError, placement_bound

KILL_SPEC = {
    "name": "ray-kill",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 30, "batch_size": 32, "warmup_updates": 5}},
    "steps": {"start": 2, "target": 1},
    "distill": {"updates": 200, "batch_size": 32, "checkpoint_every": 50},
    "resources": {"workers": 2, "max_failures": 2},
    "evaluation": {"samples": 32, "batch_size": 32},
}


def _pids(title: str) -> list[int]:
    """The processes Ray titled `title` ("ray::teacher": a task; "ray::RayTrainWorker": an
    actor, whose title goes on with the method it runs, "ray::RayTrainWorker.run") in the Ray
    cluster this test process is connected to: the children of its raylet. (Other Ray clusters
    run beside it: the API tests', in the suite's other process.)"""
    import ray

    gcs = f"--gcs-address={ray.get_runtime_context().gcs_address}"
    ps = ["ps", "-ww", "-eo", "pid,ppid,args"]  # -ww: whole lines, whatever COLUMNS says
    out = subprocess.run(ps, capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    raylets = {pid for pid, _, args in rows if gcs in args.split()}
    return [
        int(pid)
        for pid, ppid, args in rows
        if ppid in raylets and args.split()[0].split(".")[0] == title
    ]


def _history(client: MlflowClient, key: str, metric: str) -> list[int]:
    """The steps of `metric` in the run tagged `key`, in the order they were logged."""
    exp = client.get_experiment_by_name("pdistill")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`pdistill.key` = '{key}'")
    if not runs:
        return []
    history = client.get_metric_history(runs[0].info.run_id, metric)
    return [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]


def _loss_history(client: MlflowClient, key: str) -> list[int]:
    return _history(client, key, "train/loss")


def _stored(key: str) -> bool:
    listed = boto3.client("s3").list_objects_v2(Bucket="pdistill-test", Prefix=key)
    return listed.get("KeyCount", 0) > 0


def _stored_status(campaign: str) -> dict:
    """The campaign's `status.json` in the test bucket."""
    key = f"store/campaigns/{campaign}/status.json"
    return json.loads(boto3.client("s3").get_object(Bucket="pdistill-test", Key=key)["Body"].read())


def _run_in_thread(spec: dict, settings) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = run_campaign(parse_spec(spec), settings, poll_s=0.5)
        except Exception as exc:  # examined by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# The teacher trains 200 updates here and saves its state every 50; round 1 has room for a
# worker killed after its checkpoint at 100 and its driving task after the next one.
TEACHER_KILL_SPEC = {
    **KILL_SPEC,
    "teacher": {"train": {"updates": 200, "batch_size": 32, "warmup_updates": 5}},
    "distill": {"updates": 300, "batch_size": 32, "checkpoint_every": 50},
}


def _kill_the_teacher_once_it_saved(campaign: str, driver: threading.Thread, deadline: float):
    """SIGKILL the teacher stage's process once its training state is in storage; its pid."""
    state = f"store/campaigns/{campaign}/{TEACHER_STATE}"
    while driver.is_alive() and time.monotonic() < deadline:
        if _stored(state) and (pids := _pids("ray::teacher")):
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.1)
    return None


def test_a_stage_lost_more_often_than_max_failures_fails_the_campaign_and_says_so(
    ray_cluster, settings
):
    spec = {**TEACHER_KILL_SPEC, "name": "ray-lost", "resources": {"max_failures": 0}}
    thread, outcome = _run_in_thread(spec, settings)
    killed = _kill_the_teacher_once_it_saved("ray-lost", thread, time.monotonic() + 600)
    thread.join(timeout=600)
    assert killed is not None, f"never saw the teacher's saved state: {outcome}"
    error = outcome.get("error")
    assert isinstance(error, StageError), outcome
    said = (
        "a stage's process or node was lost on each of its 1 attempt(s) "
        "(1 + resources.max_failures: 0); the campaign was at 'teacher: training, update "
    )
    assert said in str(error), error
    stored = _stored_status("ray-lost")
    assert stored["state"] == "failed" and said in stored["reason"], stored
    # Nothing the teacher saved is lost: submitting the campaign again goes on from it.
    assert _stored(f"store/campaigns/ray-lost/{TEACHER_STATE}")


def test_a_killed_teacher_stage_and_a_killed_train_worker_resume_from_what_they_saved(
    ray_cluster, settings
):
    """Three processes SIGKILLed in one campaign: the teacher stage's Ray task once its training
    state is stored (Ray runs the task again, up to `resources.max_failures` times); a DDP
    worker of round 1 after a checkpoint (Train starts a new worker group); then the task that
    drives round 1's Train job (Ray runs it again, and its Train job resumes from storage)."""
    client = MlflowClient(settings.mlflow_tracking_uri)
    key = "campaign/ray-kill/round-1"
    thread, outcome = _run_in_thread(TEACHER_KILL_SPEC, settings)
    killed = None
    deadline = time.monotonic() + 600
    teacher_killed = _kill_the_teacher_once_it_saved("ray-kill", thread, deadline)
    while thread.is_alive() and time.monotonic() < deadline:
        steps = _loss_history(client, key)
        if steps and max(steps) >= 100 and (pids := _pids("ray::RayTrainWorker")):
            killed, at_step, before = pids[-1], max(steps), set(pids)
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    replacements: set[int] = set()
    while thread.is_alive() and killed is not None and not replacements:
        replacements = set(_pids("ray::RayTrainWorker")) - before
        time.sleep(0.2)
    # Once the new worker group has reported: the task that drives the round's Train job.
    driving: list[int] = []
    while thread.is_alive() and replacements and time.monotonic() < deadline:
        if _loss_history(client, key).count(at_step + 50) and (
            driving := _pids("ray::round-1-train")
        ):
            os.kill(driving[0], signal.SIGKILL)
            break
        time.sleep(0.2)
    thread.join(timeout=600)
    assert teacher_killed is not None, f"never saw the teacher's saved state: {outcome}"
    assert killed is not None, f"never saw a checkpoint to kill after: {outcome}"
    assert driving, f"the round's Train job had no driving task to kill: {outcome}"
    assert "error" not in outcome, outcome.get("error")
    # The teacher went on from its saved state: a new start would log its first point again.
    teacher = _history(client, "campaign/ray-kill", TEACHER_LOSS)
    planned = TEACHER_KILL_SPEC["teacher"]["train"]["updates"]
    assert teacher.count(50) == 1 and teacher[-1] == planned and teacher == sorted(teacher), teacher
    updates = TEACHER_KILL_SPEC["distill"]["updates"]
    assert outcome["report"]["rounds"][0]["updates"] == updates
    steps = _loss_history(client, key)
    # Resumed, not restarted: the first reports are not repeated, and the round reached its end.
    assert steps.count(50) == 1 and max(steps) == updates, steps
    assert at_step in steps
    assert replacements, "Train did not start a new worker group after the kill"
    # Each attempt logged where it started (the campaign's history notes each restart from
    # these): the teacher's second from its saved state, the round's from its checkpoints.
    teacher_starts = _history(client, "campaign/ray-kill", TEACHER_START)
    assert teacher_starts[0] == 0 and teacher_starts[1:] and min(teacher_starts[1:]) >= 50
    starts = _history(client, key, TRAIN_START)
    assert starts[0] == 0 and len(starts) >= 3 and min(starts[1:]) >= 50, starts


TUNE_KILL_SPEC = {
    **KILL_SPEC,
    "name": "ray-tune-kill",
    "distill": {"updates": 200, "batch_size": 32, "checkpoint_every": 50},
    "tune": {"enabled": True, "trials": 2, "trial_updates": 150, "lr_min": 5e-5, "lr_max": 2e-4},
    "resources": {"workers": 1, "max_failures": 2},  # both trials at once on 2 CPUs
}


# Slow (~2 min on 2 cores): the Tune-driving task is the same kind of task as the Train-driving
# one killed above; this adds what Tune does when its experiment is started again.
@pytest.mark.slow
def test_a_killed_lr_search_task_runs_again_and_its_trials_resume(ray_cluster, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    trials = [f"campaign/ray-tune-kill/round-1/trial-{i}" for i in range(2)]
    thread, outcome = _run_in_thread(TUNE_KILL_SPEC, settings)
    killed: list[int] = []
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        # Once a trial has logged its second report, its first checkpoint is whole (ASHA may
        # have stopped the other after its first).
        if any(max(_loss_history(client, t), default=0) >= 100 for t in trials) and (
            killed := _pids("ray::round-1-tune")
        ):
            os.kill(killed[0], signal.SIGKILL)
            break
        time.sleep(0.2)
    thread.join(timeout=600)
    assert killed, f"the LR search never got to kill: {outcome}"
    assert "error" not in outcome, outcome.get("error")
    # One MLflow run per trial (found again, not duplicated), each resumed, not restarted.
    assert len(_campaign_runs(client, "ray-tune-kill", kind="trial")) == 2
    histories = [_loss_history(client, key) for key in trials]
    assert all(steps.count(50) == 1 for steps in histories), histories
    assert max(max(steps) for steps in histories) == 150, histories
    assert outcome["report"]["rounds"][0]["updates"] == 200


DRIVER = """
import sys, ray
from orchestrator.campaign import run_campaign
from orchestrator.settings import Settings
from orchestrator.spec import parse_spec
import json
spec, settings = json.loads(sys.argv[2]), Settings.model_validate_json(sys.argv[3])
ray.init(address=sys.argv[1], log_to_driver=False)
run_campaign(parse_spec(spec), settings, poll_s=0.5)
"""

DRIVER_SPEC = {
    **KILL_SPEC,
    "name": "ray-driver-kill",
    "steps": {"start": 4, "target": 1},
    "distill": {"updates": 150, "batch_size": 32, "checkpoint_every": 50},
    "resources": {"workers": 1, "max_failures": 2},  # the driver dies here, not a worker
}


def _campaign_runs(client: MlflowClient, campaign: str, kind: str = "round") -> list:
    """The campaign's MLflow runs of `kind` (round or trial)."""
    exp = client.get_experiment_by_name("pdistill")
    return client.search_runs(
        [exp.experiment_id],
        f"tags.`pdistill.kind` = '{kind}' and tags.`pdistill.key` LIKE 'campaign/{campaign}/%'",
    )


def _set_saved_seconds(train_run: str, seconds: float, tmp_path) -> int:
    """Rewrite every checkpoint of a Train run in S3 as if its updates had taken `seconds`
    (with the digest its meta.json checks); returns how many it rewrote."""
    s3, bucket = boto3.client("s3"), "pdistill-test"
    stored = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="store/")
        for o in page.get("Contents", [])
        if f"/ray/{train_run}/checkpoint_" in o["Key"]
    }
    # A checkpoint whose upload the kill cut short has no meta.json: Train never resumes from it.
    keys = [
        k
        for k in stored
        if k.endswith("/updater.pt") and k.removesuffix("updater.pt") + "meta.json" in stored
    ]
    for key in keys:
        local = tmp_path / "updater.pt"
        s3.download_file(bucket, key, str(local))
        state = torch.load(local, weights_only=False)
        torch.save({**state, "seconds": seconds}, local)
        meta_key = key.removesuffix("updater.pt") + "meta.json"
        meta = json.loads(s3.get_object(Bucket=bucket, Key=meta_key)["Body"].read())
        meta["files"]["updater.pt"] = hashlib.sha256(local.read_bytes()).hexdigest()
        s3.upload_file(str(local), bucket, key)
        s3.put_object(Bucket=bucket, Key=meta_key, Body=json.dumps(meta).encode())
    return len(keys)


# Slow (~200-400 s on 2 cores): a driver killed mid-campaign is in the default suite through
# tests/api/test_restart.py (the reconciler resumes it) and a rerun's skipped stages through
# test_ray_campaign.py; this one adds the rerun's time accounting. `bash bench/slow_checks.sh`.
@pytest.mark.slow
def test_killed_driver_rerun_skips_finished_rounds_and_resumes(ray_cluster, settings, tmp_path):
    import ray

    client = MlflowClient(settings.mlflow_tracking_uri)
    key2 = "campaign/ray-driver-kill/round-2"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen(
        [
            sys.executable,
            str(script),
            ray.get_runtime_context().gcs_address,
            json.dumps(DRIVER_SPEC),
            settings.model_dump_json(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    at_step = None
    while driver.poll() is None and time.monotonic() < deadline:
        steps = _loss_history(client, key2)
        if steps and max(steps) >= 100:
            at_step = max(steps)
            driver.kill()  # SIGKILL: no cleanup, as in a crash
            break
        time.sleep(0.2)
    driver.wait(timeout=60)
    assert at_step is not None, "the driver finished or stalled before round 2 checkpointed"
    # Ray tears down what the dead driver owned (its tasks, their Train runs).
    while _pids("ray::RayTrainWorker") and time.monotonic() < deadline:
        time.sleep(0.5)
    # As if the updates before the crash had taken 1000 s: the round's time must include them.
    assert _set_saved_seconds("ray-driver-kill-round-2", 1000.0, tmp_path) >= 1
    report = run_campaign(parse_spec(DRIVER_SPEC), settings, poll_s=0.5)
    assert [r["steps"] for r in report["rounds"]] == [2, 1]
    assert report["rounds"][1]["train_seconds"] > 1000.0
    assert len(_campaign_runs(client, "ray-driver-kill")) == 2  # no duplicate round runs
    round1 = _loss_history(client, "campaign/ray-driver-kill/round-1")
    updates = DRIVER_SPEC["distill"]["updates"]
    assert round1.count(updates) == 1  # round 1 was not recomputed
    steps2 = _loss_history(client, key2)
    assert steps2.count(50) == 1 and max(steps2) == updates, steps2  # resumed, not restarted


RETRY_SPEC = {
    **KILL_SPEC,
    "name": "ray-retries",
    "steps": {"start": 8, "target": 2},
    # Round 1 (8→4) is short; round 2 (4→2, a "last round") runs long enough to be killed.
    "distill": {
        "updates": 20,
        "last_rounds_updates": 3000,
        "batch_size": 32,
        "checkpoint_every": 10,
    },
    "resources": {"workers": 2, "max_failures": 0},
}


def test_round_that_exhausts_retries_fails_campaign_and_keeps_earlier_rounds(ray_cluster, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    thread, outcome = _run_in_thread(RETRY_SPEC, settings)
    killed = None
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        if _loss_history(client, "campaign/ray-retries/round-2") and (
            pids := _pids("ray::RayTrainWorker")
        ):
            killed = pids[-1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    thread.join(timeout=600)
    assert killed is not None, f"round 2 never started training: {outcome}"
    error = outcome.get("error")
    assert error is not None and "round 2: training failed after 0 retries" in str(error), outcome
    s3, prefix = boto3.client("s3"), "store/campaigns/ray-retries"
    status = _stored_status("ray-retries")
    assert status["state"] == "failed" and "round 2" in status["reason"]
    # Round 1's student and record survive, and so does its MLflow run.
    s3.head_object(Bucket="pdistill-test", Key=f"{prefix}/round-1/student.safetensors")
    s3.head_object(Bucket="pdistill-test", Key=f"{prefix}/stages/round-1-train.json")
    assert len(_campaign_runs(client, "ray-retries")) == 2
    assert _loss_history(client, "campaign/ray-retries/round-1")[-1] == 20


OUTAGE_SPEC = {
    **KILL_SPEC,
    "name": "ray-s3-outage",
    "distill": {"updates": 250, "batch_size": 32, "checkpoint_every": 50},
    "resources": {"workers": 1, "max_failures": 2},  # S3 goes away here, not a worker
}


def test_s3_outage_mid_round_delays_but_does_not_fail_the_campaign(ray_cluster, settings, s3_proxy):
    client = MlflowClient(settings.mlflow_tracking_uri)
    key = "campaign/ray-s3-outage/round-1"
    thread, outcome = _run_in_thread(OUTAGE_SPEC, settings)
    down_at = None
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        steps = _loss_history(client, key)
        if steps and max(steps) >= 100:
            s3_proxy.stop()  # refused connections, cut transfers: S3 is gone for its clients
            down_at = max(steps)
            try:
                time.sleep(30)
                during = max(_loss_history(client, key))
            finally:
                s3_proxy.start()
            break
        time.sleep(0.2)
    thread.join(timeout=900)
    assert down_at is not None, f"never reached a checkpoint before the outage: {outcome}"
    assert "error" not in outcome, outcome.get("error")
    updates = OUTAGE_SPEC["distill"]["updates"]
    assert outcome["report"]["rounds"][0]["updates"] == updates
    steps = _loss_history(client, key)
    assert max(steps) == updates
    # Training waited at its next checkpoint instead of failing: no update was reported twice,
    # which a restart from an earlier checkpoint would have done; and every checkpoint a worker
    # loaded was verified against its digests (ray_round.verified), so none was partial.
    assert len(steps) == len(set(steps)), "the round restarted from an earlier checkpoint"
    assert during - down_at <= 2 * OUTAGE_SPEC["distill"]["checkpoint_every"]


DIVERGE_SPEC = {
    **KILL_SPEC,
    "name": "ray-diverge",
    "distill": {"updates": 20, "batch_size": 16, "checkpoint_every": 10},
    # Adam moves every weight by about the learning rate: 1e29 sends the next loss to inf.
    "tune": {"enabled": True, "trials": 2, "trial_updates": 10, "lr_min": 1e29, "lr_max": 1e30},
    "resources": {"workers": 1, "max_failures": 2},
}


def test_lr_trials_that_diverge_fail_and_the_round_says_why(ray_cluster, settings):
    """Each trial stops at its first report with the update where its loss went non-finite;
    its MLflow run is FAILED, and a search with no finished trial fails the round with the
    first trial's reason, keeping the teacher."""
    with pytest.raises(StageError) as info:
        run_campaign(parse_spec(DIVERGE_SPEC), settings, poll_s=0.5)
    assert re.search(
        r"round 1: no LR-search trial finished its 10 updates \(0 of 2 reported; errors: 2; "
        r"the first: \w+: ray-diverge-round-1-trial-\d: (loss is (nan|inf)|the gradient is not "
        r"finite) at update \d+.*; stopped\)",
        str(info.value),
    ), str(info.value)
    trials = _campaign_runs(MlflowClient(settings.mlflow_tracking_uri), "ray-diverge", kind="trial")
    assert sorted(t.info.status for t in trials) == ["FAILED", "FAILED"]
    status = _stored_status("ray-diverge")
    assert status["state"] == "failed" and "no LR-search trial finished" in status["reason"]
    boto3.client("s3").head_object(
        Bucket="pdistill-test", Key="store/campaigns/ray-diverge/teacher.safetensors"
    )


def test_placement_bound_turns_the_timeout_into_ray_trains_start_waits(monkeypatch):
    monkeypatch.delenv(START_ENV, raising=False)
    with placement_bound(1800) as failures:
        assert failures == 29 and START_ENV not in os.environ  # 30 waits of Ray's 60 s
    monkeypatch.setenv(START_ENV, "120")  # an operator's own wait is kept
    with placement_bound(1800) as failures:
        assert failures == 14 and os.environ[START_ENV] == "120"
    with placement_bound(3) as failures:  # shorter than one wait: the wait is shortened
        assert failures == 0 and os.environ[START_ENV] == "3"
    assert os.environ[START_ENV] == "120"


UNPLACED_SPEC = {
    **KILL_SPEC,
    "name": "ray-unplaced",
    "distill": {"updates": 20, "batch_size": 32, "checkpoint_every": 10},
}


def _run_unplaced(spec: dict, settings) -> dict:
    """Run `spec` with one of the cluster's 2 CPUs held (the teacher and its evaluation fit,
    no 2-worker group does) and a 3 s placement bound; its outcome once it ended."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    held = placement_group([{"CPU": 1}])
    ray.get(held.ready(), timeout=60)
    try:
        bounded = settings.model_copy(update={"placement_timeout_s": 3})
        thread, outcome = _run_in_thread(spec, bounded)
        thread.join(timeout=300)
        assert not thread.is_alive(), "it still waits for its workers after 300 s"
    finally:
        remove_placement_group(held)
    return outcome


def test_a_round_whose_workers_are_never_placed_fails_in_time_and_resumes_once_they_are(
    ray_cluster, settings
):
    """Ray Train would ask for the round's workers for ever; the round fails once
    PDISTILL_PLACEMENT_TIMEOUT_S has passed, says why, and keeps the teacher, and the same
    campaign resumes once the CPU is free (nothing of the failed attempt holds it)."""
    outcome = _run_unplaced(UNPLACED_SPEC, settings)
    said = (
        "round 1: its 2 Ray Train worker(s) (1 CPU and 0 GPU each, resources.*) were not placed "
        "within 3 s (PDISTILL_PLACEMENT_TIMEOUT_S); the cluster has "
    )
    assert isinstance(outcome.get("error"), StageError) and said in str(outcome["error"]), outcome
    assert said in _stored_status("ray-unplaced")["reason"]
    assert _stored("store/campaigns/ray-unplaced/stages/teacher.json")
    client = MlflowClient(settings.mlflow_tracking_uri)
    teacher = _history(client, "campaign/ray-unplaced", TEACHER_LOSS)
    # The resume: bounded too, so that a placement group the failed attempt left would fail it
    # instead of hanging the test.
    report = run_campaign(
        parse_spec(UNPLACED_SPEC),
        settings.model_copy(update={"placement_timeout_s": 120}),
        poll_s=0.5,
    )
    assert [r["round"] for r in report["rounds"]] == [1]
    assert _history(client, "campaign/ray-unplaced", TEACHER_LOSS) == teacher  # not retrained
    assert _loss_history(client, "campaign/ray-unplaced/round-1")[-1] == 20


# Slow (`bash bench/slow_checks.sh`): the test above checks the bound and the round's words;
# this one the words the LR search gives when none of its trials' workers are placed.
@pytest.mark.slow
def test_lr_trials_whose_workers_are_never_placed_fail_in_time_and_say_why(ray_cluster, settings):
    tune = {"enabled": True, "trials": 2, "trial_updates": 10}
    outcome = _run_unplaced({**UNPLACED_SPEC, "name": "ray-unplaced-tune", "tune": tune}, settings)
    said = (
        "round 1: no LR-search trial finished its 10 updates (0 of 2 reported; errors: 2; the "
        "first: RuntimeError: its 2 Ray Train worker(s) (1 CPU and 0 GPU each, resources.*) "
        "were not placed within 3 s (PDISTILL_PLACEMENT_TIMEOUT_S); the cluster has "
    )
    assert isinstance(outcome.get("error"), StageError) and said in str(outcome["error"]), outcome
    assert said in _stored_status("ray-unplaced-tune")["reason"]
    assert _stored("store/campaigns/ray-unplaced-tune/stages/teacher.json")  # kept
