"""Teacher training stops and resumes without a trace: saved at update k, resumed, it ends on
the weights of a run that never stopped."""

import dataclasses

import pytest
import torch

from workers.checkpoint import training_state, training_state_bytes
from workers.config import DiffusionConfig, TeacherTrainConfig
from workers.teacher import train_teacher
from workers.unet import UNet, UNetConfig

CONFIG = TeacherTrainConfig(updates=12, batch_size=4, warmup_updates=3, log_every=2, seed=1)
DIFFUSION = DiffusionConfig("v", "snr_plus_one")


def _net() -> UNet:
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2),
                     num_res_blocks=1, attn_resolutions=(4,))  # fmt: skip
    return UNet(cfg)


class CrashError(Exception):
    pass


def test_a_resumed_teacher_ends_where_an_uninterrupted_one_does() -> None:
    data = torch.rand(16, 1, 8, 8) * 2 - 1
    whole, _ = train_teacher(_net(), data=data, diffusion=DIFFUSION, config=CONFIG)

    saved: list[bytes] = []

    def save_then_crash(state: dict) -> None:
        saved.append(training_state_bytes(state))  # as a stage stores it; then the process dies
        if len(saved) == 2:
            raise CrashError

    with pytest.raises(CrashError):
        train_teacher(_net(), data=data, diffusion=DIFFUSION, config=CONFIG, save=save_then_crash)
    state = training_state(saved[-1])
    assert CONFIG.save_every == 2 and state["updater"]["done"] == 4
    assert state["updater"]["seconds"] > 0  # the time spent on the first 4 updates
    state["updater"]["seconds"] = 1000.0  # as if those had taken long: the result counts them
    resumed, result = train_teacher(
        _net(), data=data, diffusion=DIFFUSION, config=CONFIG, resume=state
    )
    assert [u for u, _ in result.losses] == [6, 8, 10, 12]  # only the updates after the save
    assert 1000.0 < result.seconds < 1000.0 + 60
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # The comparison above can fail: two fresh runs agree, a run of fewer updates does not.
    fresh, _ = train_teacher(_net(), data=data, diffusion=DIFFUSION, config=CONFIG)
    other = dataclasses.replace(CONFIG, updates=8)
    short, _ = train_teacher(_net(), data=data, diffusion=DIFFUSION, config=other)
    assert torch.equal(fresh.conv_in.weight, whole.conv_in.weight)
    assert not torch.equal(short.conv_in.weight, whole.conv_in.weight)
