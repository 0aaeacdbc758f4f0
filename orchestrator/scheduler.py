"""The reconciler of the control plane: a loop in the API process (every
settings.reconcile_interval_s) that makes the Ray cluster follow the store.

Each tick it
1. reaps: looks at the Ray Job of every starting/running/cancelling campaign; a cancelling one
   whose job ended becomes cancelled (its job is stopped first); one whose driver died (job
   FAILED/STOPPED, or lost, without a final status in the store) is requeued (finished stages are
   skipped on the rerun), or failed after settings.max_restarts restarts;
2. admits queued campaigns in `Store.queue()` order (priority, then age) while the team's GPU
   quota, the cluster's free CPUs/GPUs and settings.max_running allow; a campaign that does not
   fit says why in its `reason` and does not hold back smaller ones behind it;
3. passes the GPU bundles of waiting campaigns to the Ray autoscaler (`request_resources`),
   and clears the request when none waits.

Admission submits one Ray Job per attempt, `pdistill-<campaign>-a<N>`. The store's
compare-and-set transitions make the loop safe to run in several API replicas: a campaign moves
queued→starting once, and a job id is never reused for another attempt.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime

from orchestrator.jobs import Demand, RayUnavailableError, attempt_of, job_env, submission_id
from orchestrator.ray_link import RayLink
from orchestrator.settings import Settings
from orchestrator.store import (
    ACTIVE,
    CampaignStatus,
    CampaignView,
    RoundStatus,
    Store,
    TeamView,
)

log = logging.getLogger(__name__)
ACTOR = "scheduler"
S = CampaignStatus
_EPS = 1e-9
_ROUND_ACTIVE = {RoundStatus.TUNING, RoundStatus.TRAINING, RoundStatus.EVALUATING}


class ActionError(ValueError):
    """A cancel or resume that the campaign's status does not allow (the message says why)."""


def cancel_campaign(
    store: Store, link: RayLink, campaign: CampaignView, *, actor: str
) -> CampaignView:
    """Queued: cancelled at once. Starting/running: cancelling, and its Ray Job is asked to stop
    (the reconciler finishes the job: cancelled once the job ended). Already cancelling or
    cancelled: unchanged."""
    reason = f"cancelled by {actor}"
    if campaign.status is S.QUEUED:
        c, changed = store.transition(
            campaign.id, S.CANCELLED, actor=actor, reason=reason, only_from={S.QUEUED}
        )
        if changed or c.status is not S.STARTING:
            return c
        campaign = c  # admitted meanwhile: cancel it as a started one
    if campaign.status in (S.STARTING, S.RUNNING):
        c, _ = store.transition(
            campaign.id,
            S.CANCELLING,
            actor=actor,
            reason=reason,
            only_from={S.STARTING, S.RUNNING},
        )
        if c.status is S.CANCELLING and c.submission_id:
            try:
                link.jobs.stop(c.submission_id)
            except RayUnavailableError as exc:  # the reconciler stops it once Ray answers
                log.warning("cancel %s: %s", c.id, exc)
        return c
    if campaign.status in (S.CANCELLING, S.CANCELLED):
        return campaign
    raise ActionError(
        f"campaign {campaign.id} is {campaign.status.value}: only queued, starting or running "
        "campaigns can be cancelled"
    )


def resume_campaign(store: Store, campaign: CampaignView, *, actor: str) -> CampaignView:
    """Failed or cancelled: queued again (its finished rounds are skipped when it runs)."""
    resumable = {S.FAILED, S.CANCELLED}
    if campaign.status in resumable:
        c, changed = store.transition(
            campaign.id, S.QUEUED, actor=actor, reason=None, only_from=resumable
        )
        if changed:
            return c
        campaign = c
    raise ActionError(
        f"campaign {campaign.id} is {campaign.status.value}: only failed or cancelled campaigns "
        "can be resumed"
    )


