"""DDIM with the analytic denoiser of Gaussian data, E[x | z_t] in closed form."""

import pytest
import torch

from workers.sampler import ddim_sample, step_grid
from workers.schedule import alpha_sigma

MU, STD = 0.3, 0.5


class GaussianDenoiser(torch.nn.Module):
    """x ~ N(MU, STD² I): E[x | z_t] = MU + α STD² (z − α MU) / (α² STD² + σ²)."""

    def forward(self, z, logsnr):
        alpha, sigma = (a.reshape(-1, 1, 1, 1) for a in alpha_sigma(logsnr))
        return MU + alpha * STD**2 * (z - alpha * MU) / (alpha**2 * STD**2 + sigma**2)


def test_step_grid_is_the_papers():
    assert step_grid(4) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    assert step_grid(1) == [(1.0, 0.0)]
    with pytest.raises(ValueError, match="num_steps"):
        step_grid(0)


def test_ddim_with_analytic_denoiser_approaches_data_distribution():
    noise = torch.randn(
        5000, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    errors = []
    for n in (1, 4, 16, 128):
        x = ddim_sample(GaussianDenoiser(), noise=noise, num_steps=n, output="x", clip_x=False)
        errors.append(abs(x.mean().item() - MU) + abs(x.std().item() - STD))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.02, errors
    assert errors[0] > 0.3, errors  # one step from pure noise collapses onto the mean


def test_ddim_is_deterministic_and_clips_only_when_asked():
    noise = (
        torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        * 10
    )
    a = ddim_sample(GaussianDenoiser(), noise=noise, num_steps=8, output="x", clip_x=True)
    b = ddim_sample(GaussianDenoiser(), noise=noise, num_steps=8, output="x", clip_x=True)
    assert torch.equal(a, b)
    assert a.abs().max() <= 1.0
    c = ddim_sample(GaussianDenoiser(), noise=noise, num_steps=8, output="x", clip_x=False)
    assert c.abs().max() > 1.0
