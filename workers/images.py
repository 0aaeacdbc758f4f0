"""Samples on disk: the raw images as .npz (uint8) and a PNG grid for people."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from workers.checkpoint import write_atomic


def to_uint8(images: Tensor) -> np.ndarray:
    """[B, C, H, W] in [−1, 1] → uint8 [B, H, W, C]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def samples_files(images: Tensor, *, grid_max: int = 64) -> tuple[bytes, bytes]:
    """(npz bytes: array `images`, uint8 [B, H, W, C]; PNG bytes: a grid of the first ones)."""
    arr = to_uint8(images)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=arr)
    return buf.getvalue(), grid_png(arr[:grid_max])


def save_samples(images: Tensor, *, npz_path: Path, png_path: Path, grid_max: int = 64) -> None:
    """Write all samples to `npz_path` and a grid PNG to `png_path`."""
    npz, png = samples_files(images, grid_max=grid_max)
    write_atomic(npz_path, npz)
    write_atomic(png_path, png)


def grid_png(arr: np.ndarray, *, pad: int = 1) -> bytes:
    """uint8 [B, H, W, C] → PNG bytes of a near-square grid."""
    from PIL import Image

    b, h, w, c = arr.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    canvas = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for k in range(b):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        canvas[y : y + h, x : x + w] = arr[k]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, 256 // canvas.shape[0])
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
