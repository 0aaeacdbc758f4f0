from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from workers.data import DatasetError, ImageDataset, load_dataset, split_dataset
from workers.features import ClassifierFeatures, load_classifier_features, load_inception
from workers.fid import FeatureStats, compute_stats, fid, frechet_distance, reference_stats

# --- frechet_distance: analytic cases ---------------------------------------------------------


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, 2 * d))
    return np.asarray(a @ a.T / (2 * d))


def test_identical_stats_give_zero() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_cov(rng, 16)
    assert frechet_distance(mu1=mu, sigma1=sigma, mu2=mu, sigma2=sigma) == pytest.approx(
        0.0, abs=1e-8
    )


def test_diagonal_gaussians_closed_form() -> None:
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = frechet_distance(mu1=m1, sigma1=np.diag(s1), mu2=m2, sigma2=np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_symmetric_and_non_negative_for_singular_covariances() -> None:
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    # Rank-deficient covariances (fewer samples than dimensions), as with small sample counts.
    s1 = np.cov(rng.normal(size=(5, 12)), rowvar=False)
    s2 = np.cov(rng.normal(size=(5, 12)), rowvar=False)
    ab = frechet_distance(mu1=mu1, sigma1=s1, mu2=mu2, sigma2=s2)
    ba = frechet_distance(mu1=mu2, sigma1=s2, mu2=mu1, sigma2=s1)
    assert ab == pytest.approx(ba, rel=1e-6) and ab > 0
    assert frechet_distance(mu1=mu1, sigma1=s1, mu2=mu1, sigma2=s1) >= 0.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1=np.zeros(3), sigma1=np.eye(3), mu2=np.zeros(4), sigma2=np.eye(4))


def test_feature_stats_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stats = FeatureStats(
        mu=rng.normal(size=5), sigma=_random_cov(rng, 5), count=42, features="classifier-abc"
    )
    path = tmp_path / "sub" / "stats.npz"
    stats.save(path)
    back = FeatureStats.load(path)
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma)
    assert (back.count, back.features) == (42, "classifier-abc")
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]  # no temporary left over


def test_fid_refuses_different_features() -> None:
    a = FeatureStats(mu=np.zeros(2), sigma=np.eye(2), count=2, features="net-a")
    b = FeatureStats(mu=np.zeros(2), sigma=np.eye(2), count=2, features="net-b")
    with pytest.raises(ValueError, match=r"net-a.*net-b"):
        fid(a, b)


# --- FID on real data with classifier features ------------------------------------------------


class CountingNet:
    """Wraps a feature network and counts the images it sees."""

    def __init__(self, net: ClassifierFeatures) -> None:
        self.net, self.name, self.dim, self.seen = net, net.name, net.dim, 0

    def __call__(self, images: Tensor) -> Tensor:
        self.seen += int(images.shape[0])
        return self.net(images)


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return load_dataset("builtin:mnist5k")


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def classifier(mnist: ImageDataset, classifier_cache: Path) -> ClassifierFeatures:
    # The classifier's 15 epochs over mnist5k, unlike the suite's small tensors, are worth
    # every core (half the time of conftest's one thread on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        net = load_classifier_features(mnist, cache_dir=classifier_cache, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert net.trained
    return net


def test_classifier_is_accurate_and_cached(
    mnist: ImageDataset, classifier: ClassifierFeatures, classifier_cache: Path
) -> None:
    assert classifier.heldout_accuracy > 0.95
    assert classifier.name == f"classifier-{mnist.digest}" and classifier.dim == 128
    path = classifier_cache / f"classifier-{mnist.digest}.pt"
    mtime = path.stat().st_mtime_ns
    again = load_classifier_features(mnist, cache_dir=classifier_cache, seed=0)
    assert not again.trained and path.stat().st_mtime_ns == mtime
    x = mnist.images[:8]
    assert torch.equal(again(x), classifier(x))
    assert classifier(x).shape == (8, 128)


