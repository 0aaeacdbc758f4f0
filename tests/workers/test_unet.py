"""Contract tests for workers/unet.py: shapes, parameter counts, initialisation, configs."""

import json

import pytest
import torch

from workers.unet import (
    PRESETS,
    GroupNorm,
    UNet,
    UNetConfig,
    count_parameters,
    preset_config,
)

# (image_size, in_channels) the presets are meant for.
PRESET_SHAPES = {
    "cifar10": (32, 3),
    "mnist-small": (28, 1),
    "mnist-tiny": (28, 1),
    "digits-small": (8, 1),
}
SMALL_PRESETS = ["mnist-small", "mnist-tiny", "digits-small"]


def _model(name: str, *, out_mult: int = 1, seed: int = 0) -> UNet:
    size, chans = PRESET_SHAPES[name]
    torch.manual_seed(seed)
    return UNet(
        preset_config(name, image_size=size, in_channels=chans, out_channels=out_mult * chans)
    )


def _inputs(name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    size, chans = PRESET_SHAPES[name]
    gen = torch.Generator().manual_seed(1)
    z_t = torch.randn(batch, chans, size, size, generator=gen)
    logsnr = torch.linspace(-20.0, 20.0, batch)
    return z_t, logsnr


@pytest.fixture(scope="module")
def cifar10_model() -> UNet:
    # The only real cifar10 instance in this module (60M parameters).
    return _model("cifar10")


def test_every_preset_has_shapes_here() -> None:
    assert set(PRESETS) == set(PRESET_SHAPES)


@pytest.mark.parametrize("name", SMALL_PRESETS)
@pytest.mark.parametrize("out_mult", [1, 2])
def test_output_shape_small_presets(name: str, out_mult: int) -> None:
    model = _model(name, out_mult=out_mult)
    z_t, logsnr = _inputs(name, batch=3)
    size, chans = PRESET_SHAPES[name]
    assert model(z_t, logsnr).shape == (3, out_mult * chans, size, size)


def test_output_shape_cifar10(cifar10_model: UNet) -> None:
    z_t, logsnr = _inputs("cifar10", batch=1)
    with torch.no_grad():
        assert cifar10_model(z_t, logsnr).shape == (1, 3, 32, 32)


def test_cifar10_parameter_count_matches_paper(cifar10_model: UNet) -> None:
    assert abs(count_parameters(cifar10_model) - 60.0e6) / 60.0e6 < 0.01
    # out_channels=6 ('both' output): built on the meta device, so no weights are allocated.
    with torch.device("meta"):
        both = UNet(preset_config("cifar10", image_size=32, in_channels=3, out_channels=6))
    assert abs(count_parameters(both) - 60.0e6) / 60.0e6 < 0.01
    assert count_parameters(both) - count_parameters(cifar10_model) == 3 * (256 * 9 + 1)


def test_mnist_small_is_about_1_3m_parameters() -> None:
    assert 1.2e6 < count_parameters(_model("mnist-small")) < 1.4e6


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_fresh_model_outputs_exact_zeros(name: str) -> None:
    z_t, logsnr = _inputs(name, batch=2)
    assert torch.equal(_model(name)(z_t, logsnr), torch.zeros_like(z_t))


@pytest.mark.parametrize("name", ["mnist-tiny", "digits-small"])
def test_gradients_reach_every_parameter(name: str) -> None:
    model = _model(name)
    # Zero-initialised layers block gradients to everything upstream: perturb all weights.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z_t, logsnr = _inputs(name, batch=2)
    model(z_t, logsnr).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


def test_output_depends_on_logsnr() -> None:
    model = _model("mnist-tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z_t, _ = _inputs("mnist-tiny", batch=1)
    z_t = z_t.repeat(2, 1, 1, 1)
    out = model(z_t, torch.tensor([-5.0, 5.0]))
    assert not torch.allclose(out[0], out[1])


def test_dropout_inactive_in_eval() -> None:
    model = _model("mnist-small")  # dropout 0.1
    assert model.config.dropout > 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    z_t, logsnr = _inputs("mnist-small", batch=2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(z_t, logsnr), model(z_t, logsnr))
        model.train()
        assert not torch.equal(model(z_t, logsnr), model(z_t, logsnr))


def test_config_json_round_trip() -> None:
    config = preset_config("digits-small", image_size=8, in_channels=1, out_channels=2)
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.ch_mult, tuple)
    assert isinstance(restored.attn_resolutions, tuple)


def test_config_replace() -> None:
    config = preset_config("cifar10", image_size=32, in_channels=3, out_channels=3)
    student = config.replace(dropout=0.0)
    assert student.dropout == 0.0 and config.dropout == 0.2
    assert student.replace(dropout=0.2) == config


def test_from_dict_rejects_unknown_field() -> None:
    d = UNetConfig(image_size=8, in_channels=1, out_channels=1).to_dict() | {"chanels": 3}
    with pytest.raises(ValueError, match="chanels"):
        UNetConfig.from_dict(d)


def test_non_power_of_two_sizes() -> None:
    assert preset_config(
        "mnist-small", image_size=28, in_channels=1, out_channels=1
    ).resolutions == (28, 14, 7)
    assert preset_config(
        "digits-small", image_size=8, in_channels=1, out_channels=1
    ).resolutions == (8, 4)


def test_bad_image_size_raises() -> None:
    with pytest.raises(ValueError, match="image_size=30"):
        UNet(UNetConfig(image_size=30, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2, 2)))


