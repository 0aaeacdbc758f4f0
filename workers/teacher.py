"""Teacher training: continuous-time diffusion loss, Adam with warm-up, EMA, grad clip."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from workers.accel import Accel, choose, place, prepare
from workers.config import DiffusionConfig, TeacherTrainConfig
from workers.parameterization import predict, weighted_loss
from workers.schedule import diffuse, logsnr_schedule_cosine
from workers.training import LoopResult, ProgressFn, Updater, run_updates, sample_batch
from workers.unet import UNet


def diffusion_loss(
    net: nn.Module, *, x: Tensor, diffusion: DiffusionConfig, generator: torch.Generator
) -> Tensor:
    """Mean weighted denoising loss at t ~ U(0, 1). x: [B, C, H, W] in [−1, 1].

    `generator` lives on x's device (no host round trip per batch).
    """
    t = torch.rand(x.shape[0], generator=generator, device=x.device)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    logsnr = logsnr_schedule_cosine(t)
    z = diffuse(x=x, eps=eps, logsnr=logsnr)
    x_hat, eps_hat = predict(net, z=z, logsnr=logsnr, output=diffusion.output)
    return weighted_loss(
        x_hat=x_hat, eps_hat=eps_hat, x=x, eps=eps, logsnr=logsnr, weighting=diffusion.weighting
    ).mean()


class EMA:
    """An exponential moving average of a network's parameters, updated without a host sync.

    The first update copies the weights (as `AveragedModel` does); later ones lerp towards them.
    """

    def __init__(self, net: UNet, decay: float) -> None:
        self.module: UNet = copy.deepcopy(net).eval().requires_grad_(False)
        self._src = list(net.parameters())
        self._dst = list(self.module.parameters())
        self._lerp = get_ema_multi_avg_fn(decay)
        self._started = False

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "started": self._started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self._started = bool(state["started"])

    @torch.no_grad()
    def update(self) -> None:
        if self._started:
            self._lerp(self._dst, self._src, None)
        else:
            for dst, src in zip(self._dst, self._src, strict=True):
                dst.copy_(src)
            self._started = True


def train_teacher(
    net: UNet,
    *,
    data: Tensor,
    diffusion: DiffusionConfig,
    config: TeacherTrainConfig,
    on_progress: ProgressFn | None = None,
    accel: Accel | None = None,
    resume: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[UNet, LoopResult]:
    """Train `net` in place on `data` [N, C, H, W]; return (EMA copy of the weights, result).

    `accel` (default: the fast path on a GPU, plain on CPU) says where and how the network runs;
    the EMA copy comes back on that device, placed but not compiled. Every `config.save_every`
    updates `save` gets the whole training state (weights, EMA, optimizer, update count, random
    state; it must copy or serialise it before returning); `resume` with such a state continues
    the run as if it had not stopped (the same weights at the end, on the same device).
    """
    accel = accel if accel is not None else choose()
    place(net, accel)
    if resume is not None:
        net.load_state_dict(resume["net"])
    ema = EMA(net, config.ema_decay)  # copied before compiling: a copy of a compiled net calls it
    prepare(net, accel)
    data = data.to(accel.device)
    gen = torch.Generator(device=accel.device).manual_seed(config.seed)
    if resume is not None:
        ema.load_state_dict(resume["ema"])
        gen.set_state(resume["generator"])
    warmup = max(config.warmup_updates, 1)

    def loss_fn() -> Tensor:
        x = sample_batch(data, batch_size=config.batch_size, generator=gen)
        return diffusion_loss(net, x=x, diffusion=diffusion, generator=gen)

    def checkpoint(updater: Updater) -> None:
        if save is not None:
            state = {"net": net.state_dict(), "ema": ema.state_dict(), "generator": gen.get_state()}
            save({**state, "updater": updater.state_dict()})

    result = run_updates(
        model=net,
        loss_fn=loss_fn,
        updates=config.updates,
        lr=config.lr,
        lr_scale=lambda i: min(1.0, (i + 1) / warmup),
        grad_clip=config.grad_clip,
        log_every=config.log_every,
        what="teacher training",
        on_progress=on_progress,
        after_step=ema.update,
        resume=None if resume is None else resume["updater"],
        on_checkpoint=checkpoint,
        checkpoint_every=config.save_every,
        graph=accel.graphs,
        generators=(gen,),
    )
    return ema.module, result
