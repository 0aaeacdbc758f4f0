"""A campaign on Ray: a DAG of chained remote tasks over the idempotent stages of `stages.py`.

    teacher ─▶ eval(teacher)
       └─▶ tune₁ ─▶ train₁ ─▶ eval₁
                      └─▶ tune₂ ─▶ train₂ ─▶ eval₂ … ─▶ report

Plain `ray.remote` tasks chained by ObjectRefs (not `DAGNode.execute()`, deprecated in 2.60, nor
Ray Workflows, removed): Ray only executes; durability is ours — each stage returns its stored
record when it exists, so submitting the same campaign again skips what is finished and a round
that was interrupted resumes from its last Train checkpoint. Evaluation of round k runs beside
round k+1 unless a quality gate makes the next round wait for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.eval_stage import evaluate_stage
from orchestrator.history import TEACHER_LOSS, TEACHER_START, TRAIN_LOSS, TRAIN_START, latest
from orchestrator.report import RoundResult, TeacherResult
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec, RoundPlan
from orchestrator.stages import Campaign, StageError
from orchestrator.tracking import Tracker

if TYPE_CHECKING:
    from mlflow.entities import Metric


def _gate(campaign: Campaign, previous: list[dict[str, Any]]) -> None:
    """Fail when the newest FID grew more than the quality gate allows over the one before."""
    bound = campaign.spec.quality_gate.max_fid_growth
    if bound is None or len(previous) < 2:
        return
    before, last = previous[-2]["fid"], previous[-1]["fid"]
    if last > bound * before:
        raise StageError(
            f"quality gate: FID at {previous[-1]['steps']} steps is {last:.2f}, more than "
            f"quality_gate.max_fid_growth={bound} × {before:.2f} (the model before it)"
        )


def teacher_stage(c: Campaign) -> dict[str, Any]:
    import torch

    torch.set_num_threads(c.threads)  # the task holds one Train worker's CPUs
    return c.teacher()


def teacher_eval_stage(c: Campaign, teacher: dict[str, Any]) -> dict[str, Any]:
    run = c.campaign_run(c.tracker())
    return evaluate_stage(c, c.spec.steps.start, teacher["uri"], "teacher-eval", tracker_run=run)


def round_stage(
    c: Campaign, step: str, plan: RoundPlan, current: dict[str, Any], *deps: Any
) -> dict[str, Any]:
    if step == "tune":
        _gate(c, [d for d in deps if d is not None])
        return c.tune(plan, current["uri"])
    if step == "train":
        return c.train(plan, current["uri"], deps[0])
    assert step == "eval"
    teacher = deps[0]
    return evaluate_stage(
        c,
        plan.student_steps,
        current["uri"],
        f"round-{plan.round}-eval",
        tracker_run=current.get("run_id"),
        teacher_uri=teacher["uri"],
    )


def report_stage(
    c: Campaign, teacher: dict[str, Any], teacher_eval: dict[str, Any], *rounds: Any
) -> dict[str, Any]:
    n = len(c.plan)
    trains, evals = rounds[:n], rounds[n:]
    _gate(c, [teacher_eval, *evals])
    results = [
        RoundResult(
            round=p.round,
            steps=p.student_steps,
            fid=e["fid"],
            ddim_fid=e["ddim_fid"],
            train_seconds=t["train_seconds"],
            final_loss=t["final_loss"],
            updates=p.updates,
            checkpoint=t["uri"],
        )
        for p, t, e in zip(c.plan, trains, evals, strict=True)
    ]
    report = {
        "campaign": c.spec.name,
        "dataset": c.spec.dataset,
        "fid_features": teacher_eval["features"],
        "fid_samples": teacher_eval["samples"],
        "teacher": TeacherResult(
            steps=c.spec.steps.start,
            fid=teacher_eval["fid"],
            train_seconds=teacher["train_seconds"],
            final_loss=teacher["final_loss"],
            checkpoint=teacher["uri"],
        ).__dict__,
        "rounds": [{k: v for k, v in r.__dict__.items() if k != "losses"} for r in results],
        "lr": [t["lr"] for t in trains],
    }
    tracker = c.tracker()
    run = c.campaign_run(tracker)
    last = trains[-1]
    report["model_version"] = tracker.register(
        c.spec.name, source=last["uri"], run_id=last["run_id"]
    )
    tracker.artifact_json(run, "report.json", report)
    for t in trains:
        tracker.finish(t["run_id"])
    tracker.finish(run)
    c.storage.write_bytes(c.rel("report.json"), json.dumps(report, indent=2).encode())
    return report


def submit(c: Campaign, *, eval_gpus: float = 0.0) -> Any:
    """Build the DAG of remote tasks for `c`; returns the ObjectRef of the report."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # A stage whose process or node is lost (a preempted or scaled-down node, an OOM kill) runs
    # again: every stage is idempotent and resumes from what it stored. An error raised inside
    # a stage is not retried (Ray retries exceptions only when asked to).
    stage = ray.remote(max_retries=c.spec.resources.max_failures)
    # The tasks that drive a round's Tune and Train jobs hold no resources (the workers do) and
    # run beside this driver (the head, under the service), never on a worker node that can be
    # scaled down or preempted: a lost node would take a Train worker and the task driving its
    # job at once, a case Ray 2.60 does not clean up after (DESIGN.md).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    control = {"num_cpus": 0, "scheduling_strategy": here}
    compute = {"num_cpus": 1, "num_gpus": eval_gpus}
    # The teacher trains alone, before any round: on one Train worker's CPUs (on CPU clusters
    # the rounds' CPUs would idle meanwhile), and the GPU an evaluation would take.
    teach = {**compute, "num_cpus": c.spec.resources.cpus_per_worker}
    teacher = stage(teacher_stage).options(**teach, name="teacher").remote(c)
    teacher_eval = (
        stage(teacher_eval_stage).options(**compute, name="teacher-eval").remote(c, teacher)
    )
    run_round = stage(round_stage)
    current = teacher
    trains: list[Any] = []
    evals: list[Any] = []
    gated = c.spec.quality_gate.max_fid_growth is not None
    for plan in c.plan:
        gate_deps = ([teacher_eval, *evals][-2:]) if gated else []
        tuned = run_round.options(**control, name=f"round-{plan.round}-tune").remote(
            c, "tune", plan, current, *gate_deps
        )
        trained = run_round.options(**control, name=f"round-{plan.round}-train").remote(
            c, "train", plan, current, tuned
        )
        evaluated = run_round.options(**compute, name=f"round-{plan.round}-eval").remote(
            c, "eval", plan, trained, teacher
        )
        trains.append(trained)
        evals.append(evaluated)
        current = trained
    return (
        stage(report_stage)
        .options(**control, name="report")
        .remote(c, teacher, teacher_eval, *trains, *evals)
    )


