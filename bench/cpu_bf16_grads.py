"""Non-finite gradients of the U-Net's fast path on CPU: where they come from.

    .venv/bin/python bench/cpu_bf16_grads.py

`bench/gpu.py --device cpu --tiny` fails its correctness check on this machine (torch 2.13.0+cpu):
the fast path's gradients are NaN. This runs one forward and backward of `bench/gpu.py`'s tiny
U-Net (channels_last input, bf16 autocast, `torch.compile` of the body, as `prepare` does) and
counts the parameters whose gradient is not finite, for: each switch alone, all three with
Inductor's defaults, all three with Inductor's C++ kernels not vectorised (`cpp.simdlen = 0`),
and all three compiled by `aot_eager` (AOTAutograd's graphs run eagerly, no Inductor kernels).
Imports only `workers/`; each case compiles its own graphs (about a minute each here).
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.accel import Accel, choose, prepare
from workers.unet import UNet, UNetConfig

CFG = UNetConfig(image_size=16, in_channels=3, out_channels=3, ch=32, ch_mult=(1, 1),
                 num_res_blocks=1, attn_resolutions=(8,), dropout=0.0)  # fmt: skip


def bad_grads(net: UNet, accel: Accel, *, backend: str | None = None) -> tuple[int, int]:
    """(parameters with a non-finite gradient, parameters) after one forward and backward."""
    torch._dynamo.reset()
    if backend is not None:  # the same body, compiled by another backend
        accel = replace(accel, compile=False)
        prepare(net, accel)
        net.compile_body(dynamic=False, backend=backend)
    else:
        prepare(net, accel)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 16, 16, generator=gen).to(memory_format=torch.channels_last)
    logsnr = torch.randn(8, generator=gen) * 3
    net(x, logsnr).square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    return sum(not bool(g.isfinite().all()) for g in grads if g is not None), len(grads)


def main() -> None:
    torch.manual_seed(1)
    base = UNet(CFG)
    with torch.no_grad():  # no zero output layers: every parameter gets a gradient
        for p in base.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    off = choose("off", "cpu")
    on = choose("on", "cpu")
    cases = [
        ("bf16 autocast only", replace(off, bf16=True), None, None),
        ("channels_last only", replace(off, channels_last=True), None, None),
        ("torch.compile only", replace(off, compile=True), None, None),
        ("bf16 + channels_last + compile", on, None, None),
        ("the same, cpp.simdlen = 0", on, 0, None),
        ("the same, backend aot_eager", on, None, "aot_eager"),
    ]
    print(f"torch {torch.__version__}, U-Net {sum(p.numel() for p in base.parameters()):,} params")
    for name, accel, simdlen, backend in cases:
        torch._inductor.config.cpp.simdlen = simdlen
        t0 = time.perf_counter()
        bad, total = bad_grads(copy.deepcopy(base), accel, backend=backend)
        print(f"{name:<34} non-finite gradients: {bad:>3} of {total}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
