"""The stages of a campaign on Ray, each idempotent: a stage whose record exists in storage
returns that record instead of running again. Records are written after their outputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from orchestrator.compile_cache import CompileCache
from orchestrator.history import TEACHER_LOSS, TEACHER_START
from orchestrator.jobs import TEACHER_CHECKPOINT, campaign_prefix
from orchestrator.local import check_compatible, unet_config
from orchestrator.ray_round import RoundJob, student_from_train_checkpoint, train_worker
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec, RoundPlan, plan_rounds
from orchestrator.storage import Storage, StorageError
from orchestrator.tracking import Throttle, Tracker, open_tracker
from workers.accel import Accel
from workers.checkpoint import (
    checkpoint_bytes,
    load_unet,
    training_state,
    training_state_bytes,
)
from workers.config import DiffusionConfig
from workers.data import load_dataset
from workers.teacher import train_teacher
from workers.training import ProgressFn
from workers.unet import UNet


class StageError(RuntimeError):
    """A stage failed for good; the campaign is marked failed with this reason."""


TEACHER_STATE = "teacher-training-state.pt"  # while the teacher trains: where it resumes from


def teacher_logger(tracker: Tracker, run_id: str) -> ProgressFn:
    """An `on_progress` for teacher training that logs its loss to MLflow at most every 2 s
    (a log point on a GPU can come every few milliseconds) and at the end."""
    due = Throttle()

    def log(update: int, total: int, loss: float) -> None:
        if due(last=update == total):
            tracker.metrics(run_id, {TEACHER_LOSS: loss}, step=update)

    return log


class Campaign:
    """A campaign's stages against its storage prefix; plain data, so it pickles to Ray tasks."""

    def __init__(self, spec: CampaignSpec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings
        self.storage = Storage(spec.storage or settings.storage_uri)
        self.prefix = campaign_prefix(spec.name)
        self.plan = plan_rounds(spec)
        self.diffusion = DiffusionConfig(spec.diffusion.output, spec.diffusion.weighting)
        # The teacher's U-Net; its data shape comes from the dataset, read once here.
        self.unet = unet_config(spec, load_dataset(spec.dataset))

    @property
    def threads(self) -> int:
        """Torch threads of a Train worker (and of the teacher stage): one per CPU it holds."""
        return max(1, int(self.spec.resources.cpus_per_worker))

    COMPILE_CACHE = "compile-cache"

    def compile_cache(self, accel: Accel) -> CompileCache:
        """The campaign's shared torch.compile results (used when `accel` compiles)."""
        return CompileCache(self.storage, self.rel(self.COMPILE_CACHE), enabled=accel.compile)

    # -- records -------------------------------------------------------------------------------
    def rel(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def record(self, stage: str) -> dict[str, Any] | None:
        raw = self.storage.read_bytes(self.rel(f"stages/{stage}.json"))
        return None if raw is None else json.loads(raw)

    def write_record(self, stage: str, data: dict[str, Any]) -> dict[str, Any]:
        self.storage.write_bytes(self.rel(f"stages/{stage}.json"), json.dumps(data).encode())
        return data

    def tracker(self) -> Tracker:
        return open_tracker(self.settings.mlflow_tracking_uri, self.storage)

    def campaign_run(self, tracker: Tracker) -> str:
        key = f"campaign/{self.spec.name}"
        found = tracker.find(key)
        run_id = found or tracker.run(name=self.spec.name, key=key, kind="campaign")
        if found is None:  # first time: the resolved spec and its plan, as params and a file
            tracker.params(run_id, {"spec": self.spec.model_dump_json(), "rounds": len(self.plan)})
            tracker.artifact_json(
                run_id,
                "resolved-spec.json",
                {
                    "spec": self.spec.model_dump(mode="json"),
                    "plan": [asdict(p) for p in self.plan],
                    "unet": self.unet.to_dict(),
                },
            )
        return run_id

    def round_run(self, tracker: Tracker, plan: RoundPlan) -> str:
        parent = self.campaign_run(tracker)
        run_id = tracker.run(
            name=f"round-{plan.round}",
            key=f"campaign/{self.spec.name}/round-{plan.round}",
            parent=parent,
            kind="round",
            round=str(plan.round),
        )
        tracker.params(
            run_id,
            {
                "teacher_steps": plan.teacher_steps,
                "student_steps": plan.student_steps,
                "updates": plan.updates,
            },
        )
        return run_id

    # -- teacher ---------------------------------------------------------------------------------
    def teacher(self) -> dict[str, Any]:
        if (done := self.record("teacher")) is not None:
            return done
        dataset = load_dataset(self.spec.dataset)
        unet = self.unet
        net: nn.Module
        if self.spec.teacher.checkpoint:
            net, config = load_unet(self.spec.teacher.checkpoint)
            check_compatible(
                self.spec.teacher.checkpoint, config, unet, self.diffusion, self.spec.dataset
            )
            seconds, loss = 0.0, float("nan")
        else:
            cfg = self.spec.teacher.train.resolve(seed=self.spec.seed)
            tracker = self.tracker()
            torch.manual_seed(self.spec.seed)
            accel = self.spec.resources.accel()
            cache = self.compile_cache(accel)
            cache.load()
            run_id = self.campaign_run(tracker)
            resume = self._teacher_state()
            start = int(resume["updater"]["done"]) if resume is not None else 0
            tracker.metrics(run_id, {TEACHER_START: start}, step=start)  # this attempt's start
            log = teacher_logger(tracker, run_id)

            def on_progress(update: int, total: int, loss: float) -> None:
                cache.save_once()  # at the first log point the graphs are compiled
                log(update, total, loss)

            net, result = train_teacher(
                UNet(unet),
                data=dataset.images,
                diffusion=self.diffusion,
                config=cfg,
                accel=accel,
                on_progress=on_progress,
                resume=resume,
                save=self._save_teacher_state,
            )
            # The time in the update loop, the attempts before a resume included (as local-run).
            config, seconds, loss = {"unet": unet.to_dict()}, result.seconds, result.final_loss
        config = {
            **config,
            "role": "teacher",
            "steps": self.spec.steps.start,
            "diffusion": asdict(self.diffusion),
            "campaign": self.spec.name,
            "spec": self.spec.model_dump(mode="json"),
        }
        uri = self.storage.write_bytes(
            self.rel(TEACHER_CHECKPOINT), checkpoint_bytes(net.state_dict(), config)
        )
        record = self.write_record(
            "teacher",
            {"uri": uri, "train_seconds": seconds, "final_loss": loss},
        )
        self.storage.delete(self.rel(TEACHER_STATE))
        return record

    # Teacher training saves its whole state every 10% of its updates, so a stage that is run
    # again (a killed driver, a lost node) continues from there instead of from update 0.
    def _teacher_state(self) -> dict[str, Any] | None:
        raw = self.storage.read_bytes(self.rel(TEACHER_STATE))
        return None if raw is None else training_state(raw)

    def _save_teacher_state(self, state: dict[str, Any]) -> None:
        self.storage.write_bytes(self.rel(TEACHER_STATE), training_state_bytes(state))

    # -- one round: tune → train → evaluate ------------------------------------------------------
    def job(
        self,
        plan: RoundPlan,
        teacher_uri: str,
        *,
        lr: float,
        name: str,
        stop_at: int,
        init_checkpoint: str | None = None,
    ) -> RoundJob:
        d = self.spec.distill
        return RoundJob(
            name=name,
            dataset=self.spec.dataset,
            teacher_uri=teacher_uri,
            unet=self.unet.replace(dropout=0.0).to_dict(),
            output=self.diffusion.output,
            weighting=self.diffusion.weighting,
            student_steps=plan.student_steps,
            updates=plan.updates,
            stop_at=stop_at,
            batch_size=d.batch_size,
            lr=lr,
            grad_clip=d.grad_clip,
            seed=self.spec.seed + plan.round,
            report_every=min(d.checkpoint_every, stop_at),
            threads=self.threads,
            fast_path=self.spec.resources.fast_path,
            cuda_graphs=self.spec.resources.cuda_graphs,
            init_checkpoint=init_checkpoint,
            storage_uri=self.storage.root_uri,
            compile_cache=self.rel(self.COMPILE_CACHE),
            mlflow_uri=self.settings.mlflow_tracking_uri,
        )

    def tune(self, plan: RoundPlan, teacher_uri: str) -> dict[str, Any]:
        stage = f"round-{plan.round}-tune"
        if (done := self.record(stage)) is not None:
            return done
        if not self.spec.tune.enabled:
            return self.write_record(stage, {"lr": self.spec.distill.lr, "init_checkpoint": None})
        from orchestrator.ray_tune import search_lr

        tracker = self.tracker()
        round_run = self.round_run(tracker, plan)
        result = search_lr(self, plan, teacher_uri, tracker=tracker, round_run=round_run)
        tracker.params(round_run, {"lr": result["lr"]})
        tracker.metrics(
            round_run,
            {
                "time/tune_wall_seconds": result["wall_seconds"],
                "time/tune_gpu_seconds": result["gpu_seconds"],
            },
        )
        return self.write_record(stage, result)

    def train(self, plan: RoundPlan, teacher_uri: str, tuned: dict[str, Any]) -> dict[str, Any]:
        import ray.train

        stage = f"round-{plan.round}-train"
        if (done := self.record(stage)) is not None:
            self.drop_ray_runs(plan)  # a driver stopped between the record and the clean-up
            return done
        tracker = self.tracker()
        round_run = self.round_run(tracker, plan)
        tracker.params(round_run, {"lr": tuned["lr"]})
        job = self.job(
            plan,
            teacher_uri,
            lr=tuned["lr"],
            name=f"{self.spec.name}-round-{plan.round}",
            stop_at=plan.updates,
            init_checkpoint=tuned.get("init_checkpoint"),
        )
        job = RoundJob(**{**asdict(job), "mlflow_run_id": round_run})
        started, started_at = time.perf_counter(), time.time()
        try:
            result = run_train(self, job)
        except ray.train.TrainingFailedError as exc:
            tracker.finish(round_run, "FAILED")
            res = self.spec.resources
            raise StageError(
                f"round {plan.round}: {not_placed(self)}"
                if is_not_placed(exc)
                else f"round {plan.round}: training failed after {res.max_failures} retries "
                f"(resources.max_failures): {exc}"
            ) from exc
        if "failed" in (result.return_value or {}):  # diverged, or a CUDA graph not captured
            tracker.finish(round_run, "FAILED")
            raise StageError(f"round {plan.round}: {result.return_value['failed']}")
        ckpt = result.checkpoint
        state = student_from_train_checkpoint(ckpt.path, ckpt.filesystem)
        config = {
            "role": "student",
            "steps": plan.student_steps,
            "round": plan.round,
            "unet": job.unet,
            "diffusion": asdict(self.diffusion),
            "campaign": self.spec.name,
            "lr": tuned["lr"],
            "spec": self.spec.model_dump(mode="json"),
        }
        uri = self.storage.write_bytes(
            self.rel(f"round-{plan.round}/student.safetensors"), checkpoint_bytes(state, config)
        )
        tracker.tag(round_run, "pdistill.checkpoint", uri)
        metrics = result.metrics or {}
        wall = time.perf_counter() - started
        # The update loop's time across every attempt (the Train checkpoint carries it), so a
        # round resumed by a new driver counts the updates run before the restart too.
        seconds = float(metrics.get("train_seconds", wall))
        res = self.spec.resources
        gpu_seconds = seconds * res.workers * res.gpus_per_worker
        tracker.metrics(
            round_run,
            {
                "time/train_seconds": seconds,
                "time/train_wall_seconds": wall,
                "time/train_gpu_seconds": gpu_seconds,
            },
        )
        record = self.write_record(
            stage,
            {
                "uri": uri,
                # Where the Train run kept its last checkpoint (removed below, with the rest).
                "train_checkpoint": f"s3://{ckpt.path}" if self.storage.is_s3 else ckpt.path,
                "lr": tuned["lr"],
                "train_seconds": seconds,
                "gpu_seconds": gpu_seconds,
                "started_at": started_at,
                "finished_at": time.time(),
                "final_loss": metrics.get("train_loss", math.nan),
                "val_loss": metrics.get("val_loss", math.nan),
                "run_id": round_run,
            },
        )
        self.drop_ray_runs(plan)
        return record

    def drop_ray_runs(self, plan: RoundPlan) -> None:
        """Remove what Ray kept of round `plan` (its Train run's checkpoints, its LR trials'
        runs and its Tune experiment) once its student is stored and recorded: a finished round
        never resumes, and each of those checkpoints is about 3× the student (Adam's moments).
        Storage that fails here fails nothing: a warning, and the next run of the stage tries
        again."""
        run = f"{self.spec.name}-round-{plan.round}"
        try:
            for name in self.storage.list(self.rel("ray"), folders=True):
                if name == run or name.startswith(f"{run}-"):
                    self.storage.delete(self.rel(f"ray/{name}"), tree=True)
        except StorageError as exc:
            warnings.warn(f"round {plan.round}: its Ray runs stay in storage: {exc}", stacklevel=2)


TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"
# How long Ray Train waits for a worker group to be placed before it counts a failure of its
# controller and asks again (Ray 2.60's default: 60 s).
START_ENV, START_S = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60.0


def is_not_placed(exc: BaseException) -> bool:
    """Whether Ray Train gave up because its workers were never placed."""
    import ray.train

    return isinstance(exc, ray.train.ControllerError) and (
        type(exc.controller_failure).__name__ == "WorkerGroupStartupTimeoutError"
    )


def not_placed(campaign: Campaign) -> str:
    """What to tell the user when Ray Train's workers could not be placed (`is_not_placed`)."""
    import ray

    res = campaign.spec.resources
    free, total = ray.available_resources(), ray.cluster_resources()

    def have(key: str) -> str:
        return f"{free.get(key, 0.0):g} of {total.get(key, 0.0):g} {key}s free"

    return (
        f"its {res.workers} Ray Train worker(s) ({res.cpus_per_worker:g} CPU and "
        f"{res.gpus_per_worker:g} GPU each, resources.*) were not placed within "
        f"{campaign.settings.placement_timeout_s:g} s (PDISTILL_PLACEMENT_TIMEOUT_S); the cluster "
        f"has {have('CPU')} and {have('GPU')} now. What is done is kept: resume the campaign "
        "once the cluster has room. Where it has room already, a placement group of a lost "
        "attempt may hold it (`ray list placement-groups`; docs/operators.md)."
    )


@contextlib.contextmanager
def placement_bound(timeout_s: float) -> Iterator[int]:
    """Ray Train's controller retries a worker group that cannot be placed for ever
    (FailureConfig.controller_failure_limit=-1): a round whose workers never fit would wait
    without end. Yields the controller failures to allow so that the waits add up to about
    `timeout_s`; where `timeout_s` is shorter than one wait, the wait is shortened to it while
    the run starts (the controller reads it from the caller's environment)."""
    wait = float(os.environ.get(START_ENV, START_S))
    if timeout_s >= wait:
        yield math.ceil(timeout_s / wait) - 1
        return
    before = os.environ.get(START_ENV)
    os.environ[START_ENV] = f"{timeout_s:g}"
    try:
        yield 0
    finally:
        if before is None:
            os.environ.pop(START_ENV, None)
        else:
            os.environ[START_ENV] = before


def run_train(
    campaign: Campaign,
    job: RoundJob,
    *,
    callbacks: list[Any] | None = None,
    max_failures: int | None = None,
) -> Any:
    """One TorchTrainer.fit() for `job` (resumes from storage if the run was interrupted), with
    `max_failures` worker-group restarts (default: the spec's `resources.max_failures`)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    # Train V2's controller acts on its workers' state (started, reported, finished) only when it
    # polls them: every 2 s by default, so each run waited ~3 s for nothing (BENCHMARKS.md,
    # "Ray Train's start"). The controller reads this from the caller's environment; an
    # operator's own value wins.
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    res = campaign.spec.resources
    storage = campaign.storage
    with placement_bound(campaign.settings.placement_timeout_s) as placement_failures:
        trainer = TorchTrainer(
            train_worker,  # type: ignore[arg-type]  # its return value is Result.return_value
            train_loop_config=asdict(job),
            scaling_config=ray.train.ScalingConfig(
                num_workers=res.workers,
                use_gpu=res.gpus_per_worker > 0,
                resources_per_worker={"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker},
            ),
            run_config=ray.train.RunConfig(
                name=job.name,
                storage_path=storage.path(f"{campaign.prefix}/ray"),
                storage_filesystem=storage.fs,
                failure_config=ray.train.FailureConfig(  # type: ignore[call-arg]  # V2 (mypy: V1)
                    max_failures=res.max_failures if max_failures is None else max_failures,
                    controller_failure_limit=placement_failures,
                ),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                callbacks=callbacks,
            ),
        )
        return trainer.fit()
