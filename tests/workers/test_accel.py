"""The fast path (workers/accel.py) on CPU: the same code as on a GPU, the plain path's results.

On a GPU the fast path is bf16 autocast + channels_last + torch.compile; here each switch is
checked against the plain fp32 eager path on identical inputs. Speed is `bench/gpu.py`'s job.
"""

import copy

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from workers.accel import Accel, choose, place, prepare
from workers.config import DiffusionConfig, DistillConfig
from workers.distill import distill_round, distillation_loss
from workers.teacher import EMA
from workers.training import GRAPH_WARMUP, DivergedError, GraphCaptureError, Updater, run_updates
from workers.unet import UNet, UNetConfig

CPU = torch.device("cpu")
DIFFUSION = DiffusionConfig(output="x", weighting="truncated_snr")


def small_unet(seed: int = 0) -> UNet:
    """A small U-Net with attention whose output layers are not zero (a fresh one predicts 0)."""
    torch.manual_seed(seed)
    cfg = UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2),
                     num_res_blocks=1, attn_resolutions=(4,))  # fmt: skip
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net


def test_choose_resolves_the_spec_setting():
    assert not choose("auto", "cpu").on  # CPU: plain fp32 eager unless asked
    assert choose("on", "cpu") == Accel(CPU, bf16=True, channels_last=True, compile=True)
    assert choose("auto", "cuda") == Accel(
        torch.device("cuda"),
        bf16=True,
        channels_last=True,
        compile=True,
        graphs=True,
        norm_channel_stats=True,
    )
    assert not choose("on", "cpu").graphs  # CUDA graphs need CUDA
    # The spec's `resources.cuda_graphs: false`: the fast path, each update launched from the host
    # (and the norms that suit that).
    assert choose("auto", "cuda", graphs=False) == Accel(
        torch.device("cuda"), bf16=True, channels_last=True, compile=True
    )
    assert not choose("off", "cuda").on
    with pytest.raises(ValueError, match=r"fast_path 'fast' is not one of \('auto', 'on', 'off'\)"):
        choose("fast", "cpu")  # type: ignore[arg-type]


def _loss_and_grads(student: UNet, teacher: UNet, x, eps, i):
    student.zero_grad(set_to_none=True)
    loss = distillation_loss(
        student, teacher, x=x, student_steps=4, diffusion=DIFFUSION, eps=eps, i=i
    )
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in student.parameters()])


def _inputs(batch: int = 6):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(batch, 1, 8, 8, generator=g) * 2 - 1
    return x, torch.randn(x.shape, generator=g), torch.randint(0, 4, (batch,), generator=g)


def test_bf16_autocast_matches_fp32_within_bf16_tolerance_and_keeps_the_loss_fp32():
    teacher = small_unet(0).eval().requires_grad_(False)
    student = small_unet(1)
    fast = Accel(CPU, bf16=True, channels_last=True, compile=False)
    s_fast, t_fast = place(copy.deepcopy(student), fast), place(copy.deepcopy(teacher), fast)
    x, eps, i = _inputs()
    loss_ref, g_ref = _loss_and_grads(student, teacher, x, eps, i)
    loss_fast, g_fast = _loss_and_grads(s_fast, t_fast, x, eps, i)
    assert loss_fast.dtype == torch.float32
    assert t_fast(x, torch.zeros(6)).dtype == torch.float32  # the network's output is cast back
    assert torch.isclose(loss_fast, loss_ref, rtol=2e-2)
    assert (g_fast - g_ref).norm() / g_ref.norm() < 5e-2
    # bf16 really ran: the results are close, not equal.
    assert not torch.equal(loss_fast, loss_ref)


