"""The campaign's teacher stage, killed while it trains, continues from its saved state when it
runs again (local storage, MLflow on SQLite, a real process killed with SIGKILL)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from orchestrator.history import TEACHER_LOSS, TEACHER_START
from orchestrator.settings import Settings
from orchestrator.spec import parse_spec
from orchestrator.stages import TEACHER_STATE, Campaign
from workers.checkpoint import training_state, training_state_bytes

SPEC = {
    "name": "teacher-kill",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    # Logged every 50 updates, its state saved every 50 too (10%, rounded up to a log point).
    "teacher": {"train": {"updates": 300, "batch_size": 16, "warmup_updates": 5}},
    "steps": {"start": 2, "target": 1},
}
# A process that runs only the teacher stage of SPEC, with the settings from PDISTILL_*.
STAGE = (
    "import json, sys; from orchestrator.settings import Settings; "
    "from orchestrator.spec import parse_spec; from orchestrator.stages import Campaign; "
    "Campaign(parse_spec(json.loads(sys.argv[1])), Settings()).teacher()"
)


def test_a_killed_teacher_stage_resumes_from_its_saved_state(tmp_path: Path, cache_dir) -> None:
    settings = Settings(
        storage_uri=str(tmp_path / "store"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=cache_dir,
    )
    env = {
        **os.environ,
        "PDISTILL_STORAGE_URI": settings.storage_uri,
        "PDISTILL_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PDISTILL_CACHE_DIR": str(cache_dir),
    }
    state = tmp_path / "store" / "campaigns" / "teacher-kill" / TEACHER_STATE
    proc = subprocess.Popen([sys.executable, "-c", STAGE, json.dumps(SPEC)], env=env)
    try:
        deadline = time.monotonic() + 300
        while not state.exists():
            assert proc.poll() is None, "the stage ended before it saved its state"
            assert time.monotonic() < deadline, "no training state saved in 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    # As if the updates before the kill had taken 1000 s: the teacher's seconds include them.
    saved = training_state(state.read_bytes())
    assert saved["updater"]["seconds"] > 0
    saved["updater"]["seconds"] = 1000.0
    state.write_bytes(training_state_bytes(saved))

    c = Campaign(parse_spec(SPEC), settings)
    assert c.record("teacher") is None  # killed: the stage did not finish
    record = c.teacher()
    assert Path(record["uri"]).is_file() and not state.exists()
    assert 1000.0 < record["train_seconds"] < 1000.0 + 600

    client = MlflowClient(settings.mlflow_tracking_uri)
    run = c.tracker().find("campaign/teacher-kill")
    history = sorted(client.get_metric_history(run, TEACHER_LOSS), key=lambda m: m.timestamp)
    steps = [m.step for m in history]
    # The first attempt logged update 50, then saved its state. A start from scratch would log
    # update 50 again; the second attempt went on from a saved update (50 or later) to the end.
    updates = SPEC["teacher"]["train"]["updates"]
    assert steps.count(50) == 1 and steps[-1] == updates and steps == sorted(steps), steps
    # Each attempt logged the update it started from: the second, its saved one.
    starts = sorted(client.get_metric_history(run, TEACHER_START), key=lambda m: m.timestamp)
    assert [m.step for m in starts] == [0, saved["updater"]["done"]]