@dataclasses.dataclass
class Capacity:
    """What one tick may still admit: the cluster's CPUs and GPUs less what the active campaigns
    hold, each team's GPU quota less its active campaigns' GPUs, and settings.max_running."""

    cpus_free: float
    gpus_free: float
    running: int
    max_running: int | None
    teams: dict[int, TeamView]
    team_gpus: dict[int, float]

    @classmethod
    def of(
        cls,
        *,
        cpus_total: float,
        gpus_total: float,
        active: list[CampaignView],
        teams: list[TeamView],
        max_running: int | None,
    ) -> Capacity:
        room = cls(cpus_total, gpus_total, 0, max_running, {t.id: t for t in teams}, {})
        for c in active:
            room.take(c)
        return room

    def take(self, c: CampaignView) -> None:
        self.cpus_free -= Demand.of(c.spec).cpus
        self.gpus_free -= c.gpus
        self.running += 1
        self.team_gpus[c.team_id] = self.team_gpus.get(c.team_id, 0.0) + c.gpus

    def why_not(self, c: CampaignView) -> str | None:
        """None when `c` may start now, else why it waits (shown as the campaign's reason)."""
        cap = self.max_running
        if cap is not None and self.running >= cap:
            return f"waiting: {self.running} campaigns are running (max_running={cap})"
        team = self.teams.get(c.team_id)
        quota = team.gpu_quota if team is not None else 0.0
        used = self.team_gpus.get(c.team_id, 0.0)
        if c.gpus > 0 and used + c.gpus > quota + _EPS:
            name = team.name if team is not None else c.team_id
            return (
                f"waiting for the GPU quota of team {name}: {used:g} of {quota:g} GPUs in use, "
                f"this campaign needs {c.gpus:g}"
            )
        cpus = Demand.of(c.spec).cpus
        if cpus > self.cpus_free + _EPS or c.gpus > self.gpus_free + _EPS:
            return (
                f"waiting for cluster capacity: needs {cpus:g} CPUs and {c.gpus:g} GPUs, "
                f"{max(self.cpus_free, 0):g} CPUs and {max(self.gpus_free, 0):g} GPUs are free"
            )
        return None


