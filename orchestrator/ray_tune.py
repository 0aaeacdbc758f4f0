"""LR search for one round with Ray Tune: a function trainable per trial runs a short TorchTrainer.

Trial i uses the i-th of `trials` log-spaced learning rates (names derive from the index, never
from time) and runs the first `trial_updates` updates of the round's own LR schedule, so the
winner's checkpoint is exactly the start of the full round and continues instead of restarting.
ASHA stops poor trials early on the held-out distillation loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from orchestrator.spec import RoundPlan
from orchestrator.tracking import Tracker

if TYPE_CHECKING:
    from orchestrator.stages import Campaign


def lr_grid(lr_min: float, lr_max: float, trials: int) -> list[float]:
    lo, hi = math.log(lr_min), math.log(lr_max)
    return [math.exp(lo + (hi - lo) * i / (trials - 1)) for i in range(trials)]


def trial_concurrency(campaign: Campaign) -> int:
    """How many trials fit on the cluster's free resources at once (at least one)."""
    import ray

    res = campaign.spec.resources
    free = ray.available_resources()
    fits = free.get("CPU", 0.0) // (res.workers * res.cpus_per_worker)
    if res.gpus_per_worker > 0:
        fits = min(fits, free.get("GPU", 0.0) // (res.workers * res.gpus_per_worker))
    return max(1, int(fits))


def search_lr(
    campaign: Campaign, plan: RoundPlan, teacher_uri: str, *, tracker: Tracker, round_run: str
) -> dict[str, Any]:
    import ray.train
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.stages import is_not_placed, not_placed, run_train

    spec = campaign.spec.tune
    trial_updates = min(spec.trial_updates, plan.updates)
    lrs = lr_grid(spec.lr_min, spec.lr_max, spec.trials)
    base = campaign.job(plan, teacher_uri, lr=lrs[0], name="", stop_at=trial_updates)
    prefix = f"{campaign.spec.name}-round-{plan.round}"

    tracking_uri = tracker.uri

    def trial(config: dict[str, Any]) -> None:
        i = int(config["trial"])
        tracker = Tracker(tracking_uri)  # a client per process: it holds a DB engine
        run_id = tracker.run(
            name=f"trial-{i}",
            key=f"campaign/{campaign.spec.name}/round-{plan.round}/trial-{i}",
            parent=round_run,
            kind="trial",
            round=str(plan.round),
        )
        tracker.params(run_id, {"lr": lrs[i], "trial_updates": trial_updates})
        job = replace(base, name=f"{prefix}-trial-{i}", lr=lrs[i], mlflow_run_id=run_id)
        # No worker-group restarts in a trial: when Tune stops a trial it SIGTERMs the trial actor
        # and its Train controller; a controller that sees its workers go first would start a
        # new worker group, whose placement group nobody frees once the controller is killed
        # (seen in CI: every CPU reserved, the next trial's workers never start).
        try:
            result = run_train(campaign, job, callbacks=[TuneReportCallback()], max_failures=0)
        except ray.train.ControllerError as exc:
            if is_not_placed(exc):  # said in the project's words, not Ray's advice
                raise RuntimeError(not_placed(campaign)) from exc
            raise
        failed = (result.return_value or {}).get("failed")
        tracker.finish(run_id, "FAILED" if failed else "FINISHED")
        if failed:  # diverged, or its update not captured: the trial errs, and says why
            raise RuntimeError(failed)

    reports = max(1, math.ceil(trial_updates / base.report_every))
    tuner = tune.Tuner(
        # The trial only drives its TorchTrainer: it must not hold a CPU share, or workers that
        # ask for whole CPUs no longer fit a small cluster. A head bundle cannot be empty.
        tune.with_resources(trial, tune.PlacementGroupFactory([{"memory": 2**20}])),
        param_space={"trial": tune.grid_search(list(range(spec.trials)))},
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            scheduler=ASHAScheduler(max_t=reports, grace_period=1, reduction_factor=2),
            max_concurrent_trials=trial_concurrency(campaign),
        ),
        run_config=tune.RunConfig(
            name=f"{prefix}-tune",
            storage_path=campaign.storage.path(f"{campaign.prefix}/ray"),
            storage_filesystem=campaign.storage.fs,
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    res = campaign.spec.resources
    trials = [grid[k] for k in range(len(grid))]
    trial_seconds = sum(float((r.metrics or {}).get("time_total_s", 0.0)) for r in trials)
    results: list[dict[str, Any]] = []
    for r in trials:
        if not r.config:
            continue
        metrics = r.metrics or {}
        if r.error is None and "val_loss" not in metrics:
            continue
        row = {
            "trial": int(r.config["trial"]),
            "lr": lrs[int(r.config["trial"])],
            "update": int(metrics.get("update", 0)),
            "val_loss": float(metrics.get("val_loss", math.nan)),
            "checkpoint_path": metrics.get("checkpoint_path"),
        }
        if r.error is not None:  # Ray's wrapper of the exception: its last line is the exception's
            row |= {"error": str(r.error).strip().splitlines()[-1], "checkpoint_path": None}
        results.append(row)
    # Only trials that ran the whole prefix compete: ASHA's early-stopped ones saw fewer updates.
    finished = [r for r in results if r["update"] >= trial_updates and r["checkpoint_path"]]
    if not finished:
        from orchestrator.stages import StageError

        errors = [r["error"] for r in results if "error" in r]
        raise StageError(
            f"round {plan.round}: no LR-search trial finished its {trial_updates} updates "
            f"({len(results) - len(errors)} of {spec.trials} reported; errors: {grid.num_errors}"
            + (f"; the first: {errors[0]}" if errors else "")
            + ")"
        )
    best = min(finished, key=lambda r: r["val_loss"])
    return {
        "lr": best["lr"],
        "init_checkpoint": best["checkpoint_path"],
        "trials": results,
        "job": asdict(replace(base, name=f"{prefix}-trial-{best['trial']}")),
        "wall_seconds": time.perf_counter() - started,
        "gpu_seconds": trial_seconds * res.workers * res.gpus_per_worker,
    }
