"""Teacher training: continuous-time diffusion loss, Adam with warm-up, EMA, grad clip."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from workers.config import DiffusionConfig, TeacherTrainConfig
from workers.parameterization import predict, weighted_loss
from workers.schedule import diffuse, logsnr_schedule_cosine
from workers.training import LoopResult, ProgressFn, run_updates, sample_batch


def diffusion_loss(
    net: nn.Module, *, x: Tensor, diffusion: DiffusionConfig, generator: torch.Generator
) -> Tensor:
    """Mean weighted denoising loss at t ~ U(0, 1). x: [B, C, H, W] in [−1, 1]."""
    t = torch.rand(x.shape[0], generator=generator).to(x.device)
    eps = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    logsnr = logsnr_schedule_cosine(t)
    z = diffuse(x=x, eps=eps, logsnr=logsnr)
    x_hat, eps_hat = predict(net, z=z, logsnr=logsnr, output=diffusion.output)
    return weighted_loss(
        x_hat=x_hat, eps_hat=eps_hat, x=x, eps=eps, logsnr=logsnr, weighting=diffusion.weighting
    ).mean()


def train_teacher(
    net: nn.Module,
    *,
    data: Tensor,
    diffusion: DiffusionConfig,
    config: TeacherTrainConfig,
    on_progress: ProgressFn | None = None,
) -> tuple[nn.Module, LoopResult]:
    """Train `net` in place on `data` [N, C, H, W]; return (EMA copy of the weights, result)."""
    gen = torch.Generator().manual_seed(config.seed)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
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
        after_step=lambda: ema.update_parameters(net),
    )
    ema_net: nn.Module = ema.module
    ema_net.eval()
    return ema_net, result
