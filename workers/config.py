"""Frozen configs that `workers/` receives; the orchestrator resolves them from a campaign spec."""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.parameterization import ModelOutput, Weighting


@dataclass(frozen=True)
class DiffusionConfig:
    output: ModelOutput = "x"
    weighting: Weighting = "truncated_snr"


@dataclass(frozen=True)
class TeacherTrainConfig:
    updates: int
    batch_size: int = 64
    lr: float = 2e-4
    warmup_updates: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50

    @property
    def save_every(self) -> int:
        """Save the training state (to resume from) every 10% of the updates, at a log point."""
        return math.ceil(self.updates / 10 / self.log_every) * self.log_every


@dataclass(frozen=True)
class DistillConfig:
    """One halving round: a student of `student_steps` learns the teacher's 2·student_steps."""

    student_steps: int
    updates: int
    batch_size: int = 64
    lr: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
