"""What the campaign driver writes while a campaign runs (rounds, Tune trials) and what the
dashboard reads back (with the audit log)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.store.base import StoreBase, check_fields, coerce_status
from orchestrator.store.errors import NotFoundError
from orchestrator.store.models import (
    AuditEvent,
    Campaign,
    CampaignStatus,
    Round,
    RoundStatus,
    Trial,
    TrialStatus,
    utcnow,
)
from orchestrator.store.views import AuditView, RoundView, TrialView, view

ROUND_FIELDS = frozenset(
    {
        "status",
        "updates_done",
        "eval_samples_done",
        "lr",
        "loss",
        "fid",
        "ddim_fid",
        "wall_seconds",
        "gpu_seconds",
        "started_at",
        "finished_at",
        "mlflow_run_id",
    }
)
TRIAL_FIELDS = frozenset({"lr", "val_loss", "status"})
_ROUND_ACTIVE = frozenset({RoundStatus.TUNING, RoundStatus.TRAINING, RoundStatus.EVALUATING})
_ROUND_FINAL = frozenset({RoundStatus.SUCCEEDED, RoundStatus.FAILED, RoundStatus.CANCELLED})


class Progress(StoreBase):
    def update_round(self, campaign_id: str, k: int, **fields: Any) -> RoundView:
        """Progress of round k (written by the campaign driver). Entering an active status sets
        `started_at` once; entering a final one sets `finished_at`; unless given explicitly."""
        check_fields("round", fields, ROUND_FIELDS)
        if "status" in fields:
            fields["status"] = coerce_status(RoundStatus, fields["status"])
        with self._writing() as s:
            row = s.get(Round, (campaign_id, k))
            if row is None:
                raise NotFoundError(f"no round {k} in campaign {campaign_id}")
            now = utcnow()
            status = fields.get("status")
            if status in _ROUND_ACTIVE:
                if row.started_at is None:
                    fields.setdefault("started_at", now)
                fields.setdefault("finished_at", None)
            elif status in _ROUND_FINAL:
                fields.setdefault("finished_at", now)
            for name, value in fields.items():
                setattr(row, name, value)
            self._touch(s, campaign_id, now)
            return view(RoundView, row)

    def upsert_trial(self, campaign_id: str, k: int, index: int, **fields: Any) -> TrialView:
        """Create or update Tune trial `index` of round k; creating one needs its `lr`."""
        check_fields("trial", fields, TRIAL_FIELDS)
        if "status" in fields:
            fields["status"] = coerce_status(TrialStatus, fields["status"])
        with self._writing() as s:
            if s.get(Round, (campaign_id, k)) is None:
                raise NotFoundError(f"no round {k} in campaign {campaign_id}")
            row = s.get(Trial, (campaign_id, k, index), with_for_update=True)
            if row is None:
                if fields.get("lr") is None:
                    raise ValueError(f"trial {index} of round {k} is new: give its lr")
                try:
                    with s.begin_nested():
                        row = Trial(campaign_id=campaign_id, k=k, index=index, **fields)
                        s.add(row)
                except IntegrityError:
                    # A concurrent writer created it first (PostgreSQL): update theirs.
                    row = s.get(Trial, (campaign_id, k, index), with_for_update=True)
                    assert row is not None
            for name, value in fields.items():
                setattr(row, name, value)
            self._touch(s, campaign_id, utcnow())
            s.flush()
            return view(TrialView, row)

    @staticmethod
    def _touch(s: Session, campaign_id: str, now: datetime) -> None:
        # Watchers (dashboard, SSE) poll campaigns by updated_at.
        s.execute(update(Campaign).where(Campaign.id == campaign_id).values(updated_at=now))

    def rounds(self, campaign_id: str) -> list[RoundView]:
        query = select(Round).where(Round.campaign_id == campaign_id).order_by(Round.k)
        with self._reading() as s:
            return [view(RoundView, r) for r in s.scalars(query)]

    def rounds_of(self, campaign_ids: Collection[str]) -> dict[str, list[RoundView]]:
        """The rounds of several campaigns in one query (a page of campaigns with progress)."""
        out: dict[str, list[RoundView]] = {cid: [] for cid in campaign_ids}
        if not out:
            return out
        query = (
            select(Round)
            .where(Round.campaign_id.in_(list(out)))
            .order_by(Round.campaign_id, Round.k)
        )
        with self._reading() as s:
            for r in s.scalars(query):
                out[r.campaign_id].append(view(RoundView, r))
        return out

    def trials(self, campaign_id: str, k: int) -> list[TrialView]:
        query = (
            select(Trial)
            .where(Trial.campaign_id == campaign_id, Trial.k == k)
            .order_by(Trial.index)
        )
        with self._reading() as s:
            return [view(TrialView, t) for t in s.scalars(query)]

    def restart_counts(self) -> tuple[int, int]:
        """Over every campaign's history: (the notes of training that started again, the
        campaigns sent back to the queue from starting or running, i.e. by the reconciler: a
        driver lost or never up)."""
        counted = select(func.count()).select_from(AuditEvent)
        notes = counted.where(AuditEvent.from_status == AuditEvent.to_status)
        started = [CampaignStatus.STARTING.value, CampaignStatus.RUNNING.value]
        requeues = counted.where(
            AuditEvent.from_status.in_(started),
            AuditEvent.to_status == CampaignStatus.QUEUED.value,
        )
        with self._reading() as s:
            return s.scalar(notes) or 0, s.scalar(requeues) or 0

    def audit(self, campaign_id: str) -> list[AuditView]:
        query = select(AuditEvent).where(AuditEvent.campaign_id == campaign_id)
        with self._reading() as s:
            return [view(AuditView, a) for a in s.scalars(query.order_by(AuditEvent.id))]
