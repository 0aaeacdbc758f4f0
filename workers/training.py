"""The update loop shared by teacher training and distillation: Adam, LR schedule, grad clip.

`Updater` owns the optimizer state of one training run and applies one update at a time, so a
driver (a plain loop here, a Ray Train worker in a campaign) decides when to log, checkpoint
and resume; its `state_dict()` holds the optimizer and the update count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


class Updater:
    """A fresh fused Adam over `model`'s trainable parameters; `lr_scale(i)` multiplies `lr` at i.

    `step(loss)` never waits for the device (no `.item()`, no `if tensor`): a non-finite loss or
    gradient norm is noted on the device, and that update and every later one are skipped inside
    the fused optimizer (its `found_inf`, the mechanism AMP's grad scaler uses), so the model keeps
    its last finite weights. `divergence()` reads the note (one host sync); callers ask at their
    log and checkpoint points, where they synchronise anyway.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        lr_scale: Callable[[int], float],
        grad_clip: float,
        what: str,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=lr, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_scale)
        self.grad_clip, self.what, self.after_step = grad_clip, what, after_step
        self.done = 0  # updates applied so far
        self.seconds = 0.0  # time the loop spent on them, across resumes (the loop keeps it)
        device = self.params[0].device
        # 1-based update of the first non-finite loss or gradient (0: none yet), and that loss.
        self._bad_update = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_loss = torch.zeros((), dtype=torch.float32, device=device)

    def step(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        loss = loss.detach().float()
        first = (self._bad_update == 0) & ~(torch.isfinite(loss) & torch.isfinite(norm))
        self._bad_update = torch.where(first, self.done + 1, self._bad_update)
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        # Adam's fused kernel skips the whole update (moments and step count too) when this is 1.
        self.opt.found_inf = (self._bad_update > 0).float()  # type: ignore[attr-defined]
        self.opt.step()
        self.sched.step()
        self.done += 1
        if self.after_step is not None:
            self.after_step()

    def divergence(self) -> DivergedError | None:
        """The first non-finite update so far, as an error (None if all were finite)."""
        update = int(self._bad_update)
        if update == 0:
            return None
        return DivergedError(what=self.what, update=update, loss=float(self._bad_loss))

    def state_dict(self) -> dict[str, Any]:
        return {
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "done": self.done,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.done = int(state["done"])
        self.seconds = float(state.get("seconds", 0.0))


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
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[Updater], None] | None = None,
    checkpoint_every: int = 0,
) -> LoopResult:
    """Run `updates` Adam steps of `loss_fn(update_index)` (a scalar) on `model`.

    A non-finite loss raises DivergedError at the next log point (`log_every`), naming the
    update where it appeared; the model keeps the weights from before it. `on_checkpoint`
    gets the Updater at every log point that is a multiple of `checkpoint_every` (but not the
    last: the caller keeps the result), after the divergence check, so a saved state is
    finite; `resume` (an `Updater.state_dict()`) continues from such a state, and the result's
    `seconds` then include the time the run had spent before it was saved.
    """
    updater = Updater(
        model, lr=lr, lr_scale=lr_scale, grad_clip=grad_clip, what=what, after_step=after_step
    )
    if resume is not None:
        updater.load_state_dict(resume)
    model.train()
    losses: list[tuple[int, float]] = []
    window: list[Tensor] = []
    start, before = time.perf_counter(), updater.seconds
    last = float("nan")
    for i in range(updater.done, updates):
        loss = loss_fn(i)
        updater.step(loss)
        window.append(loss.detach())
        if (i + 1) % log_every == 0 or i + 1 == updates:
            if (err := updater.divergence()) is not None:
                raise err
            last = float(torch.stack(window).mean())
            window.clear()
            losses.append((i + 1, last))
            if on_progress is not None:
                on_progress(i + 1, updates, last)
            due = checkpoint_every > 0 and (i + 1) % checkpoint_every == 0
            if on_checkpoint is not None and due and i + 1 < updates:
                updater.seconds = before + time.perf_counter() - start
                on_checkpoint(updater)
    updater.seconds = before + time.perf_counter() - start
    return LoopResult(final_loss=last, seconds=updater.seconds, losses=losses)


def sample_batch(data: Tensor, *, batch_size: int, generator: torch.Generator) -> Tensor:
    """A uniformly drawn batch (with replacement across batches) of `data` [N, C, H, W].

    `generator` lives on `data`'s device, so a batch on a GPU is drawn without the host.
    """
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=generator, device=data.device)
    return data[idx]
