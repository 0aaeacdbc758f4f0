"""Teacher training: continuous-time diffusion loss, Adam with warm-up, EMA, grad clip."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from workers.accel import Accel, choose, place, prepare
from workers.config import DiffusionConfig, TeacherTrainConfig
from workers.parameterization import predict, weighted_loss
from workers.schedule import diffuse, logsnr_schedule_cosine
from workers.training import LoopResult, ProgressFn, run_updates, sample_batch
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
) -> tuple[UNet, LoopResult]:
    """Train `net` in place on `data` [N, C, H, W]; return (EMA copy of the weights, result).

    `accel` (default: the fast path on a GPU, plain on CPU) says where and how the network runs;
    the EMA copy comes back on that device, placed but not compiled.
    """
    accel = accel if accel is not None else choose()
    place(net, accel)
    ema = EMA(net, config.ema_decay)  # copied before compiling: a copy of a compiled net calls it
    prepare(net, accel)
    data = data.to(accel.device)
    gen = torch.Generator(device=accel.device).manual_seed(config.seed)
    warmup = max(config.warmup_updates, 1)

    def loss_fn(_: int) -> Tensor:
        x = sample_batch(data, batch_size=config.batch_size, generator=gen)
        return diffusion_loss(net, x=x, diffusion=diffusion, generator=gen)

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
    )
    return ema.module, result