class Reconciler:
    def __init__(self, store: Store, settings: Settings, link: RayLink) -> None:
        self.store, self.settings, self.link = store, settings, link
        self._requested: list[dict[str, float]] | None = None
        self._requested_at = 0.0  # time.monotonic() of the last request sent
        self.last_error: str | None = None
        self.ticks = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # keep reconciling: a bad tick must not end the loop
                log.exception("reconciler tick failed")
            stop.wait(self.settings.reconcile_interval_s)

    def tick(self) -> None:
        if not self.link.connect():
            self.last_error = self.link.error
            return
        try:
            self.reap()
            waiting = self.admit()
            self.ask_autoscaler(waiting)
            self.last_error = None
        except RayUnavailableError as exc:
            # Ray is away: change nothing (a lost answer is not a dead driver).
            self.last_error = str(exc)
            log.warning("reconciler: %s", exc)
        self.ticks += 1

    # -- 1. reap -------------------------------------------------------------------------------
    def _active(self) -> list[CampaignView]:
        return self.store.list_campaigns(team_id=None, status=list(ACTIVE), limit=None)[0]

    def reap(self) -> None:
        for c in self._active():
            self._reap(c)

    def _reap(self, c: CampaignView) -> None:
        jobs = self.link.jobs
        sid = c.submission_id
        state = jobs.status(sid) if sid else None
        job, message = state if state is not None else (None, "")
        if c.status is S.CANCELLING:
            if sid and job in ("PENDING", "RUNNING"):
                jobs.stop(sid)
                return
            self.store.transition(
                c.id, S.CANCELLED, actor=ACTOR, reason=c.reason, only_from={S.CANCELLING}
            )
            return
        if job in ("PENDING", "RUNNING"):
            return
        age = (datetime.now(UTC) - c.updated_at).total_seconds()
        if job is None and c.status is S.STARTING and age < self.settings.start_timeout_s:
            if sid:  # not submitted yet, or the submission was lost: this attempt, again
                jobs.submit(sid, campaign_id=c.id, env=job_env(self.settings))
            return
        if job is None:
            why = f"its Ray job {sid} is gone (the Ray head restarted?)"
        elif job == "SUCCEEDED":
            why = f"its Ray job {sid} ended without reporting a final status"
        else:
            why = f"its Ray job {sid} is {job}: {message.strip()[-500:]}"
        self.restart(c, why)

    def _restarts(self, campaign_id: str) -> int:
        """Requeues by the reconciler since the campaign was last queued by a person."""
        n = 0
        for event in self.store.audit(campaign_id):
            if event.to_status == S.QUEUED.value:
                n = n + 1 if event.actor == ACTOR else 0
        return n

    def restart(self, c: CampaignView, why: str) -> None:
        """A campaign whose driver died: queued again, or failed after max_restarts."""
        n = self._restarts(c.id)
        if n >= self.settings.max_restarts:
            to = S.FAILED
            reason = (
                f"{why}; gave up after {n} restarts (max_restarts={self.settings.max_restarts})"
            )
        else:
            to, reason = S.QUEUED, f"restarting: {why}"
            log.warning("requeueing %s: %s", c.id, why)
        _, changed = self.store.transition(
            c.id,
            to,
            actor=ACTOR,
            reason=reason,
            only_from={c.status},
            only_submission=c.submission_id,
        )
        if changed and to is S.FAILED:
            for r in self.store.rounds(c.id):
                if r.status in _ROUND_ACTIVE:
                    self.store.update_round(c.id, r.k, status=RoundStatus.FAILED)

    # -- 2. admit ------------------------------------------------------------------------------
    def admit(self) -> list[CampaignView]:
        """Start what fits; returns the campaigns still waiting."""
        queue = self.store.queue()
        if not queue:
            return []
        cpus_total, gpus_total = self.link.totals()
        room = Capacity.of(
            cpus_total=cpus_total,
            gpus_total=gpus_total,
            active=self._active(),
            teams=self.store.list_teams(),
            max_running=self.settings.max_running,
        )
        waiting: list[CampaignView] = []
        for c in queue:
            why = room.why_not(c)
            if why is None:
                if self._start(c):
                    room.take(c)
                continue  # started here, or moved by another replica
            self.store.note_waiting(c.id, why)
            waiting.append(c)
        return waiting

    def _start(self, c: CampaignView) -> bool:
        sid = submission_id(c.id, attempt_of(c.submission_id) + 1)
        _, changed = self.store.transition(
            c.id,
            S.STARTING,
            actor=ACTOR,
            only_from={S.QUEUED},
            only_submission=c.submission_id,
            submission_id=sid,
        )
        if not changed:
            return False
        try:
            self.link.jobs.submit(sid, campaign_id=c.id, env=job_env(self.settings))
        except RayUnavailableError as exc:  # reap submits this attempt again
            log.warning("submitting %s: %s", sid, exc)
        return True

    # -- 3. autoscaler -------------------------------------------------------------------------
    def ask_autoscaler(self, waiting: list[CampaignView]) -> None:
        """While GPU campaigns wait, request the bundles of every GPU campaign (running ones
        included: the request is for the cluster's total shape, not an increment). Sent when it
        changes, and a standing request again every `autoscaler_refresh_s`: Ray keeps only the
        last request made on the cluster (last writer wins), and Ray Train's coordinator makes
        its own."""
        bundles: list[dict[str, float]] = []
        if any(c.gpus > 0 for c in waiting):
            for c in [*self._active(), *waiting]:
                if c.gpus > 0:
                    for bundle in Demand.of(c.spec).bundles:
                        bundles.append({k: v for k, v in bundle if v > 0})
        stale = time.monotonic() - self._requested_at >= self.settings.autoscaler_refresh_s
        if bundles != self._requested or (bundles and stale):
            self.link.request_resources(bundles)
            self._requested, self._requested_at = bundles, time.monotonic()

    @property
    def requested(self) -> list[dict[str, float]]:
        return list(self._requested or [])
