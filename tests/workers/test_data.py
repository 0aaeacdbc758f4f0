from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import torch

from workers.data import (
    BUILTINS,
    DatasetError,
    Peek,
    _peek_npz,
    load_dataset,
    peek,
    split_dataset,
    subset,
)


def _write_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _gray(n: int = 6, size: int = 5) -> np.ndarray:
    return np.arange(n * size * size, dtype=np.int64).reshape(n, size, size).astype(np.uint8)


def test_builtin_mnist5k() -> None:
    ds = load_dataset("builtin:mnist5k")
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.labels is not None and ds.labels.dtype == torch.int64 and ds.labels.shape == (5000,)
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    assert (ds.num_channels, ds.image_size, ds.num_classes) == (1, 28, 10)
    assert len(ds.digest) == 16 and ds.digest == load_dataset("builtin:mnist5k").digest


def test_builtin_digits() -> None:
    ds = load_dataset("builtin:digits")
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.labels is not None and ds.num_classes == 10


def test_a_peek_reads_shape_and_labels_without_loading_the_images(tmp_path: Path) -> None:
    for name in BUILTINS:  # the builtins' table says what loading them gives
        ds = load_dataset(f"builtin:{name}")
        assert peek(f"builtin:{name}") == Peek(ds.num_channels, ds.image_size, labelled=True)
    rgb = np.zeros((3, 10, 10, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "rgb.npz", images=rgb)
    assert peek(str(tmp_path / "rgb.npz")) == Peek(3, 10, labelled=False)
    gray = _write_npz(tmp_path / "gray.npz", images=_gray(size=7), labels=np.arange(6))
    assert peek(gray.as_uri()) == Peek(1, 7, labelled=True)
    # Unknown here: load_dataset tells why (or reads it from S3).
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for uri in ("s3://bucket/data.npz", str(tmp_path / "junk.npz"), str(tmp_path / "none.npz")):
        assert peek(uri) is None


def test_a_peek_reads_a_file_once_until_the_file_changes(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "d.npz", images=_gray(size=7), labels=np.arange(6))
    before = _peek_npz.cache_info()
    assert peek(str(path)) == peek(path.as_uri()) == Peek(1, 7, labelled=True)
    after = _peek_npz.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    _write_npz(path, images=_gray(size=9))  # the same path, new contents: read again
    assert peek(str(path)) == Peek(1, 9, labelled=False)


def test_npz_by_path_and_file_uri(tmp_path: Path) -> None:
    pixels = _gray()
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    path = _write_npz(tmp_path / "gray.npz", images=pixels, labels=labels)
    ds = load_dataset(str(path))
    assert ds.images.shape == (6, 1, 5, 5) and ds.num_classes == 3
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    expected = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)
    assert torch.equal(ds.images[:, 0], expected)
    same = load_dataset(path.as_uri())
    assert same.digest == ds.digest and torch.equal(same.images, ds.images)


def test_npz_rgb_without_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    ds = load_dataset(str(_write_npz(tmp_path / "rgb.npz", images=pixels)))
    assert ds.images.shape == (4, 3, 6, 6) and ds.labels is None and ds.num_classes is None
    expected = torch.from_numpy(pixels[2, :, :, 1] / 127.5 - 1.0).float()
    torch.testing.assert_close(ds.images[2, 1], expected)


