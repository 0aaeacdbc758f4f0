"""Checkpoints: a safetensors file whose metadata holds the resolved config, written atomically.

`<name>.safetensors` is the checkpoint (weights + config in its header); `<name>.json` beside it
is the same config for people and tools. Both are written to a temporary name and renamed, so a
reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from workers.data import read_uri_bytes
from workers.unet import UNet, UNetConfig

CONFIG_KEY = "pdistill_config"


class CheckpointError(ValueError):
    """A checkpoint could not be read; the message names the URI and the problem."""


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: Path, *, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write `path` (.safetensors) and `path.with_suffix('.json')`; returns `path`."""
    write_atomic(path.with_suffix(".json"), json.dumps(config, indent=2, sort_keys=True).encode())
    write_atomic(path, checkpoint_bytes(state_dict, config))
    return path


def checkpoint_bytes(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> bytes:
    """The safetensors file of a checkpoint, config in its header (for object stores)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return st_save(tensors, metadata={CONFIG_KEY: json.dumps(config, sort_keys=True)})


def load_checkpoint(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, config) from a local path, file:// or s3:// URI of a .safetensors checkpoint."""
    raw = read_uri_bytes(uri, error=CheckpointError)
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{uri!r}: not a safetensors checkpoint ({exc})") from exc
    meta = header.get("__metadata__") or {}
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{uri!r}: safetensors file has no {CONFIG_KEY!r} metadata; "
            "only checkpoints written by pdistill can be loaded"
        )
    return tensors, json.loads(meta[CONFIG_KEY])


def load_unet(uri: str) -> tuple[UNet, dict[str, Any]]:
    """The U-Net a checkpoint describes, with its weights loaded, in eval mode; and its config."""
    state, config = load_checkpoint(uri)
    if "unet" not in config:
        raise CheckpointError(f"{uri!r}: checkpoint config has no 'unet' entry")
    net = UNet(UNetConfig.from_dict(config["unet"]))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{uri!r}: weights do not fit its U-Net config: {exc}") from exc
    return net.eval(), config


def training_state_bytes(state: dict[str, Any]) -> bytes:
    """A training state (weights, optimizer, counters, random state) as bytes, to resume from."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def training_state(raw: bytes) -> dict[str, Any]:
    """The state of `training_state_bytes`, on the CPU: `load_state_dict` moves weights and
    optimizer state to the network's device, and a CUDA generator takes a CPU state."""
    state: dict[str, Any] = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return state