class Snapshot:
    """What one poll reads of a campaign: each stage record (storage) and each loss history
    (MLflow) at most once, however many readers ask (the status line, the store's copy)."""

    def __init__(self, campaign: Campaign, tracker: Tracker) -> None:
        self.campaign, self.tracker = campaign, tracker
        self._records: dict[str, dict[str, Any] | None] = {}
        self._histories: dict[tuple[str, str], list[Metric]] = {}

    def record(self, stage: str) -> dict[str, Any] | None:
        if stage not in self._records:
            self._records[stage] = self.campaign.record(stage)
        return self._records[stage]

    def history(self, key: str, metric: str) -> list[Metric]:
        """The metric's history in the run tagged `key` (empty while there is no such run)."""
        if (key, metric) not in self._histories:
            self._histories[key, metric] = self.tracker.history(key, metric)
        return self._histories[key, metric]


def run_campaign(
    spec: CampaignSpec,
    settings: Settings,
    *,
    on_status: Callable[[str], None] | None = None,
    on_poll: Callable[[Snapshot], None] | None = None,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Run (or resume) `spec` on the connected Ray cluster; returns the report.

    Every `poll_s` seconds `on_status` gets a one-line summary when it changed and `on_poll` is
    called with a `Snapshot` of the campaign (its stage records, its losses in MLflow), e.g. to
    copy progress into the control plane's store."""
    import ray

    c = Campaign(spec, settings)
    stored = c.storage.read_bytes(c.rel("spec.json"))
    if stored is not None and json.loads(stored) != spec.model_dump(mode="json"):
        raise StageError(
            f"{c.storage.uri(c.prefix)} holds another campaign named {spec.name!r} with a "
            "different spec; re-run only the same spec, or give the campaign another name"
        )
    c.storage.write_bytes(c.rel("spec.json"), spec.model_dump_json(indent=2).encode())
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    final = submit(c, eval_gpus=gpus)
    last = status = ""
    tracker = c.tracker()
    try:
        while True:
            ready, _ = ray.wait([final], timeout=poll_s)
            snap = Snapshot(c, tracker)
            status = describe(snap)
            if on_poll is not None:
                on_poll(snap)
            if on_status is not None and status != last:
                on_status(status)
                last = status
            if ready:
                report: dict[str, Any] = ray.get(final)
                write_status(c, "succeeded")
                return report
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        reason = str(cause)
        # Ray ran the stage again max_failures times first. (A kill by Ray's memory monitor,
        # OutOfMemoryError, has its own retry count, RAY_task_oom_retries, and says why itself.)
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
        if isinstance(cause, lost):
            n = spec.resources.max_failures
            reason = (
                f"a stage's process or node was lost on each of its {n + 1} attempt(s) "
                f"(1 + resources.max_failures: {n}); the campaign was at '{status}': {cause}"
            )
        write_status(c, "failed", reason=reason)
        raise StageError(f"campaign {spec.name} failed: {reason}") from cause


def write_status(c: Campaign, state: str, *, reason: str | None = None) -> None:
    data = {"state": state, "reason": reason, "time": time.time()}
    c.storage.write_bytes(c.rel("status.json"), json.dumps(data).encode())


def describe(snap: Snapshot) -> str:
    """A one-line progress summary from the stage records in storage and, while the teacher or
    a round trains, its latest logged update and loss in MLflow (with an ETA from their rate)."""
    c = snap.campaign
    if snap.record("teacher") is None:
        if c.spec.teacher.checkpoint:
            return "teacher: loading"
        key = f"campaign/{c.spec.name}"
        line = latest(
            snap.history(key, TEACHER_LOSS),
            c.spec.teacher.updates,
            snap.history(key, TEACHER_START),
        )
        return f"teacher: training, {line}"
    done = [p for p in c.plan if snap.record(f"round-{p.round}-train") is not None]
    if len(done) == len(c.plan):
        return f"all {len(c.plan)} rounds trained; evaluating and reporting"
    p = c.plan[len(done)]
    head = f"round {p.round}/{len(c.plan)} ({p.teacher_steps}→{p.student_steps} steps)"
    if c.spec.tune.enabled and snap.record(f"round-{p.round}-tune") is None:
        return f"{head}: tuning LR"
    key = f"campaign/{c.spec.name}/round-{p.round}"
    line = latest(snap.history(key, TRAIN_LOSS), p.updates, snap.history(key, TRAIN_START))
    return f"{head}: training, {line}"
