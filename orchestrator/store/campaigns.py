"""Campaigns: creation (idempotent per team and key), team-scoped reads, the status state
machine with its audit log, and the queue."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import func, or_, select, update
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
    Team,
    utcnow,
)
from orchestrator.store.states import ACTIVE, FINAL, check_transition
from orchestrator.store.views import CampaignView, view

# (k, teacher_steps, student_steps, updates), as planned from the spec.
RoundPlanTuple = tuple[int, int, int, int]
StatusFilter = CampaignStatus | str | Collection[CampaignStatus | str] | None
# Fields that `transition` and `update_campaign` may set besides the status.
CAMPAIGN_FIELDS = frozenset(
    {
        "submission_id",
        "mlflow_run_id",
        "current_round",
        "best_fid",
        "priority",
        "teacher_updates",
        "teacher_updates_done",
        "teacher_loss",
        "teacher_finished_at",
        "teacher_fid",
        "teacher_eval_samples_done",
    }
)
_ROUND_ACTIVE = (RoundStatus.TUNING, RoundStatus.TRAINING, RoundStatus.EVALUATING)


def new_campaign_id() -> str:
    return f"c-{secrets.token_hex(6)}"


class Campaigns(StoreBase):
    def create_campaign(
        self,
        *,
        team_id: int,
        name: str,
        spec: dict[str, Any],
        gpus: float,
        rounds: Iterable[RoundPlanTuple],
        teacher_updates: int = 0,
        eval_samples: int = 0,
        priority: int = 0,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> tuple[CampaignView, bool]:
        """Queue a campaign with its planned rounds. With an `idempotency_key`, a second call for
        the same team returns the first campaign and `created=False` (also when the two calls
        race: the unique (team_id, idempotency_key) constraint decides). `teacher_updates`: the
        teacher's planned training updates, 0 when it is loaded from a checkpoint;
        `eval_samples`: the samples each round's evaluation draws."""
        plans = [tuple(int(x) for x in r) for r in rounds]
        ks = [p[0] for p in plans]
        if len(set(ks)) != len(ks) or any(k < 1 for k in ks):
            raise ValueError(f"round numbers must be distinct and >= 1 (got {ks})")
        if gpus < 0:
            raise ValueError(f"gpus must be >= 0 (got {gpus})")
        try:
            with self._writing() as s:
                team = s.get(Team, team_id)
                if team is None:
                    raise NotFoundError(f"no team with id {team_id}")
                if idempotency_key is not None:
                    existing = self._by_key(s, team_id, idempotency_key)
                    if existing is not None:
                        return existing, False
                now = utcnow()
                campaign = Campaign(
                    id=new_campaign_id(),
                    team_id=team_id,
                    name=name,
                    spec=spec,
                    status=CampaignStatus.QUEUED,
                    priority=priority,
                    gpus=gpus,
                    idempotency_key=idempotency_key,
                    rounds_total=len(plans),
                    teacher_updates=teacher_updates,
                    created_at=now,
                    updated_at=now,
                )
                s.add(campaign)
                s.flush()  # the campaign row first: rounds and the audit row refer to it
                s.add_all(
                    Round(
                        campaign_id=campaign.id,
                        k=k,
                        teacher_steps=t,
                        student_steps=st,
                        updates=u,
                        eval_samples=eval_samples,
                    )
                    for k, t, st, u in plans
                )
                s.add(
                    AuditEvent(
                        campaign_id=campaign.id,
                        from_status=None,
                        to_status=CampaignStatus.QUEUED.value,
                        actor=actor or f"team:{team.name}",
                        at=now,
                    )
                )
                return view(CampaignView, campaign), True
        except IntegrityError:
            # Another request with the same key committed between our check and our insert.
            if idempotency_key is None:
                raise
            with self._reading() as s:
                existing = self._by_key(s, team_id, idempotency_key)
            if existing is None:
                raise
            return existing, False

    @staticmethod
    def _by_key(s: Session, team_id: int, key: str) -> CampaignView | None:
        query = select(Campaign).where(Campaign.team_id == team_id, Campaign.idempotency_key == key)
        row = s.scalars(query).one_or_none()
        return None if row is None else view(CampaignView, row)

    def get_campaign(self, campaign_id: str, *, team_id: int | None) -> CampaignView | None:
        """`team_id=None` is the admin's view (every team); a team sees only its own campaigns,
        and another team's campaign answers None, as if it did not exist."""
        query = select(Campaign).where(Campaign.id == campaign_id)
        if team_id is not None:
            query = query.where(Campaign.team_id == team_id)
        with self._reading() as s:
            row = s.scalars(query).one_or_none()
            return None if row is None else view(CampaignView, row)

    def list_campaigns(
        self,
        *,
        team_id: int | None,
        status: StatusFilter = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[CampaignView], int]:
        """Newest first; `total` counts every match, ignoring limit and offset."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (got {limit})")
        if offset < 0:
            raise ValueError(f"offset must be >= 0 (got {offset})")
        where = []
        if team_id is not None:
            where.append(Campaign.team_id == team_id)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            where.append(Campaign.status.in_([coerce_status(CampaignStatus, w) for w in wanted]))
        query = (
            select(Campaign)
            .where(*where)
            .order_by(Campaign.created_at.desc(), Campaign.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as s:
            total = s.scalar(select(func.count()).select_from(Campaign).where(*where)) or 0
            return [view(CampaignView, c) for c in s.scalars(query)], total

    def transition(
        self,
        campaign_id: str,
        to_status: CampaignStatus | str,
        *,
        actor: str,
        reason: str | None = None,
        only_from: Collection[CampaignStatus] | None = None,
        only_submission: str | None = None,
        **fields: Any,
    ) -> tuple[CampaignView, bool]:
        """Move a campaign to `to_status` if the state machine allows it (else TransitionError),
        setting `reason` (None clears it) and `fields` (see CAMPAIGN_FIELDS), with exactly one
        audit row, in one transaction. Already in `to_status`: nothing changes, no audit row,
        `changed=False`. The row is locked (FOR UPDATE on PostgreSQL, the write lock on SQLite),
        so of two concurrent callers only one makes the change.

        Compare-and-set for callers that decided on an older read (the reconciler, a driver):
        with `only_from`, a campaign no longer in one of those statuses is left alone
        (`changed=False`); with `only_submission`, so is one whose submission_id differs."""
        to = coerce_status(CampaignStatus, to_status)
        check_fields("campaign", fields, CAMPAIGN_FIELDS)
        with self._writing() as s:
            query = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
            campaign = s.scalars(query).one_or_none()
            if campaign is None:
                raise NotFoundError(f"no campaign {campaign_id}")
            before = campaign.status
            stale = (only_from is not None and before not in only_from) or (
                only_submission is not None and campaign.submission_id != only_submission
            )
            if before == to or stale:
                return view(CampaignView, campaign), False
            check_transition(campaign_id, before, to)
            now = utcnow()
            campaign.status, campaign.reason, campaign.updated_at = to, reason, now
            for name, value in fields.items():
                setattr(campaign, name, value)
            if to is CampaignStatus.RUNNING and campaign.started_at is None:
                campaign.started_at = now
            if to in FINAL:
                campaign.finished_at = now
            elif to is CampaignStatus.QUEUED:
                campaign.finished_at = None
            if to is CampaignStatus.CANCELLED:
                # The round that was running stops with its campaign.
                s.execute(
                    update(Round)
                    .where(Round.campaign_id == campaign_id, Round.status.in_(_ROUND_ACTIVE))
                    .values(status=RoundStatus.CANCELLED, finished_at=now)
                )
            s.add(
                AuditEvent(
                    campaign_id=campaign_id,
                    from_status=before.value,
                    to_status=to.value,
                    actor=actor,
                    detail=reason,
                    at=now,
                )
            )
            return view(CampaignView, campaign), True

    def note(self, campaign_id: str, detail: str, *, actor: str, only_submission: str) -> bool:
        """Add to a running campaign's history something that is no status change (a round's
        training that started again): an audit row from and to `running`. Only while the
        campaign runs under `only_submission` (a driver's compare-and-set, as in `transition`);
        True when it wrote."""
        with self._writing() as s:
            query = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
            campaign = s.scalars(query).one_or_none()
            if (
                campaign is None
                or campaign.status is not CampaignStatus.RUNNING
                or campaign.submission_id != only_submission
            ):
                return False
            status = CampaignStatus.RUNNING.value
            s.add(
                AuditEvent(
                    campaign_id=campaign_id,
                    from_status=status,
                    to_status=status,
                    actor=actor,
                    detail=detail,
                    at=utcnow(),
                )
            )
            return True

    def update_campaign(self, campaign_id: str, **fields: Any) -> CampaignView:
        """Progress fields that are no status change (submission_id, current_round, best_fid,
        ...); no audit row."""
        check_fields("campaign", fields, CAMPAIGN_FIELDS)
        with self._writing() as s:
            campaign = s.get(Campaign, campaign_id)
            if campaign is None:
                raise NotFoundError(f"no campaign {campaign_id}")
            for name, value in fields.items():
                setattr(campaign, name, value)
            campaign.updated_at = utcnow()
            return view(CampaignView, campaign)

    def note_waiting(self, campaign_id: str, reason: str | None) -> bool:
        """Say why a queued campaign waits (quota, capacity): sets `reason` only while the
        campaign is still queued and only if it changed (so watchers see no churn); no audit
        row, since the status does not change. True when it wrote."""
        with self._writing() as s:
            result = s.execute(
                update(Campaign)
                .where(
                    Campaign.id == campaign_id,
                    Campaign.status == CampaignStatus.QUEUED,
                    or_(Campaign.reason.is_(None), Campaign.reason != reason)
                    if reason is not None
                    else Campaign.reason.is_not(None),
                )
                .values(reason=reason, updated_at=utcnow())
            )
            return bool(getattr(result, "rowcount", 0))

    def status_counts(self, *, team_id: int | None = None) -> dict[CampaignStatus, int]:
        """Campaigns per status (every status present, zeros included)."""
        query = select(Campaign.status, func.count()).group_by(Campaign.status)
        if team_id is not None:
            query = query.where(Campaign.team_id == team_id)
        counts = dict.fromkeys(CampaignStatus, 0)
        with self._reading() as s:
            for status, n in s.execute(query):
                counts[CampaignStatus(status)] = int(n)
        return counts

    def queue(self, *, limit: int | None = None) -> list[CampaignView]:
        """Queued campaigns in the order they should start: priority high to low, then oldest."""
        query = (
            select(Campaign)
            .where(Campaign.status == CampaignStatus.QUEUED)
            .order_by(Campaign.priority.desc(), Campaign.created_at, Campaign.id)
            .limit(limit)
        )
        with self._reading() as s:
            return [view(CampaignView, c) for c in s.scalars(query)]

    def gpus_in_use(self, team_id: int | None = None) -> float:
        """GPUs held by starting, running and cancelling campaigns (of one team, or all)."""
        query = select(func.coalesce(func.sum(Campaign.gpus), 0.0)).where(
            Campaign.status.in_(ACTIVE)
        )
        if team_id is not None:
            query = query.where(Campaign.team_id == team_id)
        with self._reading() as s:
            return float(s.scalar(query) or 0.0)
