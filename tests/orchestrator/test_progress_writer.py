"""The driver's copy of a campaign's progress into the store, one poll at a time, without Ray:
the stage records (local storage) and the losses (MLflow on SQLite) are written here as the
stages write them, and the driver's `ProgressWriter` reads them as it does in a Ray Job."""

import time
from pathlib import Path

import pytest

from orchestrator.campaign import Snapshot, describe
from orchestrator.driver import ProgressWriter
from orchestrator.history import (
    EVAL_SAMPLES,
    TEACHER_LOSS,
    TEACHER_START,
    TRAIN_LOSS,
    TRAIN_START,
)
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec, parse_spec, plan_rounds
from orchestrator.stages import Campaign
from orchestrator.store import CampaignStatus, CampaignView, RoundStatus, Store, TrialStatus

SPEC = {
    "name": "writer",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "teacher": {"train": {"updates": 300}},
    "steps": {"start": 4, "target": 1},
    "distill": {"updates": 40},
}


@pytest.fixture
def settings(tmp_path: Path, cache_dir) -> Settings:
    return Settings(
        storage_uri=str(tmp_path / "storage"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=cache_dir,
    )


def _running(store: Store, spec: CampaignSpec, *, teacher_updates: int) -> CampaignView:
    """The campaign in the store, running under the driver's submission id "j"."""
    team = store.create_team("t", gpu_quota=0)
    made, _ = store.create_campaign(
        team_id=team.id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        gpus=0,
        rounds=[(p.round, p.teacher_steps, p.student_steps, p.updates) for p in plan_rounds(spec)],
        teacher_updates=teacher_updates,
        eval_samples=spec.round_eval_samples,
    )
    store.transition(made.id, CampaignStatus.STARTING, actor="scheduler", submission_id="j")
    store.transition(made.id, CampaignStatus.RUNNING, actor="driver")
    return made


def test_a_poll_reads_each_history_once_and_fills_a_campaign_made_before_0002(
    tmp_path: Path, settings: Settings
) -> None:
    spec = parse_spec(SPEC)
    plan = plan_rounds(spec)
    with Store.from_url(f"sqlite:///{tmp_path / 'store.db'}") as store:
        # No teacher_updates: how migration 0002 left a campaign that was training its teacher.
        made = _running(store, spec, teacher_updates=0)
        c = Campaign(spec, settings)
        tracker = c.tracker()
        tracker.metrics(c.campaign_run(tracker), {TEACHER_LOSS: 0.5}, step=100)
        reads: list[str] = []
        real = tracker.client.get_metric_history

        def counted(run_id: str, key: str):  # the real MLflow call, counted
            reads.append(key)
            return real(run_id, key)

        tracker.client.get_metric_history = counted  # type: ignore[method-assign]
        writer = ProgressWriter(store, made.id, "j", spec)

        snap = Snapshot(c, tracker)
        assert describe(snap) == "teacher: training, update 100/300, loss 0.5"
        writer.poll(snap)
        # The status line and the store's copy share one read of each history.
        assert reads == [TEACHER_LOSS, TEACHER_START]
        got = store.get_campaign(made.id, team_id=None)
        assert got is not None
        assert (got.teacher_updates, got.teacher_updates_done, got.teacher_loss) == (300, 100, 0.5)
        assert got.teacher_finished_at is None
        # Lost; went on from its saved update 50 (no loss logged there): that is its progress
        # until it logs again.
        time.sleep(0.002)
        tracker.metrics(c.campaign_run(tracker), {TEACHER_START: 50}, step=50)
        writer.poll(Snapshot(c, tracker))
        got = store.get_campaign(made.id, team_id=None)
        assert got is not None and (got.teacher_updates_done, got.teacher_loss) == (50, None)

        # The teacher is ready; round 1 trains, started again from the beginning after update
        # 20, then from its saved update 10 (MLflow gives a history in no set order): its
        # progress is that of the attempt running now.
        c.write_record("teacher", {"uri": "unused", "train_seconds": 1.0, "final_loss": 0.25})
        # No LR search in this spec: the round goes straight to training.
        assert describe(Snapshot(c, tracker)) == "round 1/2 (4→2 steps): training, starting"
        c.write_record("round-1-tune", {"lr": 1e-4, "init_checkpoint": None})
        round_run = c.round_run(tracker, plan[0])
        logged = [(TRAIN_START, 0), (TRAIN_LOSS, 10, 0.4), (TRAIN_LOSS, 20, 0.3), (TRAIN_START, 0)]
        logged += [(TRAIN_LOSS, 10, 0.35), (TRAIN_START, 10)]
        for key, step, *value in logged:
            tracker.metrics(round_run, {key: value[0] if value else step}, step=step)
            time.sleep(0.002)  # distinct timestamps (ms)
        reads.clear()
        snap = Snapshot(c, tracker)
        status = describe(snap)
        # Its last attempt went on from update 10 and has logged nothing yet.
        assert status == "round 1/2 (4→2 steps): training, resuming from update 10/40"
        writer.poll(snap)
        # And the teacher's evaluation's progress, from the campaign's run, until its FID is in.
        assert reads == [TRAIN_LOSS, TRAIN_START, EVAL_SAMPLES]
        got = store.get_campaign(made.id, team_id=None)
        assert got is not None and got.teacher_finished_at is not None
        assert (got.teacher_updates_done, got.teacher_loss, got.teacher_fid) == (300, 0.25, None)
        first = store.rounds(made.id)[0]
        assert (first.status, first.updates_done, first.loss) == (RoundStatus.TRAINING, 10, 0.35)
        assert first.mlflow_run_id == round_run
        # Each restart is in the campaign's history, once, however often it is polled and by
        # however many drivers; a driver that is not the campaign's own writes nothing.
        said = [
            "round 1's training started again (restart 1) from the beginning; update 20 had "
            "been logged",
            "round 1's training started again (restart 2) from its saved update 10; update 10 "
            "had been logged",
        ]
        writer.poll(Snapshot(c, tracker))
        ProgressWriter(store, made.id, "j", spec).poll(Snapshot(c, tracker))
        notes = [(e.from_status, e.to_status, e.actor, e.detail) for e in store.audit(made.id)]
        assert notes[-2:] == [("running", "running", "driver", d) for d in said]
        assert all([n[3] for n in notes].count(d) == 1 for d in said)
        assert not store.note(made.id, "x", actor="driver", only_submission="another job")

        # The teacher's evaluation (beside round 1's training) draws its 1000 samples, then
        # gives its FID at its 4 steps.
        tracker.metrics(c.campaign_run(tracker), {EVAL_SAMPLES: 500}, step=500)
        writer.poll(Snapshot(c, tracker))
        got = store.get_campaign(made.id, team_id=None)
        assert got is not None and (got.teacher_fid, got.teacher_eval_samples_done) == (None, 500)
        c.write_record("teacher-eval", {"steps": 4, "fid": 42.5, "samples": 1000})
        writer.poll(Snapshot(c, tracker))
        got = store.get_campaign(made.id, team_id=None)
        assert got is not None and (got.teacher_fid, got.teacher_eval_samples_done) == (42.5, 1000)

        # Round 1 trained; its evaluation drew 500 and 1000 of its 2 × 1000 samples, then (its
        # process lost) started again and drew 500: that attempt's count is its progress.
        record = {"uri": "unused", "final_loss": 0.2, "train_seconds": 1.0, "run_id": round_run}
        c.write_record("round-1-train", record)
        for n in (500, 1000, 500):
            time.sleep(0.002)
            tracker.metrics(round_run, {EVAL_SAMPLES: n}, step=n)
        writer.poll(Snapshot(c, tracker))
        first = store.rounds(made.id)[0]
        assert (first.status, first.updates_done, first.loss) == (RoundStatus.EVALUATING, 40, 0.2)
        assert (first.eval_samples, first.eval_samples_done) == (2000, 500)
        said = "round 1's evaluation started again (restart 1); 1000 samples had been drawn"
        assert [e.detail for e in store.audit(made.id)].count(said) == 1
        c.write_record("round-1-eval", {"steps": 2, "fid": 9.5, "ddim_fid": 20.0})
        writer.poll(Snapshot(c, tracker))
        first = store.rounds(made.id)[0]
        assert (first.status, first.fid, first.eval_samples_done) == (
            RoundStatus.SUCCEEDED,
            9.5,
            2000,
        )


def test_trials_show_while_the_lr_search_runs(tmp_path: Path, settings: Settings) -> None:
    spec = parse_spec({**SPEC, "tune": {"enabled": True, "trials": 4, "trial_updates": 10}})
    plan = plan_rounds(spec)
    with Store.from_url(f"sqlite:///{tmp_path / 'store.db'}") as store:
        made = _running(store, spec, teacher_updates=300)
        c = Campaign(spec, settings)
        tracker = c.tracker()
        c.write_record("teacher", {"uri": "unused", "train_seconds": 1.0, "final_loss": 0.25})
        writer = ProgressWriter(store, made.id, "j", spec)

        # As `search_lr` logs them: trial 0 finished its updates, trial 1 has reported once,
        # trial 2 failed (diverged); round 2's run is another round's (not a trial of round 1).
        round_run = c.round_run(tracker, plan[0])
        runs = {}
        for i, lr in [(0, 1e-4), (1, 2e-4), (2, 3e-4)]:
            runs[i] = tracker.run(
                name=f"trial-{i}",
                key=f"campaign/writer/round-1/trial-{i}",
                parent=round_run,
                kind="trial",
            )
            tracker.params(runs[i], {"lr": lr})
        tracker.metrics(runs[0], {"val/distill_loss": 0.5}, step=5)
        tracker.metrics(runs[0], {"val/distill_loss": 0.25}, step=10)
        tracker.finish(runs[0])
        tracker.metrics(runs[1], {"val/distill_loss": 0.75}, step=5)
        tracker.finish(runs[2], "FAILED")
        c.round_run(tracker, plan[1])

        writer.poll(Snapshot(c, tracker))
        assert store.rounds(made.id)[0].status is RoundStatus.TUNING
        got = [(t.index, t.lr, t.val_loss, t.status) for t in store.trials(made.id, 1)]
        assert got == [
            (0, 1e-4, 0.25, TrialStatus.SUCCEEDED),
            (1, 2e-4, 0.75, TrialStatus.RUNNING),
            (2, 3e-4, None, TrialStatus.FAILED),
        ]

        # The search ends: its record has the final word (ASHA stopped trials 1 and 3 at update
        # 5; trial 2 erred).
        c.write_record(
            "round-1-tune",
            {
                "lr": 1e-4,
                "init_checkpoint": None,
                "trials": [
                    {"trial": 0, "lr": 1e-4, "update": 10, "val_loss": 0.25},
                    {"trial": 1, "lr": 2e-4, "update": 5, "val_loss": 0.75},
                    {
                        "trial": 2,
                        "lr": 3e-4,
                        "update": 0,
                        "val_loss": float("nan"),
                        "error": "RuntimeError: trial-2: loss is nan at update 3; stopped",
                    },
                    {"trial": 3, "lr": 4e-4, "update": 5, "val_loss": 0.9},
                ],
            },
        )
        writer.poll(Snapshot(c, tracker))
        got = [(t.index, t.status) for t in store.trials(made.id, 1)]
        assert got == [
            (0, TrialStatus.SUCCEEDED),
            (1, TrialStatus.STOPPED),
            (2, TrialStatus.FAILED),
            (3, TrialStatus.STOPPED),
        ]
