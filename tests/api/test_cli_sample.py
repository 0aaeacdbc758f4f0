"""`pdistill sample`: images from a checkpoint, run as a subprocess the way a user runs it."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from workers.checkpoint import checkpoint_bytes, load_unet
from workers.evaluate import eval_noise
from workers.images import to_uint8
from workers.sampler import ddim_sample
from workers.unet import UNet, preset_config


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "sample", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A round-2 student of 2 steps (v output), its weights drawn so that samples differ."""
    torch.manual_seed(0)
    net = UNet(preset_config("digits-small", image_size=8, in_channels=1, out_channels=1))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    config = {
        "role": "student",
        "round": 2,
        "steps": 2,
        "unet": net.config.to_dict(),
        "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    }
    path = tmp_path_factory.mktemp("ckpt") / "student.safetensors"
    path.write_bytes(checkpoint_bytes(net.state_dict(), config))
    return str(path)


def _reference(checkpoint: str, *, count: int, steps: int, seed: int) -> np.ndarray:
    """What the README's Python does with the same file: the images `sample` must write."""
    net, _ = load_unet(checkpoint)
    u = net.config
    noise = eval_noise(count=count, shape=(u.in_channels, u.image_size, u.image_size), seed=seed)
    return to_uint8(ddim_sample(net, noise=noise, num_steps=steps, output="v"))


def test_sample_writes_a_grid_and_every_image_as_the_library_samples_them(student, tmp_path):
    out = tmp_path / "grid" / "s.png"
    proc = _cli(student, "-n", "12", "--seed", "3", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = " ".join(proc.stdout.split())
    assert "12 images from the round 2 student in 2 steps (seed 3) on cpu" in line, line
    assert f"{out} (grid of 12), {out.with_suffix('.npz')}" in line
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out.with_suffix(".npz")) as f:
        images = f["images"]
    assert images.shape == (12, 8, 8, 1) and images.dtype == np.uint8
    assert np.array_equal(images, _reference(student, count=12, steps=2, seed=3))
    assert len({im.tobytes() for im in images}) == 12  # the weights make distinct images
    # In batches (the last one short) the images are the same up to float rounding; a directory
    # as --out gets samples.png; another seed gives other images.
    proc = _cli(student, "-n", "12", "--seed", "3", "--batch-size", "5", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "samples.npz") as f:
        batched = f["images"]
    assert np.abs(batched.astype(int) - images.astype(int)).max() <= 1
    assert (tmp_path / "samples.png").is_file()
    proc = _cli(student, "-n", "12", "--seed", "4", "-o", str(tmp_path / "other.png"))
    with np.load(tmp_path / "other.npz") as f:
        assert not np.array_equal(f["images"], images)


def test_other_steps_than_the_students_own_are_sampled_with_a_note(student, tmp_path):
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}  # as in a terminal
    proc = _cli(student, "-n", "4", "--steps", "4", "-o", str(tmp_path / "a.png"), env=env)
    assert proc.returncode == 0, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "note: the round 2 student was made for 2-step sampling; sampling in 4" in err
    assert "sampling" in err and "4/4" in err, err  # the bar, as a terminal shows it
    with np.load(tmp_path / "a.npz") as f:
        assert np.array_equal(f["images"], _reference(student, count=4, steps=4, seed=0))


def test_bad_input_is_one_error_line_naming_it_and_writes_nothing(student, tmp_path):
    def fails(*args: str) -> str:
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        return " ".join(proc.stderr.split())

    missing = tmp_path / "absent.safetensors"
    assert f"{str(missing)!r}: no such file" in fails(str(missing), "-o", str(tmp_path / "x.png"))
    jpg = str(tmp_path / "x.jpg")
    assert f"--out: {jpg!r} is neither a directory nor a .png path" in fails(student, "-o", jpg)
    assert "--count" in fails(student, "-n", "0")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    assert "only checkpoints written by pdistill" in fails(str(foreign))
    odd = tmp_path / "odd.safetensors"
    net, config = load_unet(student)
    odd.write_bytes(checkpoint_bytes(net.state_dict(), {**config, "diffusion": {}, "steps": None}))
    assert "diffusion.output is None, not one of ('x', 'v', 'both')" in fails(str(odd))
    stepless = tmp_path / "stepless.safetensors"
    stepless.write_bytes(checkpoint_bytes(net.state_dict(), {**config, "steps": None}))
    assert "gives no step count; pass --steps" in fails(str(stepless))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "foreign.safetensors",
        "odd.safetensors",
        "stepless.safetensors",
    ]
