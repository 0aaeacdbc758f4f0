"""Model outputs (`x`, `v`, `both`) turned into predictions x̂, ε̂, and the weighted losses."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

from workers.schedule import (
    predict_eps_from_v,
    predict_eps_from_x,
    predict_v_from_x_and_eps,
    predict_x_from_eps,
    predict_x_from_v,
)

ModelOutput = Literal["x", "v", "both"]
Weighting = Literal["truncated_snr", "snr_plus_one", "constant"]
MODEL_OUTPUTS: tuple[str, ...] = get_args(ModelOutput)
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)


def output_channels(*, output: ModelOutput, image_channels: int) -> int:
    """`both` has two heads (x̃ and ε̃); `x` and `v` one."""
    if output not in MODEL_OUTPUTS:
        raise ValueError(f"model output {output!r} is not one of {MODEL_OUTPUTS}")
    return 2 * image_channels if output == "both" else image_channels


def predict(
    net: nn.Module, *, z: Tensor, logsnr: Tensor, output: ModelOutput, clip_x: bool = False
) -> tuple[Tensor, Tensor]:
    """Run the network and return (x̂, ε̂), both [B, C, H, W].

    z: [B, C, H, W]; logsnr: [B]. With `clip_x`, x̂ is clipped to [−1, 1] and ε̂ recomputed from
    it (evaluation sampling only; never in training or in the distillation target).
    """
    out = net(z, logsnr)
    if output == "x":
        x_hat = out
        eps_hat = predict_eps_from_x(z=z, x=x_hat, logsnr=logsnr)
    elif output == "v":
        x_hat = predict_x_from_v(z=z, v=out, logsnr=logsnr)
        eps_hat = predict_eps_from_v(z=z, v=out, logsnr=logsnr)
    elif output == "both":
        x_head, eps_head = out.chunk(2, dim=1)
        # dpm.py: x̂ = σ² x̃ + α² · x(ε̃), i.e. trust the x head at low SNR and the ε head at high SNR.
        w_x = torch.sigmoid(-logsnr).reshape(-1, *([1] * (z.dim() - 1))).to(z.dtype)
        x_from_eps = predict_x_from_eps(z=z, eps=eps_head, logsnr=logsnr)
        x_hat = w_x * x_head + (1.0 - w_x) * x_from_eps
        eps_hat = predict_eps_from_x(z=z, x=x_hat, logsnr=logsnr)
    else:
        raise ValueError(f"model output {output!r} is not one of {MODEL_OUTPUTS}")
    if clip_x:
        x_hat = x_hat.clamp(-1.0, 1.0)
        eps_hat = predict_eps_from_x(z=z, x=x_hat, logsnr=logsnr)
    return x_hat, eps_hat


def _mean_flat(t: Tensor) -> Tensor:
    return t.flatten(1).mean(dim=1)


def weighted_loss(
    *,
    x_hat: Tensor,
    eps_hat: Tensor,
    x: Tensor,
    eps: Tensor,
    logsnr: Tensor,
    weighting: Weighting,
) -> Tensor:
    """Per-example loss [B] (dpm.py's `mean_loss_weight_type`).

    truncated_snr = max(‖x − x̂‖², ‖ε − ε̂‖²)  (weight max(SNR, 1) on the x error)
    snr_plus_one  = ‖v − v̂‖²                  (weight SNR + 1 on the x error)
    constant      = ‖x − x̂‖²
    """
    x_mse = _mean_flat((x_hat - x) ** 2)
    if weighting == "constant":
        return x_mse
    eps_mse = _mean_flat((eps_hat - eps) ** 2)
    if weighting == "truncated_snr":
        return torch.maximum(x_mse, eps_mse)
    if weighting == "snr_plus_one":
        v = predict_v_from_x_and_eps(x=x, eps=eps, logsnr=logsnr)
        v_hat = predict_v_from_x_and_eps(x=x_hat, eps=eps_hat, logsnr=logsnr)
        return _mean_flat((v_hat - v) ** 2)
    raise ValueError(f"loss weighting {weighting!r} is not one of {WEIGHTINGS}")
