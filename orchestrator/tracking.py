"""MLflow tracking through an explicit `MlflowClient`: campaign run ⊃ round runs ⊃ trial runs.

Runs are found again by their tags before one is created, so re-running a campaign after a
crash logs into the same runs instead of duplicating them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryDbStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingDbStore
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.storage import Storage

EXPERIMENT = "pdistill"


@contextlib.contextmanager
def _first_use_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite tracking DB while a client opens it; build the DB
    first (aside, `_build_sqlite_db`) if it is new.

    MLflow creates the tables and runs its migrations when a store opens an empty database,
    without a lock: two processes doing that at once (two campaign drivers starting together on
    a fresh install) break each other ("duplicate column name", "Online migration expected to
    match one row"). A server URI needs nothing: the server opened its database already.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.init-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        # (a WAL beside an empty DB may hold its pages: that one is left to SQLite)
        new = (not db.exists() or db.stat().st_size == 0) and not Path(f"{db}-wal").exists()
        if new:
            # SQLite deletes a rollback journal beside a DB of 0 pages as obsolete; left beside
            # the DB moved here, it would be "rolled back" onto it.
            Path(f"{db}-journal").unlink(missing_ok=True)
            _build_sqlite_db(db)
        try:
            yield
        except Exception as exc:  # e.g. "table secrets already exists"
            if not new:
                exc.add_note(
                    f"pdistill: if {db} was left half-built by a process killed while it first "
                    "built it (before pdistill built it aside) and holds no runs, delete it: it "
                    "is built again on the next open"
                )
            raise


def _build_sqlite_db(db: Path) -> None:
    """Build a complete MLflow DB at `<db>.building`, then rename it to `db` in one step.

    MLflow builds an empty DB in many steps (tables, then some 60 migrations), most committed
    on their own: a process killed among them (a cancelled Ray job) left a half-built DB that
    every later open failed on ("table secrets already exists"). Built aside, `db` is either
    absent or complete. The caller holds the init lock, so a `<db>.building` found here is what
    a killed build left: it is thrown away and built again.
    """
    tmp = db.with_name(f"{db.name}.building")
    side_files = [Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")]
    for path in (tmp, *side_files):
        path.unlink(missing_ok=True)
    uri = f"sqlite:///{tmp}"
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.get_experiment_by_name(EXPERIMENT)  # the tracking store: tables, migrations
        client.search_registered_models(max_results=1)  # the registry's store too
    finally:
        # MLflow keeps one engine per DB URI for the life of the process (`_engine_map`, a class
        # attribute of each store): close this one's connections, and forget it.
        for engines in (TrackingDbStore._engine_map, RegistryDbStore._engine_map):
            if (engine := engines.pop(uri, None)) is not None:
                engine.dispose()
    if pending := [str(p) for p in side_files if p.exists()]:  # all connections are closed
        raise RuntimeError(f"building {db}: SQLite left {pending} after closing it; not moved")
    os.replace(tmp, db)


class Throttle:
    """Says yes at most every `seconds`, and always to the last call: for log points that come
    every few milliseconds on a GPU (a teacher's updates, an evaluation's batches)."""

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds, self.at = seconds, -math.inf

    def __call__(self, *, last: bool = False) -> bool:
        now = time.monotonic()
        if last or now - self.at >= self.seconds:
            self.at = now
            return True
        return False


class Tracker:
    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        if tracking_uri.startswith("file:") or "://" not in tracking_uri:
            raise ValueError(
                f"mlflow tracking URI {tracking_uri!r}: use sqlite:///PATH or http(s)://HOST "
                "(MLflow 3's file store is not supported)"
            )
        self.uri = tracking_uri
        self._ids: dict[str, str] = {}  # pdistill.key → run id, once found (a key's run stays)
        with _first_use_lock(tracking_uri):  # the client opens (and may create) the DB
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            self.client.search_registered_models(max_results=1)  # the registry's store too
        if exp is not None:
            self.experiment_id = exp.experiment_id
        else:
            try:
                self.experiment_id = self.client.create_experiment(
                    EXPERIMENT, artifact_location=artifact_root
                )
            except MlflowException:  # created concurrently by another process
                got = self.client.get_experiment_by_name(EXPERIMENT)
                assert got is not None
                self.experiment_id = got.experiment_id

    def run(self, *, name: str, key: str, parent: str | None = None, **tags: str) -> str:
        """The id of the run tagged `pdistill.key = key`, created (nested under `parent`) if new."""
        if (found := self.find(key)) is not None:
            return found
        all_tags = {"pdistill.key": key, **{f"pdistill.{k}": v for k, v in tags.items()}}
        if parent is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self._ids[key] = str(run.info.run_id)
        return self._ids[key]

    def history(self, key: str, metric: str) -> list[Metric]:
        """The metric's history in the run tagged `pdistill.key = key` (empty if none yet)."""
        run_id = self.find(key)
        return [] if run_id is None else list(self.client.get_metric_history(run_id, metric))

    def find(self, key: str) -> str | None:
        """The id of the run tagged `pdistill.key = key`, or None."""
        if key not in self._ids:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`pdistill.key` = '{key}'", max_results=1
            )
            if not found:
                return None
            self._ids[key] = str(found[0].info.run_id)
        return self._ids[key]

    def runs_under(self, prefix: str) -> list[Run]:
        """The runs whose `pdistill.key` starts with `prefix` (e.g. a round's trials)."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`pdistill.key` LIKE '{prefix}%'",
            max_results=1000,
        )
        # LIKE's `_` matches any one character: keep the exact prefix only.
        return [r for r in found if r.data.tags["pdistill.key"].startswith(prefix)]

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        existing = self.client.get_run(run_id).data.params
        for k, v in params.items():
            if k not in existing:  # params are immutable in MLflow; a resumed stage re-logs them
                self.client.log_param(run_id, k, str(v)[:6000])

    def metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def artifact_json(self, run_id: str, name: str, data: Any) -> None:
        self.artifact_bytes(run_id, name, json.dumps(data, indent=2, default=str).encode())

    def artifact_bytes(self, run_id: str, path: str, data: bytes) -> None:
        """Log `data` as the artifact at `path` (e.g. "samples/grid.png") in the run."""
        folder, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_bytes(data)
            self.artifact(run_id, p, folder or None)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def register(self, name: str, *, source: str, run_id: str) -> str:
        """Register `source` (the student checkpoint URI) as a new version of model `name`."""
        with contextlib.suppress(MlflowException):  # already registered
            self.client.create_registered_model(name)
        for mv in self.client.search_model_versions(f"name = '{name}'"):
            if mv.run_id == run_id and mv.source == source:
                return str(mv.version)
        return str(self.client.create_model_version(name, source=source, run_id=run_id).version)


def open_tracker(tracking_uri: str, storage: Storage) -> Tracker:
    """A Tracker whose experiment (if this creates it) keeps a SQLite store's artifacts beside the
    checkpoints (`<storage>/mlflow-artifacts`, S3 or the local storage root); a tracking server
    decides for itself (its artifact proxy). Whoever opens MLflow first fixes the location."""
    root = storage.uri("mlflow-artifacts") if tracking_uri.startswith("sqlite:") else None
    return Tracker(tracking_uri, artifact_root=root)
