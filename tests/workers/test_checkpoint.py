import json

import boto3
import pytest
import torch
from safetensors.torch import save_file

from workers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from workers.images import grid_png, save_samples


def _state():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.zeros(4)}


def test_round_trip_and_config_beside(tmp_path):
    path = save_checkpoint(
        tmp_path / "c" / "m.safetensors", state_dict=_state(), config={"a": [1, 2]}
    )
    state, config = load_checkpoint(str(path))
    assert config == {"a": [1, 2]}
    assert all(torch.equal(state[k], v) for k, v in _state().items())
    assert json.loads((tmp_path / "c" / "m.json").read_text()) == config
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["m.json", "m.safetensors"]
    state2, _ = load_checkpoint(path.as_uri())
    assert torch.equal(state2["w"], state["w"])


def test_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        load_checkpoint(str(tmp_path / "absent.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="junk.safetensors.*not a safetensors"):
        load_checkpoint(str(junk))
    foreign = tmp_path / "foreign.safetensors"
    save_file(_state(), foreign)
    with pytest.raises(CheckpointError, match="foreign.safetensors.*only checkpoints written by"):
        load_checkpoint(str(foreign))


def test_load_from_s3(tmp_path, s3_endpoint):
    path = save_checkpoint(tmp_path / "m.safetensors", state_dict=_state(), config={"k": 1})
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ckpts")
    s3.upload_file(str(path), "ckpts", "teachers/m.safetensors")
    state, config = load_checkpoint("s3://ckpts/teachers/m.safetensors")
    assert config == {"k": 1} and torch.equal(state["w"], _state()["w"])
    with pytest.raises(CheckpointError, match="s3://ckpts/teachers/none"):
        load_checkpoint("s3://ckpts/teachers/none")


def test_samples_npz_and_png(tmp_path):
    images = torch.linspace(-1.2, 1.2, 5 * 3 * 6 * 6).reshape(5, 3, 6, 6)
    save_samples(images, npz_path=tmp_path / "s.npz", png_path=tmp_path / "s.png")
    import numpy as np

    with np.load(tmp_path / "s.npz") as z:
        arr = z["images"]
    assert arr.shape == (5, 6, 6, 3) and arr.dtype == np.uint8
    assert arr.min() == 0 and arr.max() == 255  # clipped to [-1, 1] first
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid_png(arr[:1, :, :, :1])[:4] == b"\x89PNG"
