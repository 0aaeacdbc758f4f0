"""The update loop shared by teacher training and distillation: Adam, LR schedule, grad clip."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ProgressFn = Callable[[int, int, float], None]
"""on_progress(update, total_updates, loss)."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; `update` is the 1-based update where it was seen."""

    def __init__(self, *, what: str, update: int, loss: float) -> None:
        super().__init__(f"{what}: loss is {loss} at update {update}; stopped")
        self.what = what
        self.update = update


@dataclass(frozen=True)
class LoopResult:
    final_loss: float
    seconds: float
    losses: list[tuple[int, float]]


def run_updates(
    *,
    model: nn.Module,
    loss_fn: Callable[[int], Tensor],
    updates: int,
    lr: float,
    lr_scale: Callable[[int], float],
    grad_clip: float,
    log_every: int,
    what: str,
    on_progress: ProgressFn | None = None,
    after_step: Callable[[], None] | None = None,
) -> LoopResult:
    """Run `updates` Adam steps of `loss_fn(update_index)` (a scalar) on `model`.

    A fresh Adam each call (rounds never share optimizer state). `lr_scale(i)` multiplies `lr` at
    update i. Raises DivergedError on a non-finite loss before the step is applied, so the model
    keeps its last finite weights.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_scale)
    model.train()
    losses: list[tuple[int, float]] = []
    window: list[Tensor] = []
    start = time.perf_counter()
    last = float("nan")
    for i in range(updates):
        loss = loss_fn(i)
        if not torch.isfinite(loss):
            raise DivergedError(what=what, update=i + 1, loss=float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        window.append(loss.detach())
        if (i + 1) % log_every == 0 or i + 1 == updates:
            last = float(torch.stack(window).mean())
            window.clear()
            losses.append((i + 1, last))
            if on_progress is not None:
                on_progress(i + 1, updates, last)
    return LoopResult(final_loss=last, seconds=time.perf_counter() - start, losses=losses)


def sample_batch(data: Tensor, *, batch_size: int, generator: torch.Generator) -> Tensor:
    """A uniformly drawn batch (with replacement across batches) of `data` [N, C, H, W]."""
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
    return data[idx]
