"""Deterministic DDIM sampling on the N-step grid t = (i+1)/N → s = i/N of the paper."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workers.parameterization import ModelOutput, predict
from workers.schedule import alpha_sigma, logsnr_schedule_cosine


def step_grid(num_steps: int) -> list[tuple[float, float]]:
    """The (t, s) pairs of an N-step sampler, from t = 1 down to s = 0 (a value, never state)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be ≥ 1, got {num_steps}")
    return [((i + 1) / num_steps, i / num_steps) for i in reversed(range(num_steps))]


def ddim_step(*, z_t: Tensor, x_hat: Tensor, logsnr_t: Tensor, logsnr_s: Tensor) -> Tensor:
    """z_s = α_s x̂ + σ_s (z_t − α_t x̂) / σ_t. z_t, x_hat: [B, C, H, W]; logsnr_*: [B]."""
    shape = (-1, *([1] * (z_t.dim() - 1)))
    alpha_t, sigma_t = (a.reshape(shape).to(z_t.dtype) for a in alpha_sigma(logsnr_t))
    alpha_s, sigma_s = (a.reshape(shape).to(z_t.dtype) for a in alpha_sigma(logsnr_s))
    eps_hat = (z_t - alpha_t * x_hat) / sigma_t
    return alpha_s * x_hat + sigma_s * eps_hat


def _logsnr(t: float, batch: int, like: Tensor) -> Tensor:
    return logsnr_schedule_cosine(torch.full((batch,), t, dtype=torch.float64, device=like.device))


@torch.no_grad()
def ddim_sample(
    net: nn.Module,
    *,
    noise: Tensor,
    num_steps: int,
    output: ModelOutput,
    clip_x: bool = True,
) -> Tensor:
    """Sample from z_1 = `noise` ([B, C, H, W]) in `num_steps` DDIM steps; returns x̂ at t = 0.

    The last step returns x̂ itself. Deterministic: the only randomness is `noise`, so pass noise
    drawn from a seeded `torch.Generator` to reproduce samples.
    """
    was_training = net.training
    net.eval()
    try:
        z = noise
        batch = noise.shape[0]
        x_hat = noise
        for t, s in step_grid(num_steps):
            logsnr_t = _logsnr(t, batch, noise).to(noise.dtype)
            x_hat, _ = predict(net, z=z, logsnr=logsnr_t, output=output, clip_x=clip_x)
            if s == 0.0:
                break
            z = ddim_step(z_t=z, x_hat=x_hat, logsnr_t=logsnr_t, logsnr_s=_logsnr(s, batch, noise))
        return x_hat
    finally:
        net.train(was_training)
