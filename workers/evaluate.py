"""Evaluation: batched DDIM sampling from fixed noise and FID against reference statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workers.features import FeatureNet
from workers.fid import FeatureStats, compute_stats, fid
from workers.parameterization import ModelOutput
from workers.sampler import ddim_sample


def eval_noise(*, count: int, shape: tuple[int, int, int], seed: int) -> Tensor:
    """The fixed z_1 every evaluation of a campaign starts from: [count, C, H, W]."""
    return torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))


def sample_images(
    net: nn.Module,
    *,
    noise: Tensor,
    num_steps: int,
    output: ModelOutput,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """DDIM samples (x̂ clipped to [−1, 1]) for every row of `noise`, in batches, on the CPU.

    Each batch runs on `net`'s device; `on_batch(n)` hears of each batch's n images once done.
    """
    device = next(net.parameters()).device
    parts = []
    for chunk in noise.split(batch_size):
        x = ddim_sample(net, noise=chunk.to(device), num_steps=num_steps, output=output)
        parts.append(x.cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(parts)


@dataclass(frozen=True)
class Evaluation:
    steps: int
    fid: float
    features: str
    samples: int
    images: Tensor  # [samples, C, H, W] in [−1, 1]


def evaluate(
    net: nn.Module,
    *,
    noise: Tensor,
    num_steps: int,
    output: ModelOutput,
    features: FeatureNet,
    reference: FeatureStats,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Evaluation:
    """FID of `net`'s DDIM samples from `noise`; `on_batch(n)` hears of each batch drawn."""
    images = sample_images(
        net,
        noise=noise,
        num_steps=num_steps,
        output=output,
        batch_size=batch_size,
        on_batch=on_batch,
    )
    stats = compute_stats(features, images, batch_size=batch_size)
    return Evaluation(
        steps=num_steps,
        fid=fid(reference, stats),
        features=features.name,
        samples=images.shape[0],
        images=images,
    )
