"""The campaign driver: the entry point of a campaign's Ray Job,

    python -m orchestrator.driver CAMPAIGN_ID --submission-id SID

It reads the campaign from the store, marks it running, runs it with `run_campaign` (the stage
records in storage make a rerun skip what is finished) and copies progress into the store on
every poll: round status, updates done and loss (MLflow `train/loss` of the round run), the
learning rate and Tune trials, FIDs, wall and GPU seconds. At the end it marks the campaign
succeeded or failed with the reason.

Fencing: every write is conditional on the campaign still being running under this driver's
submission id. When it is not (cancelled, requeued by the reconciler, a newer attempt), the
driver stops quietly and leaves the store to whoever owns the campaign now.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from orchestrator.campaign import Snapshot, run_campaign
from orchestrator.history import (
    EVAL_SAMPLES,
    TEACHER_LOSS,
    TEACHER_START,
    TRAIN_LOSS,
    TRAIN_START,
    at,
    drawn,
    redrawn,
    restarts,
)
from orchestrator.jobs import storage_name
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec, RoundPlan, parse_spec, plan_rounds
from orchestrator.store import CampaignStatus, CampaignView, RoundStatus, Store, TrialStatus
from orchestrator.store.models import utcnow

ACTOR = "driver"
_ACTIVE = {RoundStatus.TUNING, RoundStatus.TRAINING, RoundStatus.EVALUATING}
# A trial's status from its ended MLflow run (any other run status: still running).
_TRIAL_RUN_STATUS = {"FINISHED": TrialStatus.SUCCEEDED, "FAILED": TrialStatus.FAILED}


class FencedError(Exception):
    """The campaign is no longer this driver's to run."""


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _total(*parts: Any) -> float | None:
    present = [float(p) for p in parts if p is not None and math.isfinite(float(p))]
    return sum(present) if present else None