def test_compiled_channels_last_round_gives_the_plain_rounds_weights():
    """The fast path's code (compile, NHWC, device generator, fused Adam, no sync, the graphed
    update's per-channel norm statistics) minus bf16 and the CUDA graph, over a whole round: the
    same student as the plain path, to float tolerance. (The per-group statistics run compiled
    in the orchestrator's fast-path round.)"""
    teacher = small_unet(0)
    data = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    config = DistillConfig(student_steps=2, updates=4, batch_size=8, lr=1e-3, log_every=2)
    students = []
    nhwc = Accel(CPU, bf16=False, channels_last=True, compile=True, norm_channel_stats=True)
    for accel in (choose("off", CPU), nhwc):
        student = copy.deepcopy(teacher)
        result = distill_round(
            copy.deepcopy(teacher), student, data=data, diffusion=DIFFUSION, config=config,
            accel=accel,
        )  # fmt: skip
        students.append((student, result))
    (plain, r_plain), (fast, r_fast) = students
    assert fast.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert "_net" in vars(fast)  # its body runs compiled (`UNet.compile_body`)
    assert fast.norm_out.per_channel_stats and not plain.norm_out.per_channel_stats
    # Adam divides by √v: where a gradient is ~0, float reordering moves that weight by up to
    # lr per update, so weights are compared to 5% of the largest move of the round (lr·updates).
    atol = 0.05 * config.lr * config.updates
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=atol), name
    assert [u for u, _ in r_fast.losses] == [u for u, _ in r_plain.losses]
    assert [v for _, v in r_fast.losses] == pytest.approx([v for _, v in r_plain.losses], rel=1e-4)
    assert not torch.equal(plain.conv_in.weight, teacher.conv_in.weight)  # it did train


def test_a_compiled_bf16_network_is_one_aot_autograd_can_cache():
    """Autocast stays outside the compiled graph: AOTAutograd bypasses its cache for a graph
    that enters autocast (as a compiled `forward` did), so no process could reuse the backward
    an earlier stage had compiled."""
    from torch._dynamo.utils import counters

    cfg = UNetConfig(image_size=4, in_channels=1, out_channels=1, ch=16, ch_mult=(1,),
                     num_res_blocks=1, attn_resolutions=())  # fmt: skip
    net = prepare(UNet(cfg), Accel(CPU, bf16=True, channels_last=False, compile=True))
    counters.clear()
    out = net(torch.randn(2, 1, 4, 4), torch.zeros(2))
    assert out.dtype == torch.float32
    out.square().mean().backward()
    aot = counters["aot_autograd"]
    assert aot["autograd_cache_bypass"] == 0, dict(aot)
    assert aot["autograd_cache_miss"] + aot["autograd_cache_hit"] >= 1, dict(aot)


class Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))


def test_a_non_finite_update_is_skipped_on_the_device_and_reported_at_the_log_point():
    net = Scaled()
    bad = 3  # the 3rd update's loss is NaN
    seen: list[torch.Tensor] = []

    def loss_fn() -> torch.Tensor:
        seen.append(net.w.detach().clone())
        scale = float("nan") if len(seen) == bad else 1.0
        return (net.w * scale).square().sum()

    with pytest.raises(DivergedError, match="loss is nan at update 3") as info:
        run_updates(
            model=net, loss_fn=loss_fn, updates=8, lr=0.1, lr_scale=lambda i: 1.0,
            grad_clip=1.0, log_every=5, what="toy",
        )  # fmt: skip
    assert info.value.update == bad
    assert len(seen) == 5  # it ran on to the log point, without waiting for the device
    # The weights stayed those from before the bad update: nothing after it was applied.
    assert torch.equal(net.w.detach(), seen[bad - 1])
    assert not torch.equal(seen[1], seen[0])


def test_an_infinite_gradient_with_a_finite_loss_is_caught_too():
    net = Scaled()
    updater = Updater(net, lr=0.1, lr_scale=lambda i: 1.0, grad_clip=1.0, what="toy")
    updater.step(net.w.sum())
    assert updater.divergence() is None
    before = net.w.detach().clone()
    # sqrt'(0) is infinite: the loss is finite (0), its gradient is not.
    updater.step(torch.sqrt(net.w * 0.0).sum())
    err = updater.divergence()
    assert err is not None and err.update == 2
    assert str(err) == "toy: the gradient is not finite at update 2 (loss 0); stopped"
    assert torch.equal(net.w.detach(), before)


