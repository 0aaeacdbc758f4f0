"""The control plane's tables: teams, their tokens, campaigns, rounds, Tune trials, audit log.

Every datetime is timezone-aware UTC on the Python side. Statuses are stored as short strings
(with a CHECK constraint) rather than native enums, so SQLite and PostgreSQL hold the same
schema and adding a status is a one-line migration.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class CampaignStatus(enum.StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class RoundStatus(enum.StrEnum):
    PENDING = "pending"
    TUNING = "tuning"
    TRAINING = "training"
    EVALUATING = "evaluating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrialStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"  # stopped early by the scheduler (ASHA)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as aware UTC: SQLite keeps no zone (it returns
    naive values), PostgreSQL returns the session's zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes aware (UTC) datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _status(enum_cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


# Explicit constraint names: the same on both databases, and migrations can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # GPUs this team's starting/running/cancelling campaigns may hold at once.
    gpu_quota: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    # sha256 of the plaintext, hex; the plaintext is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key"),
        Index("ix_campaigns_team_status_created", "team_id", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    status: Mapped[CampaignStatus] = mapped_column(_status(CampaignStatus, "campaign_status"))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[float] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    submission_id: Mapped[str | None] = mapped_column(String(128), default=None)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    current_round: Mapped[int | None] = mapped_column(Integer, default=None)
    rounds_total: Mapped[int] = mapped_column(Integer)
    best_fid: Mapped[float | None] = mapped_column(Float, default=None)
    # The teacher stage: planned updates (0 when loaded from a checkpoint), done, latest loss,
    # when the teacher was ready (trained or loaded), its FID at the spec's steps.start and the
    # samples its evaluation has drawn for it.
    teacher_updates: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    teacher_updates_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    teacher_loss: Mapped[float | None] = mapped_column(Float, default=None)
    teacher_finished_at: Mapped[datetime | None] = mapped_column(default=None)
    teacher_fid: Mapped[float | None] = mapped_column(Float, default=None)
    teacher_eval_samples_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


# The scheduler's order: highest priority first, then oldest.
Index("ix_campaigns_queue", Campaign.status, Campaign.priority.desc(), Campaign.created_at)


class Round(Base):
    __tablename__ = "rounds"

    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    k: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based
    teacher_steps: Mapped[int] = mapped_column(Integer)
    student_steps: Mapped[int] = mapped_column(Integer)
    updates: Mapped[int] = mapped_column(Integer)
    updates_done: Mapped[int] = mapped_column(Integer, default=0)
    # Samples its evaluation draws (its student's and its DDIM teacher's), and those drawn yet.
    eval_samples: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    eval_samples_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[RoundStatus] = mapped_column(
        _status(RoundStatus, "round_status"), default=RoundStatus.PENDING
    )
    lr: Mapped[float | None] = mapped_column(Float, default=None)
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    fid: Mapped[float | None] = mapped_column(Float, default=None)
    ddim_fid: Mapped[float | None] = mapped_column(Float, default=None)
    wall_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), default=None)


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        ForeignKeyConstraint(
            ["campaign_id", "k"], ["rounds.campaign_id", "rounds.k"], ondelete="CASCADE"
        ),
    )

    campaign_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    k: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    lr: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float, default=None)
    status: Mapped[TrialStatus] = mapped_column(
        _status(TrialStatus, "trial_status"), default=TrialStatus.PENDING
    )


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16), default=None)  # None: created
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))  # "team:NAME", "admin", "driver", ...
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow)
