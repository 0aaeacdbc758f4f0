"""MLflow on SQLite: processes that open a fresh tracking database at once (two campaign drivers
starting together on a fresh install) must not break each other's table creation."""

import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from orchestrator.tracking import EXPERIMENT


def test_trackers_opening_a_fresh_sqlite_db_at_once_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"  # its folder does not exist yet
    code = f"from orchestrator.tracking import Tracker; print(Tracker({uri!r}).experiment_id)"
    # Without a lock, 3 or 4 of 4 such processes failed in MLflow's migrations (seen here:
    # "duplicate column name: step", "Online migration expected to match one row").
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [subprocess.Popen([sys.executable, "-c", code], **pipes) for _ in range(4)]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    for (_, err), rc in results:
        assert rc == 0, err.decode()[-2000:]
    ids = {out.decode().strip() for (out, _), _ in results}
    assert len(ids) == 1  # one experiment, created once
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(EXPERIMENT)
    assert exp is not None and exp.experiment_id in ids
