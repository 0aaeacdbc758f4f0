"""The update loop shared by teacher training and distillation: Adam, LR schedule, grad clip.

`Updater` owns the optimizer state of one training run and applies one update at a time, so a
driver (a plain loop here, a Ray Train worker in a campaign) decides when to log, checkpoint
and resume; its `state_dict()` holds the optimizer and the update count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

ProgressFn = Callable[[int, int, float], None]
"""on_progress(update, total_updates, loss)."""

GRAPH_WARMUP = 3  # eager updates before a CUDA graph is captured (compilation, cuDNN timing)


class DivergedError(RuntimeError):
    """The loss or its gradient became NaN or infinite; `update` is the 1-based update where it
    was seen."""

    def __init__(self, *, what: str, update: int, loss: float) -> None:
        if math.isfinite(loss):  # the loss was fine, its gradient was not
            super().__init__(
                f"{what}: the gradient is not finite at update {update} (loss {loss:.4g}); stopped"
            )
        else:
            super().__init__(f"{what}: loss is {loss} at update {update}; stopped")
        self.what = what
        self.update = update


class GraphCaptureError(RuntimeError):
    """An update could not be recorded as a CUDA graph (an operation the capture refuses, such
    as a host synchronisation); the campaign spec's `resources.cuda_graphs: false` launches the
    update from the host instead, with the rest of the fast path kept."""

    def __init__(self, *, what: str, cause: BaseException) -> None:
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(
            f"{what}: the update could not be captured as a CUDA graph ({first}); set "
            "resources.cuda_graphs: false in the spec to launch it from the host instead"
        )
        self.what = what


@dataclass(frozen=True)
class LoopResult:
    final_loss: float
    seconds: float
    losses: list[tuple[int, float]]


class Updater:
    """A fresh fused Adam over `model`'s trainable parameters; `lr_scale(i)` multiplies `lr` at i.

    `update(loss_fn)` (or `step(loss)`, given the loss) applies one update and never waits for
    the device (no `.item()`, no `if tensor`): a non-finite loss or gradient norm is noted on
    the device, and that update and every later one are skipped inside the fused optimizer (its
    `found_inf`, the mechanism AMP's grad scaler uses), so the model keeps its last finite
    weights. `divergence()` reads the note (one host sync); callers ask at their log and
    checkpoint points, where they synchronise anyway.

    With `graph` (CUDA only, one process: `Accel.graphs`), `update` runs its first
    `GRAPH_WARMUP` updates eagerly, then captures the whole next one (the loss, the backward,
    the clip, Adam, `after_step`) as one CUDA graph and replays it for every later update: the
    host launches one graph instead of thousands of kernels. Everything that changes between
    updates lives on the device for that: the learning rate (a tensor the schedule fills), the
    update count and the random state (`generators`, advanced by each replay). A capture that
    fails raises `GraphCaptureError`.
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
        graph: bool = False,
        generators: Sequence[torch.Generator] = (),
    ) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device
        if graph and device.type != "cuda":
            raise ValueError(f"graph=True needs the model on a CUDA device, not {device}")
        self.opt = torch.optim.Adam(self.params, lr=lr, fused=True, capturable=graph)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_scale)
        self.grad_clip, self.what, self.after_step = grad_clip, what, after_step
        self.graph, self.generators = graph, tuple(generators)
        self.done = 0  # updates applied so far
        self.seconds = 0.0  # time the loop spent on them, across resumes (the loop keeps it)
        # The device's copy of `done`, and the 1-based update of the first non-finite loss or
        # gradient (0: none yet) with that loss.
        self._count = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_update = torch.zeros((), dtype=torch.int64, device=device)
        self._bad_loss = torch.zeros((), dtype=torch.float32, device=device)
        self._captured: tuple[torch.cuda.CUDAGraph, Tensor] | None = None
        self._warm = 0  # eager updates run by this process (a resumed run compiles again)
        if graph:
            self._lr_on_device()

    def update(self, loss_fn: Callable[[], Tensor]) -> Tensor:
        """One update of the scalar `loss_fn()`; returns that loss, detached (yours to keep)."""
        if not self.graph:
            loss = loss_fn()
            self.step(loss)
            return loss.detach()
        if self._captured is None and self._warm < GRAPH_WARMUP:
            # On a side stream, as a capture needs: lazy set-up must not happen on it.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = loss_fn()
                self.step(loss)
            torch.cuda.current_stream().wait_stream(side)
            self._warm += 1
            return loss.detach()
        if self._captured is None:
            try:
                self._captured = self._capture(loss_fn)
            except RuntimeError as exc:  # torch's capture errors, CUDA's included
                raise GraphCaptureError(what=self.what, cause=exc) from exc
        graph, loss = self._captured
        graph.replay()
        self._advance()
        return loss.clone()

    def step(self, loss: Tensor) -> None:
        """One update of `loss` (already computed), run eagerly."""
        self._apply(loss)
        self._advance()

    def _apply(self, loss: Tensor) -> None:
        """The device's part of an update: only tensor work, so a CUDA graph can hold it."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        loss = loss.detach().float()
        self._count.add_(1)
        first = (self._bad_update == 0) & ~(torch.isfinite(loss) & torch.isfinite(norm))
        self._bad_update.copy_(torch.where(first, self._count, self._bad_update))
        self._bad_loss.copy_(torch.where(first, loss, self._bad_loss))
        # Adam's fused kernel skips the whole update (moments and step count too) when this is 1.
        self.opt.found_inf = (self._bad_update > 0).float()  # type: ignore[attr-defined]
        self.opt.step()
        if self.after_step is not None:
            self.after_step()

    def _advance(self) -> None:
        """The host's part: the schedule sets the next update's learning rate (no sync)."""
        self.sched.step()
        self.done += 1

    def _capture(self, loss_fn: Callable[[], Tensor]) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """Record one whole update as a CUDA graph (recorded, not run: the caller replays it)."""
        graph = torch.cuda.CUDAGraph()
        for gen in self.generators:
            graph.register_generator_state(gen)
        # The gradients are allocated inside the capture, so the graph owns (and reuses) them.
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loss = loss_fn()
            self._apply(loss)
        return graph, loss.detach()

    def _lr_on_device(self) -> None:
        """A CUDA graph reads the learning rate from a device tensor that the schedule fills."""
        device = self.params[0].device
        for group in self.opt.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)

    def divergence(self) -> DivergedError | None:
        """The first non-finite update so far, as an error (None if all were finite)."""
        update = int(self._bad_update)
        if update == 0:
            return None
        return DivergedError(what=self.what, update=update, loss=float(self._bad_loss))

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers where the graph keeps tensors: a state loads with or without a graph."""
        opt = self.opt.state_dict()
        for group in opt["param_groups"]:
            group["lr"] = float(group["lr"])
        sched = self.sched.state_dict()
        if "_last_lr" in sched:
            sched["_last_lr"] = [float(v) for v in sched["_last_lr"]]
        return {"opt": opt, "sched": sched, "done": self.done, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._captured is not None:
            raise RuntimeError("load the state before the first update (the graph holds it)")
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.done = int(state["done"])
        self.seconds = float(state.get("seconds", 0.0))
        self._count.fill_(self.done)
        if self.graph:
            self._lr_on_device()


def run_updates(
    *,
    model: nn.Module,
    loss_fn: Callable[[], Tensor],
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
    graph: bool = False,
    generators: Sequence[torch.Generator] = (),
) -> LoopResult:
    """Run `updates` Adam steps of the scalar `loss_fn()` on `model` (`graph`, `generators`: as
    `Updater` takes them; `loss_fn` draws its randomness from `generators`).

    A non-finite loss raises DivergedError at the next log point (`log_every`), naming the
    update where it appeared; the model keeps the weights from before it. `on_checkpoint`
    gets the Updater at every log point that is a multiple of `checkpoint_every` (but not the
    last: the caller keeps the result), after the divergence check, so a saved state is
    finite; `resume` (an `Updater.state_dict()`) continues from such a state, and the result's
    `seconds` then include the time the run had spent before it was saved.
    """
    updater = Updater(
        model,
        lr=lr,
        lr_scale=lr_scale,
        grad_clip=grad_clip,
        what=what,
        after_step=after_step,
        graph=graph,
        generators=generators,
    )
    if resume is not None:
        updater.load_state_dict(resume)
    model.train()
    losses: list[tuple[int, float]] = []
    window: list[Tensor] = []
    start, before = time.perf_counter(), updater.seconds
    last = float("nan")
    for i in range(updater.done, updates):
        window.append(updater.update(loss_fn))
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
