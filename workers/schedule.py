"""Cosine log-SNR schedule and the conversions among x, ε and v (Salimans & Ho 2022, dpm.py).

Conventions: `t ∈ [0, 1]` with t = 0 clean data and t = 1 pure noise; `logsnr_t = log(α²/σ²)`;
`z_t = α_t x + σ_t ε` with α² = sigmoid(λ), σ² = sigmoid(−λ) (variance preserving).
All tensors broadcast from the left: `logsnr: [B]` against `z: [B, C, H, W]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def logsnr_schedule_cosine(
    t: Tensor, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX
) -> Tensor:
    """λ(t) = −2 log tan(a t + b), so that λ(0) = logsnr_max and λ(1) = logsnr_min.

    t: [B] in [0, 1] → logsnr: [B]
    """
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def t_from_logsnr(
    logsnr: Tensor, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX
) -> Tensor:
    """Inverse of `logsnr_schedule_cosine`: logsnr [B] → t [B]."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return (torch.atan(torch.exp(-0.5 * logsnr)) - b) / a


def _bcast(logsnr: Tensor, like: Tensor) -> Tensor:
    assert logsnr.dim() == 1 and logsnr.shape[0] == like.shape[0], (logsnr.shape, like.shape)
    return logsnr.reshape(-1, *([1] * (like.dim() - 1)))


def alpha_sigma(logsnr: Tensor) -> tuple[Tensor, Tensor]:
    """α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)); logsnr: [B] → ([B], [B])."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def _alpha_sigma_like(logsnr: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    alpha, sigma = alpha_sigma(_bcast(logsnr, like))
    return alpha.to(like.dtype), sigma.to(like.dtype)


def diffuse(*, x: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
    """z_t = α x + σ ε. x, eps: [B, ...]; logsnr: [B]."""
    alpha, sigma = _alpha_sigma_like(logsnr, x)
    return alpha * x + sigma * eps


def predict_x_from_eps(*, z: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
    """x = (z − σ ε) / α."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return (z - sigma * eps) / alpha


def predict_eps_from_x(*, z: Tensor, x: Tensor, logsnr: Tensor) -> Tensor:
    """ε = (z − α x) / σ."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return (z - alpha * x) / sigma


def predict_x_from_v(*, z: Tensor, v: Tensor, logsnr: Tensor) -> Tensor:
    """x = α z − σ v."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return alpha * z - sigma * v


def predict_eps_from_v(*, z: Tensor, v: Tensor, logsnr: Tensor) -> Tensor:
    """ε = σ z + α v."""
    alpha, sigma = _alpha_sigma_like(logsnr, z)
    return sigma * z + alpha * v


def predict_v_from_x_and_eps(*, x: Tensor, eps: Tensor, logsnr: Tensor) -> Tensor:
    """v = α ε − σ x."""
    alpha, sigma = _alpha_sigma_like(logsnr, x)
    return alpha * eps - sigma * x