class ProgressWriter:
    """Copies a campaign's progress (stage records, MLflow) into the store; writes only what
    changed, so watchers of the store see one change per real change."""

    def __init__(self, store: Store, campaign_id: str, sid: str, spec: CampaignSpec) -> None:
        self.store, self.campaign_id, self.sid, self.spec = store, campaign_id, sid, spec
        self.plan = plan_rounds(spec)
        self.rounds: dict[int, dict[str, Any]] = {}
        self.trials_done: set[int] = set()
        self.trials: dict[tuple[int, int], dict[str, Any]] = {}  # (round, trial) → last written
        self.campaign: dict[str, Any] = {}
        self.last: Snapshot | None = None
        self.teacher: dict[str, Any] = {}
        self.noted: set[str] | None = None  # the history's details (read once, then kept)

    def check(self) -> CampaignView:
        c = self.store.get_campaign(self.campaign_id, team_id=None)
        if c is None or c.status is not CampaignStatus.RUNNING or c.submission_id != self.sid:
            where = "gone" if c is None else f"{c.status.value} (job {c.submission_id})"
            raise FencedError(f"campaign {self.campaign_id} is {where}; driver {self.sid} stops")
        return c

    def poll(self, snap: Snapshot) -> None:
        """`run_campaign`'s on_poll hook."""
        stored = self.check()
        self.last = snap
        self.teacher = self._teacher(snap, stored)
        ready = snap.record("teacher") is not None
        for p in self.plan:
            done = self.rounds.get(p.round, {}).get("status") is RoundStatus.SUCCEEDED
            if done:
                ready = True
                continue
            tune = snap.record(f"round-{p.round}-tune")
            train = snap.record(f"round-{p.round}-train")
            ev = snap.record(f"round-{p.round}-eval")
            fields = self._round(snap, p, ready, tune, train, ev)
            ready = train is not None
            if fields != self.rounds.get(p.round):
                self.store.update_round(self.campaign_id, p.round, **fields)
                self.rounds[p.round] = fields
            if tune and tune.get("trials") and p.round not in self.trials_done:
                self._trials(p, tune["trials"])
            elif fields["status"] is RoundStatus.TUNING:
                self._live_trials(snap, p)
        self._campaign(snap)

    def _round(
        self,
        snap: Snapshot,
        p: RoundPlan,
        ready: bool,
        tune: dict[str, Any] | None,
        train: dict[str, Any] | None,
        ev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        key = f"campaign/{self.spec.name}/round-{p.round}"
        if ev is not None:
            status = RoundStatus.SUCCEEDED
        elif train is not None:
            status = RoundStatus.EVALUATING
        elif tune is not None or (ready and not self.spec.tune.enabled):
            status = RoundStatus.TRAINING
        elif ready:
            status = RoundStatus.TUNING
        else:
            status = RoundStatus.PENDING
        updates_done, loss, eval_done = 0, None, 0
        if train is not None:
            updates_done, loss = p.updates, _finite(train.get("final_loss"))
            if status is RoundStatus.EVALUATING:
                eval_done = self._eval_progress(snap.history(key, EVAL_SAMPLES), f"round {p.round}")
            else:
                eval_done = self.spec.round_eval_samples
        elif status is RoundStatus.TRAINING:
            # MLflow returns a history in no set order; a restarted round logs its steps again.
            history, starts = snap.history(key, TRAIN_LOSS), snap.history(key, TRAIN_START)
            self._note_restarts(starts, history, f"round {p.round}")
            updates_done, logged = at(history, starts)
            loss = _finite(logged)
        tune, train, ev = tune or {}, train or {}, ev or {}
        return {
            "status": status,
            "updates_done": min(updates_done, p.updates),
            "eval_samples_done": min(eval_done, self.spec.round_eval_samples),
            "loss": loss,
            "lr": _finite(tune.get("lr")),
            "fid": _finite(ev.get("fid")),
            "ddim_fid": _finite(ev.get("ddim_fid")),
            "wall_seconds": _total(
                tune.get("wall_seconds"), train.get("train_seconds"), ev.get("eval_seconds")
            ),
            "gpu_seconds": _total(
                tune.get("gpu_seconds"), train.get("gpu_seconds"), ev.get("gpu_seconds")
            ),
            "mlflow_run_id": train.get("run_id")
            or (snap.tracker.find(key) if status is not RoundStatus.PENDING else None),
        }

    def _trials(self, p: RoundPlan, trials: list[dict[str, Any]]) -> None:
        for t in trials:
            finished = int(t.get("update", 0)) >= self.spec.tune.trial_updates
            status = TrialStatus.SUCCEEDED if finished else TrialStatus.STOPPED
            self.store.upsert_trial(
                self.campaign_id,
                p.round,
                int(t["trial"]),
                lr=float(t["lr"]),
                val_loss=_finite(t.get("val_loss")),
                status=TrialStatus.FAILED if "error" in t else status,
            )
        self.trials_done.add(p.round)

    def _live_trials(self, snap: Snapshot, p: RoundPlan) -> None:
        """While round p searches its LR: each trial that has started, from its MLflow run (its
        LR, its latest held-out loss; succeeded once its run finished). The tune stage's record
        decides the final statuses (ASHA's early stops among them)."""
        prefix = f"campaign/{self.spec.name}/round-{p.round}/trial-"
        for run in snap.tracker.runs_under(prefix):
            lr = run.data.params.get("lr")
            index = run.data.tags["pdistill.key"].removeprefix(prefix)
            if lr is None or not index.isdigit():  # its params are logged just after it starts
                continue
            fields = {
                "lr": float(lr),
                "val_loss": _finite(run.data.metrics.get("val/distill_loss")),
                "status": _TRIAL_RUN_STATUS.get(run.info.status, TrialStatus.RUNNING),
            }
            if self.trials.get((p.round, int(index))) != fields:
                self.store.upsert_trial(self.campaign_id, p.round, int(index), **fields)
                self.trials[p.round, int(index)] = fields

    def _teacher(self, snap: Snapshot, stored: CampaignView) -> dict[str, Any]:
        """The teacher's fields: from its stage record once it is ready (the time it was first
        seen ready is kept across drivers), with its FID once evaluated; else from its loss
        logged in MLflow. The planned updates too: a campaign made before the store had them
        (migration 0002) reads 0."""
        planned = self.spec.teacher.updates
        record = snap.record("teacher")
        if record is not None:
            fid = self.teacher.get("teacher_fid")  # read until found, then kept
            if fid is None:
                fid = _finite((snap.record("teacher-eval") or {}).get("fid"))
            samples = self.spec.evaluation.samples
            if fid is None:  # evaluating (or about to): the samples it has drawn
                history = snap.history(f"campaign/{self.spec.name}", EVAL_SAMPLES)
                samples = min(self._eval_progress(history, "the teacher"), samples)
            return {
                "teacher_updates": planned,
                "teacher_updates_done": planned,
                "teacher_loss": _finite(record.get("final_loss")),
                "teacher_finished_at": stored.teacher_finished_at or utcnow(),
                "teacher_fid": fid,
                "teacher_eval_samples_done": samples,
            }
        fields: dict[str, Any] = {"teacher_updates": planned, "teacher_finished_at": None}
        key = f"campaign/{self.spec.name}"
        history, starts = snap.history(key, TEACHER_LOSS), snap.history(key, TEACHER_START)
        self._note_restarts(starts, history, "the teacher")
        if history or starts:
            done, loss = at(history, starts)
            fields["teacher_updates_done"] = min(done, planned)
            fields["teacher_loss"] = _finite(loss)
        return fields

    def _note_restarts(self, starts: list[Any], history: list[Any], stage: str) -> None:
        """Each time the training of `stage` started again (its process, a Train worker or a
        node lost; the campaign resumed), with where it went on from and how far it had got."""
        for n, (start, before) in enumerate(restarts(starts, history), start=1):
            went_on = f"its saved update {start}" if start else "the beginning"
            got = "nothing" if before is None else f"update {before}"
            self._note(
                f"{stage}'s training started again (restart {n}) from {went_on}; {got} had "
                "been logged"
            )

    def _eval_progress(self, history: list[Any], stage: str) -> int:
        """The samples the evaluation of `stage` has drawn; each time it started again (its
        process or node lost: Ray runs it again from its first sample), noted."""
        for n, before in enumerate(redrawn(history), start=1):
            self._note(
                f"{stage}'s evaluation started again (restart {n}); {before} samples had been drawn"
            )
        return drawn(history)

    def _note(self, detail: str) -> None:
        """`detail` once in the campaign's history, however often it is polled and by however
        many drivers: those that come later read what was noted before them."""
        if self.noted is None:
            self.noted = {e.detail for e in self.store.audit(self.campaign_id) if e.detail}
        if detail not in self.noted:
            self.store.note(self.campaign_id, detail, actor=ACTOR, only_submission=self.sid)
            self.noted.add(detail)

    def _campaign(self, snap: Snapshot) -> None:
        started = [k for k, r in self.rounds.items() if r["status"] is not RoundStatus.PENDING]
        fids = [r["fid"] for r in self.rounds.values() if r["fid"] is not None]
        fields = {
            "current_round": max(started) if started else None,
            "best_fid": min(fids) if fids else None,
            "mlflow_run_id": snap.tracker.find(f"campaign/{self.spec.name}"),
            **self.teacher,
        }
        if fields != self.campaign:
            self.store.update_campaign(self.campaign_id, **fields)
            self.campaign = fields

    def fail_active_rounds(self) -> None:
        for k, r in self.rounds.items():
            if r["status"] in _ACTIVE:
                self.store.update_round(self.campaign_id, k, status=RoundStatus.FAILED)


def _connect_ray(settings: Settings) -> None:
    import ray

    # Inside a Ray Job, RAY_ADDRESS names the cluster the job runs on.
    address = os.environ.get("RAY_ADDRESS") or settings.ray_address or "auto"
    ray.init(address=address)


def drive(store: Store, settings: Settings, campaign_id: str, sid: str) -> int:
    """Run the campaign; 0 when its outcome is recorded (or it is not ours any more)."""
    found = store.get_campaign(campaign_id, team_id=None)
    if found is None:
        print(f"no campaign {campaign_id} in the store", file=sys.stderr)
        return 2
    c, _ = store.transition(
        campaign_id,
        CampaignStatus.RUNNING,
        actor=ACTOR,
        only_from={CampaignStatus.STARTING},
        only_submission=sid,
    )
    if c.status is not CampaignStatus.RUNNING or c.submission_id != sid:
        print(f"campaign {campaign_id} is {c.status.value} under job {c.submission_id}: not ours")
        return 0
    spec = parse_spec({**c.spec, "name": storage_name(c.id, c.name)}, source=campaign_id)
    writer = ProgressWriter(store, campaign_id, sid, spec)

    def finish(status: CampaignStatus, reason: str | None = None) -> None:
        store.transition(
            campaign_id,
            status,
            actor=ACTOR,
            reason=reason,
            only_from={CampaignStatus.RUNNING},
            only_submission=sid,
        )

    try:
        _connect_ray(settings)
        run_campaign(spec, settings, on_status=print, on_poll=writer.poll)
    except FencedError as exc:
        print(exc)
        return 0
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        print(f"campaign {campaign_id} failed: {reason}", file=sys.stderr)
        writer.fail_active_rounds()
        finish(CampaignStatus.FAILED, reason)
        return 0
    if writer.last is not None:  # every record exists now: the rounds' final figures
        writer.poll(Snapshot(writer.last.campaign, writer.last.tracker))
    finish(CampaignStatus.SUCCEEDED)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.driver")
    parser.add_argument("campaign_id")
    parser.add_argument("--submission-id", required=True, help="this Ray Job's submission id")
    args = parser.parse_args(argv)
    settings = Settings()
    with Store.from_url(settings.database_url) as store:
        return drive(store, settings, args.campaign_id, args.submission_id)


if __name__ == "__main__":
    sys.exit(main())