def test_ema_matches_averaged_model():
    net = small_unet(0)
    ours = EMA(net, 0.9)
    ref = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.rand(2, 1, 8, 8)
    for _ in range(3):
        opt.zero_grad()
        net(x, torch.zeros(2)).square().mean().backward()
        opt.step()
        ours.update()
        ref.update_parameters(net)
    for a, b in zip(ours.module.parameters(), ref.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_prepare_keeps_checkpoint_keys():
    net = small_unet(0)
    keys = list(net.state_dict())
    prepare(net, Accel(CPU, bf16=False, channels_last=True, compile=True))
    assert list(net.state_dict()) == keys


def test_updater_state_is_plain_numbers_and_resumes_the_schedule():
    """A saved state holds floats where a CUDA graph keeps device tensors (the learning rate),
    so it loads with or without a graph; a resumed Updater continues the schedule and count."""
    net = Scaled()
    updater = Updater(net, lr=0.1, lr_scale=lambda i: 1.0 / (i + 1), grad_clip=1.0, what="toy")
    updater._lr_on_device()  # the learning rate as a tensor the schedule fills, as with a graph
    for _ in range(3):
        loss = updater.update(lambda: net.w.square().sum())
        assert loss.requires_grad is False and loss.shape == ()
    assert isinstance(updater.opt.param_groups[0]["lr"], torch.Tensor)
    state = updater.state_dict()
    assert isinstance(state["opt"]["param_groups"][0]["lr"], float)
    assert all(isinstance(v, float) for v in state["sched"]["_last_lr"])
    net2 = Scaled()
    resumed = Updater(net2, lr=0.1, lr_scale=lambda i: 1.0 / (i + 1), grad_clip=1.0, what="toy")
    resumed.load_state_dict(state)
    assert resumed.done == 3 and resumed.opt.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
    # The device's update count follows: a NaN at the next update is reported as update 4.
    resumed.step(net2.w.sum() * float("nan"))
    err = resumed.divergence()
    assert err is not None and err.update == 4


def test_a_cuda_graph_needs_a_cuda_device():
    with pytest.raises(ValueError, match="graph=True needs the model on a CUDA device, not cpu"):
        Updater(Scaled(), lr=0.1, lr_scale=lambda i: 1.0, grad_clip=1.0, what="toy", graph=True)


def test_a_failed_capture_names_the_spec_switch_fake_gpu(monkeypatch):
    """Fake GPU: a capture needs CUDA, so this Updater is switched to its graph path after the
    warm-up by hand and its `_capture` raises what torch raises for an operation a capture
    refuses. The update fails with an error that names the way out, and nothing was applied."""
    net = Scaled()
    updater = Updater(net, lr=0.1, lr_scale=lambda i: 1.0, grad_clip=1.0, what="round-2")
    updater.graph, updater._warm = True, GRAPH_WARMUP  # as on a GPU after 3 eager updates

    def refuse(loss_fn):
        raise RuntimeError(
            "CUDA error: operation not permitted when stream is capturing\nCompile with ..."
        )

    monkeypatch.setattr(updater, "_capture", refuse)
    before = net.w.detach().clone()
    with pytest.raises(GraphCaptureError) as info:
        updater.update(lambda: net.w.square().sum())
    assert str(info.value) == (
        "round-2: the update could not be captured as a CUDA graph (CUDA error: operation not "
        "permitted when stream is capturing); set resources.cuda_graphs: false in the spec to "
        "launch it from the host instead"
    )
    assert updater.done == 0 and torch.equal(net.w.detach(), before)
