import pytest
import torch

from workers.parameterization import predict, weighted_loss
from workers.schedule import (
    alpha_sigma,
    diffuse,
    logsnr_schedule_cosine,
    predict_eps_from_v,
    predict_eps_from_x,
    predict_v_from_x_and_eps,
    predict_x_from_eps,
    predict_x_from_v,
    t_from_logsnr,
)


def _xel(batch=8, logsnr_range=8.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(batch, 1, 4, 4, generator=g, dtype=torch.float64)
    logsnr = (torch.rand(batch, generator=g, dtype=torch.float64) * 2 - 1) * logsnr_range
    return x, eps, logsnr


def test_schedule_end_points_and_monotone():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    lam = logsnr_schedule_cosine(t)
    assert lam[0].item() == pytest.approx(20.0, abs=1e-9)
    assert lam[-1].item() == pytest.approx(-20.0, abs=1e-9)
    assert bool((lam[1:] < lam[:-1]).all())
    assert torch.allclose(t_from_logsnr(lam), t, atol=1e-12)


def test_alpha_sigma_variance_preserving():
    lam = torch.linspace(-20, 20, 41, dtype=torch.float64)
    alpha, sigma = alpha_sigma(lam)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(lam))
    assert torch.allclose(torch.log(alpha**2 / sigma**2), lam)


def test_round_trips_x_eps_v():
    x, eps, lam = _xel()
    z = diffuse(x=x, eps=eps, logsnr=lam)
    assert torch.allclose(predict_eps_from_x(z=z, x=x, logsnr=lam), eps, atol=1e-9)
    assert torch.allclose(predict_x_from_eps(z=z, eps=eps, logsnr=lam), x, atol=1e-9)
    v = predict_v_from_x_and_eps(x=x, eps=eps, logsnr=lam)
    assert torch.allclose(predict_x_from_v(z=z, v=v, logsnr=lam), x, atol=1e-12)
    assert torch.allclose(predict_eps_from_v(z=z, v=v, logsnr=lam), eps, atol=1e-12)


class _Oracle(torch.nn.Module):
    """Outputs the true x / v / (x, ε) for fixed data: tests the output conversions."""

    def __init__(self, x, eps, output):
        super().__init__()
        self.x, self.eps, self.output = x, eps, output

    def forward(self, z, logsnr):
        if self.output == "x":
            return self.x
        if self.output == "v":
            return predict_v_from_x_and_eps(x=self.x, eps=self.eps, logsnr=logsnr)
        return torch.cat([self.x, self.eps], dim=1)


@pytest.mark.parametrize("output", ["x", "v", "both"])
def test_predict_recovers_truth_for_every_output(output):
    x, eps, lam = _xel()
    z = diffuse(x=x, eps=eps, logsnr=lam)
    x_hat, eps_hat = predict(_Oracle(x, eps, output), z=z, logsnr=lam, output=output)
    assert torch.allclose(x_hat, x, atol=1e-9)
    assert torch.allclose(eps_hat, eps, atol=1e-7)


def test_weightings_analytic():
    x, eps, lam = _xel(logsnr_range=5.0)
    z = diffuse(x=x, eps=eps, logsnr=lam)
    x_hat = x + 0.1 * torch.randn_like(x)
    eps_hat = predict_eps_from_x(z=z, x=x_hat, logsnr=lam)
    kw = dict(x_hat=x_hat, eps_hat=eps_hat, x=x, eps=eps, logsnr=lam)
    x_mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    snr = torch.exp(lam)
    assert torch.allclose(weighted_loss(**kw, weighting="constant"), x_mse)
    # ε error = −(α/σ)·x error, so truncated SNR weights the x error by max(SNR, 1) ...
    assert torch.allclose(
        weighted_loss(**kw, weighting="truncated_snr"),
        torch.maximum(snr, torch.ones_like(snr)) * x_mse,
    )
    # ... and SNR+1 (the v loss) by SNR + 1.
    assert torch.allclose(weighted_loss(**kw, weighting="snr_plus_one"), (snr + 1) * x_mse)
    with pytest.raises(ValueError, match="weighting"):
        weighted_loss(**kw, weighting="snr_squared")


def test_predict_rejects_unknown_output():
    x, eps, lam = _xel()
    with pytest.raises(ValueError, match="eps"):
        predict(_Oracle(x, eps, "x"), z=x, logsnr=lam, output="eps")