def test_attention_at_missing_resolution_raises() -> None:
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNetConfig(
            image_size=8, in_channels=1, out_channels=1, ch_mult=(1, 2), attn_resolutions=(16,)
        )


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="cifar100") as info:
        preset_config("cifar100", image_size=32, in_channels=3, out_channels=3)
    for name in PRESETS:
        assert name in str(info.value)


def test_wrong_input_shape_raises() -> None:
    model = _model("mnist-tiny")
    with pytest.raises(ValueError, match="z_t"):
        model(torch.zeros(2, 1, 32, 32), torch.zeros(2))
    with pytest.raises(ValueError, match="logsnr"):
        model(torch.zeros(2, 1, 28, 28), torch.zeros(3))


def test_same_seed_same_weights() -> None:
    a, b = _model("digits-small", seed=7), _model("digits-small", seed=7)
    c = _model("digits-small", seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


@pytest.mark.parametrize("per_channel_stats", [False, True])
def test_group_norm_keeps_channels_last_and_matches_pytorchs(per_channel_stats: bool) -> None:
    torch.manual_seed(0)
    norm = GroupNorm(4, 16)
    norm.per_channel_stats = per_channel_stats
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    # Channels whose means differ by more than their spread: the group's variance is mostly the
    # spread of its channels' means, which the per-channel statistics must add back.
    x = torch.randn(3, 16, 5, 7) + 3.0 * torch.randn(1, 16, 1, 1)
    nhwc = x.to(memory_format=torch.channels_last).requires_grad_(True)
    out = norm(nhwc)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    ref = torch.nn.functional.group_norm(nhwc, 4, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    params = [nhwc, norm.weight, norm.bias]
    grads = torch.autograd.grad(out, params, grad), torch.autograd.grad(ref, params, grad)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm(x), ref)  # NCHW input: PyTorch's kernel
    # bf16 activations are normalised in fp32, as CUDA autocast runs GroupNorm.
    assert norm(nhwc.bfloat16()).dtype == torch.float32


def test_channels_last_network_is_the_same_function_and_stays_channels_last() -> None:
    """The NHWC paths (norms, skip concatenation, multi-head attention) compute what the NCHW
    paths do, with the same weights, and keep the activations channels_last."""
    cfg = UNetConfig(image_size=8, in_channels=3, out_channels=3, ch=16, ch_mult=(1, 2),
                     num_res_blocks=1, attn_resolutions=(4, 8), num_heads=2)  # fmt: skip
    torch.manual_seed(0)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)  # the zero-initialised output layers would hide the paths
    nhwc = UNet(cfg)
    nhwc.load_state_dict(net.state_dict())
    nhwc.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    z_t, logsnr = torch.randn(4, 3, 8, 8), torch.linspace(-5.0, 5.0, 4)
    seen: list[torch.Tensor] = []
    hook = nhwc.mid_attn.register_forward_hook(lambda m, i, o: seen.append(o))
    out, ref = nhwc(z_t, logsnr), net(z_t, logsnr)
    hook.remove()
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert not seen[0].is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    g_nhwc = torch.cat([p.grad.flatten() for p in nhwc.parameters() if p.grad is not None])
    g_ref = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    assert g_nhwc.shape == g_ref.shape == (count_parameters(net),)
    assert (g_nhwc - g_ref).norm() / g_ref.norm() < 1e-5
