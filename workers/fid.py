"""Fréchet distance between Gaussian fits of feature statistics (FID), and cached statistics."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from workers.data import ImageDataset
from workers.features import FeatureNet

_SQRTM_EPS = 1e-6


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean ``mu`` [D] and covariance ``sigma`` [D, D] (float64) of ``count`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: str

    def __post_init__(self) -> None:
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(
                f"FeatureStats: mu must be [D] and sigma [D, D]; got {self.mu.shape} and "
                f"{self.sigma.shape}"
            )

    def save(self, path: Path) -> None:
        """Write an npz atomically (temporary name in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    mu=self.mu,
                    sigma=self.sigma,
                    count=np.int64(self.count),
                    features=np.str_(self.features),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        with np.load(Path(path), allow_pickle=False) as z:
            missing = {"mu", "sigma", "count", "features"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a FeatureStats file (missing {sorted(missing)})")
            return cls(
                mu=np.asarray(z["mu"], dtype=np.float64),
                sigma=np.asarray(z["sigma"], dtype=np.float64),
                count=int(z["count"]),
                features=str(z["features"]),
            )


def _sqrtm(a: np.ndarray, *, strict: bool = True) -> np.ndarray | None:
    """sqrtm(a), or None when ``strict`` and the root is not finite, clearly complex or inexact.

    Singular products are common (dead ReLU units give zero-variance features); scipy warns
    about them even when the root it returns is exact, so the warning is replaced by a check.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = np.asarray(scipy.linalg.sqrtm(a))
    if not strict:
        return root
    if not np.isfinite(root).all():
        return None
    if np.iscomplexobj(root) and np.abs(np.diagonal(root).imag).max() > 1e-3:
        return None
    scale = max(float(np.linalg.norm(a)), 1e-300)
    if float(np.linalg.norm(root @ root - a)) / scale > 1e-5:
        return None
    return root


def frechet_distance(
    *, mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """‖mu1 − mu2‖² + tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½).

    mu1, mu2: [D]; sigma1, sigma2: [D, D]. When the product is near-singular, sqrtm is retried
    with eps·I added to both covariances; imaginary parts from rounding are dropped. The
    result is clamped at 0 (it can only go below through rounding).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: shapes must be mu [D], sigma [D, D] alike; got mu1 {mu1.shape}, "
            f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if covmean is None:
        offset = np.eye(d) * _SQRTM_EPS
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset), strict=False)
    assert covmean is not None
    tr_covmean = float(np.real(np.trace(covmean)))
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def compute_stats(net: FeatureNet, images: Tensor, *, batch_size: int = 256) -> FeatureStats:
    """Feature mean/covariance of ``images`` [N, C, H, W] in [-1, 1] (N >= 2)."""
    n = int(images.shape[0])
    if images.ndim != 4 or n < 2:
        raise ValueError(
            f"compute_stats: images must be [N, C, H, W] with N >= 2; got {tuple(images.shape)}"
        )
    chunks = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            feats = net(images[i : i + batch_size])
            chunks.append(feats.detach().cpu().double().numpy())
    feats_all = np.concatenate(chunks, axis=0)
    assert feats_all.shape == (n, net.dim), (feats_all.shape, n, net.dim)
    return FeatureStats(
        mu=feats_all.mean(axis=0),
        sigma=np.atleast_2d(np.cov(feats_all, rowvar=False)),
        count=n,
        features=net.name,
    )


def fid(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two statistics computed with the same feature network."""
    if a.features != b.features:
        raise ValueError(
            f"fid: statistics come from different feature networks: {a.features!r} vs "
            f"{b.features!r}"
        )
    return frechet_distance(mu1=a.mu, sigma1=a.sigma, mu2=b.mu, sigma2=b.sigma)


def safe_name(name: str) -> str:
    """A file-name-safe form of a feature network name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def reference_stats(net: FeatureNet, dataset: ImageDataset, *, cache_dir: Path) -> FeatureStats:
    """Statistics of all of ``dataset``'s images, computed once and cached by digest and net."""
    path = Path(cache_dir) / f"ref-{dataset.digest}-{safe_name(net.name)}.npz"
    if path.is_file():
        stats = FeatureStats.load(path)
        if stats.features == net.name and stats.count == len(dataset):
            return stats
    stats = compute_stats(net, dataset.images)
    stats.save(path)
    return stats