def test_classifier_needs_labels(tmp_path: Path, mnist: ImageDataset) -> None:
    unlabelled = ImageDataset(
        uri="mem:unlabelled", images=mnist.images[:10], labels=None, digest="0" * 16
    )
    with pytest.raises(DatasetError, match=r"mem:unlabelled.*no labels.*evaluation.features"):
        load_classifier_features(unlabelled, cache_dir=tmp_path)


def test_classifier_on_8x8_digits(tmp_path: Path) -> None:
    digits = load_dataset("builtin:digits")
    net = load_classifier_features(digits, cache_dir=tmp_path, seed=0)
    assert net.heldout_accuracy > 0.9 and net(digits.images[:5]).shape == (5, 128)
    with pytest.raises(ValueError, match=r"\[B, 1, 8, 8\]"):
        net(torch.zeros(2, 1, 28, 28))


def test_fid_sanity_on_real_data(mnist: ImageDataset, classifier: ClassifierFeatures) -> None:
    half_a, half_b = split_dataset(mnist, fraction=0.5, seed=0)
    ref = compute_stats(classifier, half_a.images)
    floor = fid(ref, compute_stats(classifier, half_b.images))
    gen = torch.Generator().manual_seed(0)
    uniform = torch.rand(half_b.images.shape, generator=gen) * 2 - 1
    noise_fid = fid(ref, compute_stats(classifier, uniform))
    assert floor * 20 < noise_fid, (floor, noise_fid)

    noisy = []
    for std in (0.1, 0.3, 0.6):
        eps = torch.randn(half_b.images.shape, generator=gen)
        images = (half_b.images + std * eps).clamp(-1, 1)
        noisy.append(fid(ref, compute_stats(classifier, images)))
    assert floor < noisy[0] < noisy[1] < noisy[2], (floor, noisy)


def test_reference_stats_are_cached(
    mnist: ImageDataset, classifier: ClassifierFeatures, tmp_path: Path
) -> None:
    _, small = split_dataset(mnist, fraction=0.1, seed=1)
    net = CountingNet(classifier)
    first = reference_stats(net, small, cache_dir=tmp_path)
    assert net.seen == len(small) == first.count and first.features == classifier.name
    files = list(tmp_path.glob("ref-*.npz"))
    assert [f.name for f in files] == [f"ref-{small.digest}-classifier-{mnist.digest}.npz"]
    mtime = files[0].stat().st_mtime_ns
    second = reference_stats(net, small, cache_dir=tmp_path)
    assert net.seen == len(small) and files[0].stat().st_mtime_ns == mtime
    assert np.array_equal(first.mu, second.mu) and fid(first, second) == pytest.approx(0, abs=1e-6)


# --- Inception ---------------------------------------------------------------------------------


def test_default_inception_on_four_images(mnist: ImageDataset) -> None:
    net = load_inception()
    assert net.dim == 2048 and "default_1" in net.name
    feats = net(mnist.images[:4])
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])


class _TinyPool(torch.nn.Module):
    """Stands in for an Inception file: any TorchScript module mapping [B,3,299,299] -> [B,2048]."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_inception_torchscript_by_file_and_s3_uri(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_TinyPool()), str(path))
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    by_file = load_inception(path.as_uri())
    assert by_file.name == f"inception-v3-pool3({path.as_uri()})"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="pdistill-models")
    s3.upload_file(str(path), "pdistill-models", "tiny.pt")
    by_s3 = load_inception("s3://pdistill-models/tiny.pt")
    assert torch.equal(by_file(images), by_s3(images)) and by_s3(images).shape == (3, 2048)
    with pytest.raises(ValueError, match=r"s3://pdistill-models/absent\.pt.*NoSuchKey"):
        load_inception("s3://pdistill-models/absent.pt")


def test_inception_rejects_non_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "state_dict.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"state_dict\.pth.*TorchScript"):
        load_inception(str(path))
    with pytest.raises(ValueError, match=r"absent\.pt.*no such file"):
        load_inception(str(tmp_path / "absent.pt"))
