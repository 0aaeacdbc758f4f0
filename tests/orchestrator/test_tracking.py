"""MLflow on SQLite: processes that open a fresh tracking database at once (two campaign drivers
starting together on a fresh install) must not break each other's table creation, and one killed
while it builds the database must not leave it broken for the next."""

import signal
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from orchestrator.tracking import EXPERIMENT, Throttle, Tracker


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


# Run in a child process: it SIGKILLs itself once MLflow's migrations of a fresh DB have moved its
# schema version `steps` times (~66 steps build a DB with MLflow 3.x), i.e. in the middle of the
# build, as a cancelled Ray job is killed. A listener on SQLAlchemy's statements only picks that
# moment; the build itself is MLflow's own.
_KILLED_MID_BUILD = """
import os, signal, sys
import sqlalchemy
from sqlalchemy.engine import Engine
from orchestrator.tracking import Tracker

uri, steps = sys.argv[1], int(sys.argv[2])
seen = 0

@sqlalchemy.event.listens_for(Engine, "after_cursor_execute")
def _kill(conn, cursor, statement, *args):
    global seen
    seen += statement.lstrip().upper().startswith("UPDATE ALEMBIC_VERSION")
    if seen >= steps:
        os.kill(os.getpid(), signal.SIGKILL)

Tracker(uri)
print("the build finished before the kill")
"""


def test_a_tracker_killed_while_building_a_fresh_sqlite_db_leaves_it_usable(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_BUILD, uri, "30"],
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, (child.stdout + child.stderr).decode()[-2000:]
    # Before the build was atomic, the next open failed on the half-built DB ("duplicate column
    # name: step", "table jobs already exists"; "table secrets already exists" seen in CI).
    tracker = Tracker(uri)
    run_id = tracker.run(name="after-kill", key="k")
    tracker.metrics(run_id, {"loss": 1.5})
    assert [m.value for m in tracker.history("k", "loss")] == [1.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.init-lock"]


def test_a_throttle_says_yes_first_then_at_most_every_period_and_always_at_the_end() -> None:
    due = Throttle(seconds=3600)
    assert [due(), due(), due(), due(last=True), due()] == [True, False, False, True, False]
    no_wait = Throttle(seconds=0)
    assert no_wait() and no_wait()
