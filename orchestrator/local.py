"""`pdistill local-run`: a whole campaign in one process, no Ray — and the bare baseline.

Every finished stage (teacher, each round) leaves its checkpoint and a small JSON record in the
output directory; running the same spec into the same directory again skips finished stages,
so a crash or a failed round loses nothing that was done before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from orchestrator.report import RoundResult, StageRecord, TeacherResult, write_report
from orchestrator.spec import CampaignSpec, SpecError, plan_rounds
from workers.accel import prepare
from workers.checkpoint import (
    load_unet,
    save_checkpoint,
    training_state,
    training_state_bytes,
    write_atomic,
)
from workers.config import DiffusionConfig, DistillConfig
from workers.data import ImageDataset, load_dataset
from workers.distill import distill_round
from workers.evaluate import Evaluation, eval_noise, evaluate
from workers.features import FeatureNet, load_classifier_features, load_inception
from workers.fid import FeatureStats, reference_stats
from workers.images import save_samples
from workers.parameterization import output_channels
from workers.teacher import train_teacher
from workers.training import DivergedError, GraphCaptureError, ProgressFn
from workers.unet import UNet, UNetConfig

TEACHER_STATE = "teacher.training-state.pt"  # in the run's folder while the teacher trains


class RunError(RuntimeError):
    """A campaign stage failed; earlier stages' checkpoints and records are kept."""


class Progress(Protocol):
    def task(self, description: str, total: int) -> ProgressFn: ...
    def count(self, description: str, total: int) -> Callable[[int], None]:
        """A bar of `total` samples; the function hears of each n drawn."""
        ...

    def note(self, text: str) -> None: ...


def unet_config(spec: CampaignSpec, dataset: ImageDataset) -> UNetConfig:
    """The campaign's U-Net for the loaded dataset, after the spec's checks that need the images
    (for an s3:// dataset the spec's check could not make them): the model fits them, and
    'classifier' features have labels. Both runners call it before any stage, so a SpecError
    comes before the teacher trains, not at its evaluation."""
    try:
        spec.evaluation.check_labels(dataset=dataset.uri, labelled=dataset.labels is not None)
    except ValueError as exc:
        raise SpecError(f"evaluation: {exc}") from exc
    try:
        return spec.model.unet(
            dataset=dataset.uri,
            channels=dataset.num_channels,
            side=dataset.image_size,
            out_channels=output_channels(
                output=spec.diffusion.output, image_channels=dataset.num_channels
            ),
        )
    except ValueError as exc:
        raise SpecError(f"model: {exc}") from exc


def feature_net(
    spec: CampaignSpec, dataset: ImageDataset, cache_dir: Path, device: torch.device
) -> FeatureNet:
    """The FID feature network of `spec`, on `device` (the GPU where the networks run)."""
    kind = spec.evaluation.features
    if kind == "classifier":
        return load_classifier_features(
            dataset, cache_dir=cache_dir, seed=spec.seed, device=str(device)
        )
    return load_inception(None if kind == "inception" else kind, device=str(device))


def check_compatible(
    uri: str, config: dict[str, Any], unet: UNetConfig, diffusion: DiffusionConfig, dataset: str
) -> None:
    """A checkpoint must predict the campaign's output for the dataset's image shape."""
    cfg = UNetConfig.from_dict(config["unet"])
    out = config.get("diffusion", {}).get("output")
    if out != diffusion.output:
        raise RunError(
            f"{uri}: checkpoint predicts output {out!r} but diffusion.output is "
            f"{diffusion.output!r}"
        )
    if (cfg.image_size, cfg.in_channels) != (unet.image_size, unet.in_channels):
        raise RunError(
            f"{uri}: checkpoint is for {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} "
            f"images, dataset {dataset} has {unet.in_channels}x{unet.image_size}x{unet.image_size}"
        )