def test_digest_depends_on_labels(tmp_path: Path) -> None:
    a = load_dataset(str(_write_npz(tmp_path / "a.npz", images=_gray())))
    b = load_dataset(str(_write_npz(tmp_path / "b.npz", images=_gray(), labels=np.zeros(6, int))))
    assert a.digest != b.digest


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"pixels": _gray()}, "no 'images'"),
        ({"images": _gray().astype(np.float32)}, "uint8"),
        ({"images": np.zeros((4, 5), np.uint8)}, "shape"),
        ({"images": np.zeros((2, 5, 5, 2), np.uint8)}, "shape"),
        ({"images": np.zeros((0, 5, 5), np.uint8)}, "empty"),
        ({"images": np.zeros((2, 5, 4), np.uint8)}, "square"),
        ({"images": _gray(), "labels": np.zeros(5, np.int64)}, "labels"),
        ({"images": _gray(), "labels": np.zeros(6, np.float32)}, "labels"),
    ],
)
def test_invalid_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    path = _write_npz(tmp_path / "bad_contents.npz", **arrays)
    with pytest.raises(DatasetError, match=needle) as info:
        load_dataset(str(path))
    assert "bad_contents.npz" in str(info.value)


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(DatasetError, match=r"garbage\.npz.*not a valid \.npz"):
        load_dataset(str(path))
    npy = tmp_path / "single.npz"
    with npy.open("wb") as f:
        np.save(f, _gray())
    with pytest.raises(DatasetError, match=r"single\.npz.*not a valid \.npz"):
        load_dataset(str(npy))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere\.npz.*no such file"):
        load_dataset(str(tmp_path / "nowhere.npz"))
    with pytest.raises(DatasetError, match=r"nowhere\.npz.*no such file"):
        load_dataset((tmp_path / "nowhere.npz").as_uri())
    with pytest.raises(DatasetError, match="directory"):
        load_dataset(str(tmp_path))


def test_unknown_builtin_and_scheme() -> None:
    with pytest.raises(DatasetError, match=r"builtin:cifar.*builtin:mnist5k, builtin:digits"):
        load_dataset("builtin:cifar")
    with pytest.raises(DatasetError, match=r"gs://b/k\.npz.*unknown URI scheme.*s3://"):
        load_dataset("gs://b/k.npz")


def test_split_is_deterministic_and_disjoint() -> None:
    ds = load_dataset("builtin:digits")
    rest, part = split_dataset(ds, fraction=0.25, seed=3)
    assert len(part) == round(0.25 * len(ds)) and len(rest) + len(part) == len(ds)
    rest2, part2 = split_dataset(ds, fraction=0.25, seed=3)
    assert torch.equal(part.images, part2.images) and part.digest == part2.digest
    assert rest.digest == rest2.digest
    _, other = split_dataset(ds, fraction=0.25, seed=4)
    assert other.digest != part.digest
    flat = lambda d: {tuple(r) for r in d.images.flatten(1).tolist()}  # noqa: E731
    assert flat(rest) | flat(part) == flat(ds)
    assert part.labels is not None and len(set(part.labels[:50].tolist())) > 5  # shuffled
    with pytest.raises(ValueError, match="fraction=1.0 must be in"):
        split_dataset(ds, fraction=1.0, seed=0)
    three = subset(ds, torch.arange(3), uri="three")
    with pytest.raises(DatasetError, match="'three': 3 images are too few to hold out 10% of them"):
        split_dataset(three, fraction=0.1, seed=0)
    # round() halves to even: round(0.1 · 5) = 0, round(0.1 · 6) = 1.
    with pytest.raises(DatasetError, match="give at least 6 images"):
        split_dataset(three, fraction=0.1, seed=0)


def test_s3_roundtrip_and_errors(s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="pdistill-data")
    buf = io.BytesIO()
    np.savez(buf, images=_gray(), labels=np.arange(6))
    s3.put_object(Bucket="pdistill-data", Key="sets/gray.npz", Body=buf.getvalue())

    ds = load_dataset("s3://pdistill-data/sets/gray.npz")
    assert ds.images.shape == (6, 1, 5, 5) and ds.num_classes == 6

    with pytest.raises(DatasetError, match=r"s3://pdistill-data/sets/missing\.npz.*NoSuchKey"):
        load_dataset("s3://pdistill-data/sets/missing.npz")
    with pytest.raises(DatasetError, match=r"s3://no-such-bucket/x\.npz.*NoSuchBucket"):
        load_dataset("s3://no-such-bucket/x.npz")
    with pytest.raises(DatasetError, match=r"s3://only-bucket"):
        load_dataset("s3://only-bucket")


@pytest.mark.usefixtures("s3_endpoint")  # for its credentials; the endpoint is replaced
def test_s3_connection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DatasetError, match=r"s3://b/k\.npz.*cannot read from S3"):
        load_dataset("s3://b/k.npz")
