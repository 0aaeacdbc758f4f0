"""What the store hands out: frozen plain data, detached from any session, so callers (routes,
the driver, the reconciler) never touch a live ORM object or a lazy load."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.store.models import CampaignStatus, RoundStatus, TrialStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

V = TypeVar("V", bound="DataclassInstance")


@dataclasses.dataclass(frozen=True)
class TeamView:
    id: int
    name: str
    gpu_quota: float
    created_at: datetime


@dataclasses.dataclass(frozen=True)
class TokenView:
    """A token without its secret: `prefix` is its first characters, to tell tokens apart."""

    id: int
    team_id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclasses.dataclass(frozen=True)
class CampaignView:
    id: str
    team_id: int
    name: str
    spec: dict[str, Any]
    status: CampaignStatus
    reason: str | None
    priority: int
    gpus: float
    idempotency_key: str | None
    submission_id: str | None
    mlflow_run_id: str | None
    current_round: int | None
    rounds_total: int
    best_fid: float | None
    teacher_updates: int
    teacher_updates_done: int
    teacher_loss: float | None
    teacher_finished_at: datetime | None
    teacher_fid: float | None
    teacher_eval_samples_done: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclasses.dataclass(frozen=True)
class RoundView:
    campaign_id: str
    k: int
    teacher_steps: int
    student_steps: int
    updates: int
    updates_done: int
    eval_samples: int
    eval_samples_done: int
    status: RoundStatus
    lr: float | None
    loss: float | None
    fid: float | None
    ddim_fid: float | None
    wall_seconds: float | None
    gpu_seconds: float | None
    started_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None


@dataclasses.dataclass(frozen=True)
class TrialView:
    campaign_id: str
    k: int
    index: int
    lr: float
    val_loss: float | None
    status: TrialStatus


@dataclasses.dataclass(frozen=True)
class AuditView:
    id: int
    campaign_id: str
    from_status: str | None  # None: the campaign was created
    to_status: str
    actor: str
    detail: str | None
    at: datetime


def view(cls: type[V], row: object) -> V:
    """Copy a row's attributes into the view `cls` (whose fields are a subset of the row's)."""
    return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})
