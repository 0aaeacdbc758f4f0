"""The fast path: where the networks run and how (bf16 autocast, channels_last, torch.compile).

One code path serves CPU and GPU. `choose(mode, device, graphs=)` resolves a spec's
`fast_path` (`auto`: fast on a GPU, plain fp32 eager on CPU; `on`; `off`) and `cuda_graphs`
into an `Accel`; `prepare(net, accel)` moves a U-Net there and switches on what the `Accel`
says. Only the networks change: the schedule, the DDIM steps, the distillation target's
inversion and the loss stay in fp32 (the U-Net casts its output back to fp32), and the
training loop never waits for the device (see `Updater`). On a GPU the whole update is also
replayed as one CUDA graph (`graphs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from workers.unet import GroupNorm, UNet

FastPath = Literal["auto", "on", "off"]
FAST_PATHS: tuple[str, ...] = get_args(FastPath)


@dataclass(frozen=True)
class Accel:
    device: torch.device
    bf16: bool  # the networks' convolutions, matmuls and attention under bf16 autocast
    channels_last: bool  # NHWC activations and weights (what the tensor cores want)
    compile: bool  # torch.compile of each network (fuses GroupNorm, SiLU, FiLM, residuals)
    # The whole update captured once as a CUDA graph and replayed (`Updater`; CUDA only, and
    # not under DDP, whose all-reduce the capture does not hold).
    graphs: bool = False
    # The norms' statistics per channel, then per group (`unet.GroupNorm.per_channel_stats`):
    # fewer bytes read, more kernels; it pays where launching costs nothing (with `graphs`).
    norm_channel_stats: bool = False

    @property
    def on(self) -> bool:
        return self.bf16 or self.channels_last or self.compile


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose(
    mode: FastPath = "auto", device: torch.device | str | None = None, *, graphs: bool = True
) -> Accel:
    """The `Accel` for `mode` on `device` (default: the GPU when there is one, else the CPU);
    `graphs=False` keeps the fast path but launches each update from the host."""
    if mode not in FAST_PATHS:
        raise ValueError(f"fast_path {mode!r} is not one of {FAST_PATHS}")
    dev = torch.device(device) if device is not None else default_device()
    on = mode == "on" or (mode == "auto" and dev.type == "cuda")
    graphs = graphs and on and dev.type == "cuda"
    return Accel(
        device=dev,
        bf16=on,
        channels_last=on,
        compile=on,
        graphs=graphs,
        norm_channel_stats=graphs,
    )


def place(net: UNet, accel: Accel) -> UNet:
    """`net` moved to the device, in the memory format and compute dtype of `accel` (in place)."""
    net.to(accel.device)
    if accel.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    net.compute_dtype = torch.bfloat16 if accel.bf16 else None
    for module in net.modules():
        if isinstance(module, GroupNorm):
            module.per_channel_stats = accel.norm_channel_stats
    if accel.on and accel.device.type == "cuda":
        # Fixed shapes: let cuDNN time its convolution algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    return net


def prepare(net: UNet, accel: Accel) -> UNet:
    """`place`, then compile `net` in place (its state_dict keys stay the same)."""
    place(net, accel)
    if accel.compile:
        # One graph per batch shape (each as fast as it gets). Inductor's layout heuristic turns
        # NHWC off for a training graph with any conv whose input has ≥ 2× its output channels,
        # which the decoder's skip concatenations are; its kernels then write NCHW and every
        # cuDNN call copies them back (13% of the update's GPU time on an H200, bench/gpu.py).
        options = {"force_layout_optimization": True} if accel.channels_last else {}
        net.compile_body(dynamic=False, options=options)
    return net