class LocalRun:
    """The stages of one campaign in `out`; each stage is skipped when its record exists."""

    def __init__(self, spec: CampaignSpec, *, out: Path, cache_dir: Path, progress: Progress):
        self.spec, self.out, self.cache_dir, self.progress = spec, out, cache_dir, progress
        self.diffusion = DiffusionConfig(spec.diffusion.output, spec.diffusion.weighting)
        self.accel = spec.resources.accel()
        self._claim_out_dir()
        progress.note(f"loading dataset {spec.dataset}")
        self.dataset = load_dataset(spec.dataset)
        self.unet = unet_config(spec, self.dataset)
        progress.note("feature network and reference statistics")
        self.features = feature_net(spec, self.dataset, cache_dir, self.accel.device)
        self.reference: FeatureStats = reference_stats(
            self.features, self.dataset, cache_dir=cache_dir
        )
        shape = (self.dataset.num_channels, self.dataset.image_size, self.dataset.image_size)
        self.noise = eval_noise(count=spec.evaluation.samples, shape=shape, seed=spec.seed + 1)

    def _claim_out_dir(self) -> None:
        spec_path = self.out / "spec.json"
        text = self.spec.model_dump_json(indent=2)
        if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(text):
            raise RunError(
                f"{self.out} holds a different campaign (see {spec_path}); "
                "resume only with the same spec, or choose another --out"
            )
        write_atomic(spec_path, text.encode())

    # -- helpers ---------------------------------------------------------------------------
    def _config(self, role: str, steps: int, **extra: Any) -> dict[str, Any]:
        return {
            "role": role,
            "steps": steps,
            "unet": self.unet.to_dict() if role == "teacher" else self._student_unet().to_dict(),
            "diffusion": {"output": self.diffusion.output, "weighting": self.diffusion.weighting},
            "campaign": self.spec.name,
            "spec": self.spec.model_dump(mode="json"),
            **extra,
        }

    def _student_unet(self) -> UNetConfig:
        return self.unet.replace(dropout=0.0)

    def _load(self, uri: str) -> UNet:
        net, config = load_unet(uri)
        check_compatible(uri, config, self.unet, self.diffusion, self.spec.dataset)
        return net

    def _evaluate(self, net: UNet, steps: int, name: str) -> Evaluation:
        self.progress.note(f"evaluating {name} at {steps} steps ({len(self.noise)} samples)")
        drawn = self.progress.count(f"{name} at {steps} steps: FID samples", len(self.noise))
        ev = evaluate(
            prepare(net, self.accel),
            noise=self.noise,
            num_steps=steps,
            output=self.diffusion.output,
            features=self.features,
            reference=self.reference,
            batch_size=self.spec.evaluation.batch_size,
            on_batch=drawn,
        )
        save_samples(
            ev.images,
            npz_path=self.out / "samples" / f"{name}-{steps}.npz",
            png_path=self.out / "samples" / f"{name}-{steps}.png",
        )
        return ev

    # -- stages ------------------------------------------------------------------------------
    def teacher(self) -> tuple[UNet, TeacherResult]:
        record = StageRecord(self.out / "teacher.record.json")
        ckpt = self.out / "teacher.safetensors"
        start = self.spec.steps.start
        if (done := record.read()) is not None:
            self.progress.note(f"teacher: done before ({ckpt})")
            return self._load(str(ckpt)), TeacherResult(**done)
        if self.spec.teacher.checkpoint:
            net, seconds, loss = self._load(self.spec.teacher.checkpoint), 0.0, float("nan")
        else:
            t = self.spec.teacher.train
            cfg = t.resolve(seed=self.spec.seed)
            torch.manual_seed(self.spec.seed)
            on_progress = self.progress.task("teacher training", t.updates)
            # Saved every 10% of the updates: a run stopped while the teacher trains goes on
            # from there when started again.
            state = self.out / TEACHER_STATE
            resume = training_state(state.read_bytes()) if state.exists() else None
            if resume is not None:
                self.progress.note(f"teacher: resuming from {state}")
            try:
                net, result = train_teacher(
                    UNet(self.unet),
                    data=self.dataset.images,
                    diffusion=self.diffusion,
                    config=cfg,
                    on_progress=on_progress,
                    accel=self.accel,
                    resume=resume,
                    save=lambda s: write_atomic(state, training_state_bytes(s)),
                )
            except (DivergedError, GraphCaptureError) as exc:
                raise RunError(f"teacher: {exc}") from exc
            seconds, loss = result.seconds, result.final_loss
        save_checkpoint(ckpt, state_dict=net.state_dict(), config=self._config("teacher", start))
        ev = self._evaluate(net, start, "teacher")
        res = TeacherResult(
            steps=start, fid=ev.fid, train_seconds=seconds, final_loss=loss, checkpoint=str(ckpt)
        )
        record.write(res)
        (self.out / TEACHER_STATE).unlink(missing_ok=True)
        return net, res

    def round(self, teacher: UNet, original: UNet, plan: Any) -> tuple[UNet, RoundResult]:
        k, n = plan.round, plan.student_steps
        rdir = self.out / f"round-{k}"
        record = StageRecord(rdir / "record.json")
        ckpt = rdir / "student.safetensors"
        if (done := record.read()) is not None:
            self.progress.note(f"round {k} ({plan.teacher_steps}→{n} steps): done before")
            return self._load(str(ckpt)), RoundResult(**done)
        student = UNet(self._student_unet())
        student.load_state_dict(teacher.state_dict())
        cfg = DistillConfig(
            student_steps=n,
            updates=plan.updates,
            batch_size=self.spec.distill.batch_size,
            lr=self.spec.distill.lr,
            grad_clip=self.spec.distill.grad_clip,
            seed=self.spec.seed + k,
        )
        on_progress = self.progress.task(
            f"round {k}/{len(plan_rounds(self.spec))}: {plan.teacher_steps}→{n} steps", plan.updates
        )
        try:
            result = distill_round(
                teacher,
                student,
                data=self.dataset.images,
                diffusion=self.diffusion,
                config=cfg,
                on_progress=on_progress,
                accel=self.accel,
            )
        except (DivergedError, GraphCaptureError) as exc:
            raise RunError(
                f"round {k} ({plan.teacher_steps}→{n} steps): {exc}; "
                f"earlier rounds are kept in {self.out}"
            ) from exc
        save_checkpoint(
            ckpt, state_dict=student.state_dict(), config=self._config("student", n, round=k)
        )
        pd = self._evaluate(student, n, "distilled")
        ddim = self._evaluate(original, n, "ddim")
        res = RoundResult(
            round=k,
            steps=n,
            fid=pd.fid,
            ddim_fid=ddim.fid,
            train_seconds=result.seconds,
            final_loss=result.final_loss,
            updates=plan.updates,
            checkpoint=str(ckpt),
            losses=result.losses,
        )
        record.write(res)
        return student, res


def run_local(
    spec: CampaignSpec,
    *,
    out: Path,
    cache_dir: Path,
    progress: Progress,
    on_round: Callable[[RoundResult], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the campaign into `out`; returns the report written to out/report.json."""
    run = LocalRun(spec, out=out, cache_dir=cache_dir, progress=progress)
    teacher, teacher_res = run.teacher()
    current, rounds = teacher, []
    for plan in plan_rounds(spec):
        current, res = run.round(current, teacher, plan)
        rounds.append(res)
        if on_round is not None:
            on_round(res)
    return write_report(
        out,
        dataset=spec.dataset,
        features=run.features.name,
        samples=len(run.noise),
        teacher=teacher_res,
        rounds=rounds,
    )
