"""What the routes share, made once per app in its lifespan: settings, the store, the Ray link,
the reconciler; and the conversions from store views to API answers."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from typing import Any

from fastapi import HTTPException

from api.schemas import (
    CampaignOut,
    Links,
    LossPoint,
    RoundOut,
    TeacherOut,
    TeacherStatus,
    TrialOut,
)
from orchestrator.history import lineage
from orchestrator.jobs import TEACHER_CHECKPOINT, campaign_prefix, storage_name
from orchestrator.ray_link import RayLink
from orchestrator.scheduler import Reconciler
from orchestrator.settings import Settings
from orchestrator.storage import Storage
from orchestrator.store import (
    CampaignStatus,
    CampaignView,
    RoundStatus,
    RoundView,
    Store,
    TrialView,
)


def teacher_out(c: CampaignView, storage: Storage) -> TeacherOut:
    if c.teacher_finished_at is not None or c.status is CampaignStatus.SUCCEEDED:
        status: TeacherStatus = "ready"
    elif c.status is CampaignStatus.RUNNING:
        status = "training" if c.teacher_updates else "loading"
    elif c.status is CampaignStatus.FAILED:
        status = "failed"
    elif c.status in (CampaignStatus.CANCELLING, CampaignStatus.CANCELLED):
        status = "cancelled"
    else:
        status = "pending"
    folder = campaign_prefix(storage_name(c.id, c.name))
    return TeacherOut(
        source="train" if c.teacher_updates else "checkpoint",
        status=status,
        checkpoint_uri=storage.uri(f"{folder}/{TEACHER_CHECKPOINT}") if status == "ready" else None,
        checkpoint_url=f"/v1/campaigns/{c.id}/teacher.safetensors" if status == "ready" else None,
        updates=c.teacher_updates,
        updates_done=c.teacher_updates_done,
        loss=c.teacher_loss,
        finished_at=c.teacher_finished_at,
        steps=c.spec["steps"]["start"],
        fid=c.teacher_fid,
        samples_url=(
            f"/v1/campaigns/{c.id}/teacher/samples.png" if c.teacher_fid is not None else None
        ),
        eval_samples=c.spec["evaluation"]["samples"],
        eval_samples_done=c.teacher_eval_samples_done,
    )


def progress(c: CampaignView, rounds: list[RoundView]) -> float:
    """See CampaignOut.progress."""
    if c.status is CampaignStatus.SUCCEEDED:
        return 1.0
    done, parts = 0.0, len(rounds)
    if c.teacher_updates:  # a teacher trained here weighs as much as a round
        parts += 1
        if c.teacher_finished_at is not None:
            done += 1.0
        else:
            done += min(c.teacher_updates_done, c.teacher_updates) / c.teacher_updates
    if not parts:
        return 0.0
    for r in rounds:
        if r.status is RoundStatus.SUCCEEDED:
            done += 1.0
        elif r.status is RoundStatus.EVALUATING:
            done += 0.9 + 0.1 * min(r.eval_samples_done, r.eval_samples) / max(r.eval_samples, 1)
        else:
            done += 0.9 * min(r.updates_done, r.updates) / max(r.updates, 1)
    return round(min(done / parts, 1.0), 4)


@dataclasses.dataclass
class Services:
    settings: Settings
    store: Store
    link: RayLink
    reconciler: Reconciler | None = None
    # Set when the server begins to stop: open event streams end then, so a shutdown does not
    # wait out its grace period on them and cancel them mid-response.
    stopping: threading.Event = dataclasses.field(default_factory=threading.Event)
    _teams: dict[int, str] = dataclasses.field(default_factory=dict)
    _storages: dict[str, Storage] = dataclasses.field(default_factory=dict)
    _tracker: Any = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def team_name(self, team_id: int) -> str:
        if team_id not in self._teams:
            self._teams.update({t.id: t.name for t in self.store.list_teams()})
        return self._teams.get(team_id, str(team_id))

    def storage(self, c: CampaignView) -> Storage:
        root = c.spec.get("storage") or self.settings.storage_uri
        with self._lock:
            if root not in self._storages:
                self._storages[root] = Storage(root)
            return self._storages[root]

    def tracker(self) -> Any:
        from orchestrator.tracking import open_tracker

        with self._lock:
            if self._tracker is None:
                storage = Storage(self.settings.storage_uri)
                self._tracker = open_tracker(self.settings.mlflow_tracking_uri, storage)
            return self._tracker

    def stage_record(self, c: CampaignView, stage: str) -> dict[str, Any] | None:
        folder = campaign_prefix(storage_name(c.id, c.name))
        raw = self.storage(c).read_bytes(f"{folder}/stages/{stage}.json")
        return None if raw is None else json.loads(raw)

    # -- answers ---------------------------------------------------------------------------------
    def links(self, c: CampaignView) -> Links:
        s = self.settings
        ui = s.mlflow_ui_url or (
            s.mlflow_tracking_uri if s.mlflow_tracking_uri.startswith("http") else None
        )
        mlflow = f"{ui.rstrip('/')}/#/runs/{c.mlflow_run_id}" if ui and c.mlflow_run_id else None
        dash = self.link.dashboard_url
        ray = None
        if dash:
            ray = f"{dash.rstrip('/')}/#/jobs/{c.submission_id}" if c.submission_id else dash
        return Links(mlflow=mlflow, ray_dashboard=ray)

    def campaign_out(self, c: CampaignView, rounds: list[RoundView]) -> CampaignOut:
        return CampaignOut(
            id=c.id,
            name=c.name,
            team=self.team_name(c.team_id),
            status=c.status,
            reason=c.reason,
            priority=c.priority,
            gpus=c.gpus,
            created_at=c.created_at,
            updated_at=c.updated_at,
            started_at=c.started_at,
            finished_at=c.finished_at,
            current_round=c.current_round,
            rounds_total=c.rounds_total,
            best_fid=c.best_fid,
            progress=progress(c, rounds),
            teacher=teacher_out(c, self.storage(c)),
            submission_id=c.submission_id,
            mlflow_run_id=c.mlflow_run_id,
            links=self.links(c),
        )


def round_out(r: RoundView) -> RoundOut:
    evaluated = r.fid is not None
    trained = r.status in (RoundStatus.EVALUATING, RoundStatus.SUCCEEDED)
    at = f"/v1/campaigns/{r.campaign_id}/rounds/{r.k}"
    return RoundOut(
        k=r.k,
        teacher_steps=r.teacher_steps,
        student_steps=r.student_steps,
        updates=r.updates,
        updates_done=r.updates_done,
        eval_samples=r.eval_samples,
        eval_samples_done=r.eval_samples_done,
        status=r.status,
        lr=r.lr,
        loss=r.loss,
        fid=r.fid,
        ddim_fid=r.ddim_fid,
        wall_seconds=r.wall_seconds,
        gpu_seconds=r.gpu_seconds,
        started_at=r.started_at,
        finished_at=r.finished_at,
        samples_url=f"{at}/samples.png" if evaluated else None,
        student_url=f"{at}/student.safetensors" if trained else None,
        mlflow_run_id=r.mlflow_run_id,
    )


def trial_out(t: TrialView) -> TrialOut:
    return TrialOut(index=t.index, lr=t.lr, val_loss=t.val_loss, status=t.status)


def loss_points(svc: Services, key: str, metric: str, start: str) -> list[LossPoint]:
    """`metric` of the MLflow run tagged `key` by update (empty while there is no such run):
    after a restart, only what leads to the model the stage holds now (`lineage`, from the
    attempts' `start` metric and the loss itself); 503 when MLflow does not answer."""
    try:
        tracker = svc.tracker()
        history, starts = tracker.history(key, metric), tracker.history(key, start)
    except Exception as exc:  # MlflowException, database or HTTP errors of the tracking store
        raise HTTPException(503, f"MLflow does not answer: {exc}") from exc
    return [
        LossPoint(step=int(m.step), loss=float(m.value))
        for m in lineage(history, starts)
        if math.isfinite(m.value)
    ]
