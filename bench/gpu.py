"""GPU speed of the distillation core: one prepared run for a machine with torch and CUDA only.

    python bench/gpu.py [--out DIR]                       # on the GPU machine (cifar10, batch 128)
    .venv/bin/python bench/gpu.py --device cpu --tiny     # here: the same script at tiny size

Imports only `workers/` (no Ray, MLflow or FastAPI), reads no data (random images in [−1, 1],
kept on the device) and downloads nothing. In one run, on the `cifar10` preset (60M parameters,
x-prediction, truncated-SNR weights, the paper's CIFAR-10 setting):
1. correctness: loss and gradients of one distillation update on the same inputs, fast path
   (bf16 autocast, channels_last, torch.compile) against the fp32 path (TF32 off);
2. the distillation update (2 teacher forwards + student forward and backward + fused Adam):
   img/s and TFLOP/s for plain fp32 eager (PyTorch's defaults), for the compiled networks
   launched from the host (a DDP worker's path), and for the project's path on one GPU (the
   whole update replayed as one CUDA graph; its norms take per-channel statistics), and a check
   that the graphed updates give the eager updates' losses and weights;
3. teacher training (dropout 0.2, EMA) img/s on the project's path;
4. 4-step DDIM sampling img/s at batch 1,024: fp32 eager, the compiled student, and the same
   captured as one CUDA graph (an experiment: the project's sampler does not capture);
5. where the time goes: the teacher's two forwards alone, one 3×3 conv at the top level, a bf16
   matmul (the card's measured peak), and kernel profiles of the graphed update's networks,
   launched from the host so that the profiler sees each kernel (`--out`).
6. last, a capture that meets a host synchronisation: the `GraphCaptureError` a campaign's
   stage would report (tests/workers/test_accel.py fakes it on CPU), and whether the process
   can still run CUDA work after it.
Peak memory per phase. Timings are CUDA-event medians over windows after warm-up (compilation
happens in the warm-up). The table comes last. `--variant` and `--inductor` change one thing
for a whole run, to compare runs (the prepared experiments are listed in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers import unet
from workers.accel import Accel, choose, place, prepare
from workers.config import DiffusionConfig
from workers.distill import distillation_loss, distillation_target
from workers.sampler import ddim_sample
from workers.teacher import EMA, diffusion_loss
from workers.training import GRAPH_WARMUP, GraphCaptureError, Updater, sample_batch
from workers.unet import UNet, UNetConfig, count_parameters, preset_config

DIFFUSION = DiffusionConfig(output="x", weighting="truncated_snr")
STUDENT_STEPS = 4  # a mid-campaign round (8 → 4); the update's cost does not depend on it
SAMPLE_STEPS = 4
# bf16 tolerance of the correctness check (relative to the fp32 path's values).
LOSS_RTOL = 1e-2
GRAD_RTOL = 8e-2
GRAD_MIN_COS = 0.997

_nhwc_norm = unet.GroupNorm.forward
# `--variant`: the U-Net's channels_last code changed for one run, to measure its parts apart
# (applied before any network is built, to every row of the run; the project's code is unchanged).
VARIANTS: dict[str, Callable[[], None]] = {
    # PyTorch's GroupNorm kernel (its output NCHW): the norm part of the layout change undone.
    "gn-torch": lambda: setattr(unet.GroupNorm, "forward", torch.nn.GroupNorm.forward),
    # torch.cat of the skips as written: the concatenation part of the layout change undone.
    "cat-nchw": lambda: setattr(unet, "_cat_channels", lambda a, b: torch.cat([a, b], dim=1)),
    # The channels_last norm's output in its input's dtype (bf16 under autocast), not fp32:
    # half the bytes for the SiLU/FiLM kernels after it and for what the backward keeps.
    "gn-low-out": lambda: setattr(
        unet.GroupNorm, "forward", lambda self, x: _nhwc_norm(self, x).to(x.dtype)
    ),
    # The norms' statistics per (image, group) everywhere, as before 2026-11-28: the graphed
    # update's per-channel statistics (`unet.GroupNorm.per_channel_stats`) undone.
    "gn-group-stats": lambda: setattr(
        unet.GroupNorm, "per_channel_stats", property(lambda self: False, lambda self, v: None)
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Timer:
    """Seconds of device work between `start()` and `stop()` (CUDA events; a host clock on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def run(self, fn: Callable[[], Any], iters: int) -> float:
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(iters):
                fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1000.0
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    name: str,
    fn: Callable[[], Any],
    *,
    device: torch.device,
    images_per_call: int,
    warmup: int,
    iters: int,
    windows: int,
) -> dict[str, float]:
    """Median images/s over `windows` windows of `iters` calls, after `warmup` calls."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    warm_s = time.perf_counter() - t0
    timer = Timer(device)
    rates = [images_per_call * iters / timer.run(fn, iters) for _ in range(windows)]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    out = {
        "img_s": statistics.median(rates),
        "spread": (max(rates) - min(rates)) / statistics.median(rates),
        "warmup_s": warm_s,
        "peak_gib": peak,
    }
    log(
        f"{name}: {out['img_s']:,.0f} img/s (windows {', '.join(f'{r:,.0f}' for r in rates)}); "
        f"warm-up incl. compile {warm_s:.1f} s; peak {peak:.1f} GiB"
    )
    return out


@contextlib.contextmanager
def reported(name: str) -> Iterator[None]:
    """Run a phase; if it fails, log why (with the traceback's end) and go on to the next."""
    try:
        yield
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc)[-12:])
        log(f"{name} FAILED: {type(exc).__name__}: {exc}\n{tb}"[:4000])


def bench_config(tiny: bool) -> UNetConfig:
    """The `cifar10` preset (the teacher's dropout 0.2), or a tiny U-Net for the CPU check."""
    if tiny:
        return UNetConfig(
            image_size=16, in_channels=3, out_channels=3, ch=32, ch_mult=(1, 1),
            num_res_blocks=1, attn_resolutions=(8,), dropout=0.2,
        )  # fmt: skip
    return preset_config("cifar10", image_size=32, in_channels=3, out_channels=3)


def lively(net: UNet, seed: int) -> UNet:
    """Give the zero-initialised output layers small random weights: a fresh U-Net predicts
    exactly 0, which would make the check and the timings trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return net


def flops_per_image(cfg: UNetConfig, device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one image, counted by PyTorch's FlopCounterMode."""
    net = UNet(cfg).to(device)
    z = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    logsnr = torch.zeros(2, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(z, logsnr)
    fwd = fc.get_total_flops() / 2
    with FlopCounterMode(display=False) as fc:
        net(z, logsnr).square().mean().backward()
    return fwd, fc.get_total_flops() / 2


def distill_step(
    student: UNet,
    teacher: UNet,
    data: torch.Tensor,
    batch: int,
    accel: Accel,
    losses: list[torch.Tensor] | None = None,
) -> Callable[[], None]:
    """One distillation update per call, as the project runs it (`accel.graphs`: one CUDA graph)."""
    gen = torch.Generator(accel.device).manual_seed(1)
    updater = Updater(student, lr=5e-5, lr_scale=lambda i: 1.0, grad_clip=1.0, what="bench",
                      graph=accel.graphs, generators=(gen,))  # fmt: skip

    def loss_fn() -> torch.Tensor:
        x = sample_batch(data, batch_size=batch, generator=gen)
        return distillation_loss(
            student, teacher, x=x, student_steps=STUDENT_STEPS, diffusion=DIFFUSION, generator=gen
        )

    def step() -> None:
        loss = updater.update(loss_fn)
        if losses is not None:
            losses.append(loss)

    return step


def graph_matches_eager(student: UNet, teacher: UNet, data: torch.Tensor, batch: int,
                        fast: Accel, updates: int = 8) -> dict[str, float]:  # fmt: skip
    """The same `updates` updates from the same weights and seed, eager and as graph replays:
    their losses and their weights' changes agree (to the run-to-run noise of cuDNN)."""
    start = copy.deepcopy(student.state_dict())
    runs = []
    for accel in (replace(fast, graphs=False), fast):
        student.load_state_dict(start)
        losses: list[torch.Tensor] = []
        step = distill_step(student, teacher, data, batch, accel, losses)
        for _ in range(updates):
            step()
        runs.append((torch.stack(losses), {k: v.clone() for k, v in student.state_dict().items()}))
    (l_eager, w_eager), (l_graph, w_graph) = runs
    d_eager = torch.cat([(w_eager[k] - start[k]).float().flatten() for k in start])
    d_graph = torch.cat([(w_graph[k] - start[k]).float().flatten() for k in start])
    out = {
        "loss_rel": float(((l_graph - l_eager).abs() / l_eager.abs()).max()),
        "delta_rel": float((d_graph - d_eager).norm() / d_eager.norm()),
    }
    out["ok"] = float(out["loss_rel"] <= 1e-2 and out["delta_rel"] <= 5e-2)
    student.load_state_dict(start)
    return out


def check(
    ref: tuple[UNet, UNet], fast: tuple[UNet, UNet], data: torch.Tensor, batch: int
) -> dict[str, float]:
    """One distillation loss and its gradients on identical (x, ε, i), fast vs fp32."""
    gen = torch.Generator(data.device).manual_seed(7)
    x = sample_batch(data, batch_size=batch, generator=gen)
    eps = torch.randn(x.shape, generator=gen, device=x.device)
    i = torch.randint(0, STUDENT_STEPS, (batch,), generator=gen, device=x.device)
    results = []
    for student, teacher in (ref, fast):
        student.zero_grad(set_to_none=True)
        loss = distillation_loss(
            student,
            teacher,
            x=x,
            student_steps=STUDENT_STEPS,
            diffusion=DIFFUSION,
            eps=eps,
            i=i,
        )
        loss.backward()
        grads = torch.cat(
            [p.grad.float().flatten() for p in student.parameters() if p.grad is not None]
        )
        results.append((float(loss.detach()), grads))
    (loss_ref, g_ref), (loss_fast, g_fast) = results
    out = {
        "loss_fp32": loss_ref,
        "loss_fast": loss_fast,
        "loss_rel": abs(loss_fast - loss_ref) / abs(loss_ref),
        "grad_rel": float((g_fast - g_ref).norm() / g_ref.norm()),
        "grad_cos": float(torch.nn.functional.cosine_similarity(g_fast, g_ref, dim=0)),
    }
    out["ok"] = float(
        out["loss_rel"] <= LOSS_RTOL
        and out["grad_rel"] <= GRAD_RTOL
        and out["grad_cos"] >= GRAD_MIN_COS
        and bool(g_fast.isfinite().all())
    )
    return out


def ceilings(device: torch.device, cfg: UNetConfig, batch: int) -> dict[str, float]:
    """Measured TFLOP/s of a large bf16 matmul and of one top-level 3×3 conv (bf16, NHWC)."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    timer = Timer(device)
    for _ in range(3):
        a @ b
    sync(device)
    mm = 2 * n**3 * 10 / timer.run(lambda: a @ b, 10) / 1e12
    c, s = cfg.ch, cfg.image_size
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device, torch.bfloat16)
    conv = conv.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    h = torch.randn(batch, c, s, s, device=device, dtype=torch.bfloat16)
    h = h.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(3):
            conv(h)
        sync(device)
        sec = timer.run(lambda: conv(h), 20) / 20
    conv_flops = 2 * batch * s * s * c * c * 9
    return {"matmul_tflops": mm, "conv_tflops": conv_flops / sec / 1e12}


def host_syncs(step: Callable[[], None], device: torch.device) -> str:
    """'none' if one call of `step` makes no host-device synchronisation, else the first one."""
    if device.type != "cuda":
        return "n/a on CPU"
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return "none"
    except RuntimeError as exc:
        return str(exc).splitlines()[0][:200]
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()


def capture_refusal(device: torch.device) -> str:
    """What `Updater` raises when the update it captures synchronises with the host, and
    whether CUDA still works in this process afterwards."""
    if device.type != "cuda":
        return "n/a on CPU"
    net = torch.nn.Linear(64, 64).to(device)
    updater = Updater(net, lr=1e-3, lr_scale=lambda i: 1.0, grad_clip=1.0, what="bench",
                      graph=True)  # fmt: skip
    x = torch.randn(32, 64, device=device)

    def loss_fn() -> torch.Tensor:
        loss = net(x).square().mean()
        return loss * 2 if bool(loss > 0) else loss  # a host synchronisation: `if tensor`

    try:
        for _ in range(GRAPH_WARMUP + 1):
            updater.update(loss_fn)
        raised = "no error: the capture took a host synchronisation"
    except GraphCaptureError as exc:
        raised = f"GraphCaptureError: {exc}"
    try:
        after = f"CUDA after it: ok ({float(torch.ones(4, device=device).sum()):.0f})"
    except RuntimeError as exc:
        after = f"CUDA after it: broken ({str(exc).splitlines()[0][:160]})"
    return f"{raised} | {after}"


def profile(step: Callable[[], None], device: torch.device, out: Path) -> None:
    """Kernel tables of 3 calls of `step`: by name, and the ops by input shape (which copies)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
        for _ in range(3):
            step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    (out / "profile.txt").write_text(
        prof.key_averages().table(sort_by=key, row_limit=80, max_name_column_width=120)
    )
    (out / "profile_shapes.txt").write_text(
        prof.key_averages(group_by_input_shape=True).table(
            sort_by=key, row_limit=80, max_name_column_width=60, max_shapes_column_width=120
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny U-Net and batch (CPU check)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=10, help="calls per timing window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of: teacher,sampling,profile,launched")
    ap.add_argument(
        "--cudnn-limit",
        type=int,
        default=None,
        help="torch.backends.cudnn.benchmark_limit: how many convolution algorithms cuDNN times "
        "per shape (PyTorch's default 10; 0: all of them)",
    )
    ap.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set torch._inductor.config.KEY (Python literal VALUE) before anything compiles, "
        "e.g. coordinate_descent_tuning=True; repeatable",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="an experiment on the U-Net's layout code (see VARIANTS); repeatable",
    )
    ap.add_argument("--out", type=Path, default=None, help="results.json and profile.txt here")
    args = ap.parse_args()
    for name in args.variant:
        VARIANTS[name]()
    skip = set(filter(None, args.skip.split(",")))
    if args.cudnn_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.cudnn_limit
    inductor = dict(item.split("=", 1) for item in args.inductor)
    for key, value in inductor.items():
        if not hasattr(torch._inductor.config, key):
            print(f"--inductor {key}: torch._inductor.config has no such setting", file=sys.stderr)
            return 2
        setattr(torch._inductor.config, key, ast.literal_eval(value))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --tiny for the CPU check", file=sys.stderr)
        return 2
    cfg = bench_config(args.tiny)
    if args.tiny:
        args.batch, args.sample_batch = min(args.batch, 8), min(args.sample_batch, 16)
        args.iters = min(args.iters, 2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params": count_parameters(UNet(cfg)),
        "batch": args.batch,
        "sample_batch": args.sample_batch,
        "date": time.strftime("%Y-%m-%d"),
        "cudnn_benchmark_limit": torch.backends.cudnn.benchmark_limit,
        "inductor": inductor,
        "variants": args.variant,
    }
    log(f"{info}")
    fwd, fwd_bwd = flops_per_image(cfg, device)
    update_flops = 2 * fwd + fwd_bwd  # two teacher forwards + the student's forward and backward
    log(f"GFLOP/image: forward {fwd / 1e9:.1f}, update {update_flops / 1e9:.1f}")
    gen = torch.Generator(device).manual_seed(0)
    data = torch.rand((4096, cfg.in_channels, cfg.image_size, cfg.image_size), generator=gen,
                      device=device) * 2 - 1  # fmt: skip
    student_cfg = cfg.replace(dropout=0.0)
    teacher0 = lively(UNet(student_cfg), seed=1).eval().requires_grad_(False)
    student0 = copy.deepcopy(teacher0).requires_grad_(True)
    with torch.no_grad():
        for p in student0.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    plain, fast = choose("off", device), choose("on", device)
    rows: dict[str, dict[str, float]] = {}
    result: dict[str, Any] = {"info": info, "rows": rows}

    def record(name: str, fn: Callable[[], Any], *, images: int, flop: float, **kw: int) -> None:
        """Time `fn` into `rows[name]` and save everything so far (a cut-off run keeps it)."""
        kw = {"warmup": 3, "iters": args.iters, "windows": args.windows} | kw
        rows[name] = measure(name, fn, device=device, images_per_call=images, **kw)
        rows[name]["tflops"] = rows[name]["img_s"] * flop / 1e12
        if args.out:
            (args.out / "results.json").write_text(json.dumps(result, indent=2))

    # 1. Correctness, fp32 reference with TF32 off; the fast nets are the ones timed below.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ref = place(copy.deepcopy(student0), plain), place(copy.deepcopy(teacher0), plain)
    fast_nets = prepare(copy.deepcopy(student0), fast), prepare(copy.deepcopy(teacher0), fast)
    t0 = time.perf_counter()
    result["check"] = checked = check(ref, fast_nets, data, args.batch)
    log(f"correctness (incl. compile {time.perf_counter() - t0:.0f} s): {checked}")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    del ref

    # 2. The distillation update: PyTorch's defaults (fp32 eager, cuDNN's default algorithm
    # choice), the compiled networks launched from the host, then the project's path (the
    # checked networks, the whole update replayed as one CUDA graph).
    torch.backends.cudnn.benchmark = False
    s, t = place(copy.deepcopy(student0), plain), place(copy.deepcopy(teacher0), plain)
    eager_step = distill_step(s.train(), t, data, args.batch, plain)
    record("distill fp32 eager", eager_step, images=args.batch, flop=update_flops,
           warmup=2, iters=max(1, args.iters // 2))  # fmt: skip
    del s, t, eager_step
    torch.backends.cudnn.benchmark = device.type == "cuda"
    student_f, teacher_f = fast_nets
    student_f.train()
    # Launched from the host (the path of a DDP update): networks of their own, prepared for it
    # (their compilation costs ~1.5 min more on a fresh machine).
    launched = choose("on", device, graphs=False)
    if "launched" not in skip:
        s = prepare(copy.deepcopy(student0), launched).train()
        t = prepare(copy.deepcopy(teacher0), launched)
        launched_step = distill_step(s, t, data, args.batch, launched)
        record("distill compiled", launched_step, images=args.batch, flop=update_flops)
        del launched_step, s, t
    if args.out and "profile" not in skip:
        profile(distill_step(student_f, teacher_f, data, args.batch, launched), device, args.out)
        log(f"kernel profiles in {args.out}/profile*.txt")
    fast_step = distill_step(student_f, teacher_f, data, args.batch, fast)
    syncs = "not measured"
    with reported("distill fast"):
        record("distill fast", fast_step, images=args.batch, flop=update_flops,
               warmup=GRAPH_WARMUP + 2)  # fmt: skip
        result["host_syncs"] = syncs = host_syncs(fast_step, device)
        log(f"host syncs inside the fast update: {syncs}")
    del fast_step
    if fast.graphs:
        with reported("graph check"):
            result["graph_check"] = graph_matches_eager(student_f, teacher_f, data, args.batch,
                                                        fast)  # fmt: skip
            log(f"graph replays vs eager updates: {result['graph_check']}")
    tgen = torch.Generator(device).manual_seed(3)

    def target_only() -> None:
        x = sample_batch(data, batch_size=args.batch, generator=tgen)
        t = torch.full((args.batch,), 0.5, device=device)
        distillation_target(teacher_f, z_t=x, t=t, student_steps=STUDENT_STEPS, output="x")

    record("teacher 2 fwd (fast)", target_only, images=args.batch, flop=2 * fwd)

    # 3. 4-step DDIM sampling at batch 1,024 (the student, eval mode).
    if "sampling" not in skip:
        noise = torch.randn((args.sample_batch, cfg.in_channels, cfg.image_size, cfg.image_size),
                            generator=tgen, device=device)  # fmt: skip

        def sample(net: UNet = student_f) -> torch.Tensor:
            return ddim_sample(net, noise=noise, num_steps=SAMPLE_STEPS, output="x")

        record("sample fast", sample, images=args.sample_batch, flop=SAMPLE_STEPS * fwd,
               warmup=2, iters=2)  # fmt: skip
        if fast.graphs:
            with reported("sample fast + graph"):
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    sample()
                record("sample fast + graph", graph.replay, images=args.sample_batch,
                       flop=SAMPLE_STEPS * fwd, warmup=1, iters=2)  # fmt: skip
                del graph
        torch.backends.cudnn.benchmark = False
        plain_student = place(copy.deepcopy(student0), plain)
        record("sample fp32 eager", lambda: sample(plain_student), images=args.sample_batch,
               flop=SAMPLE_STEPS * fwd, warmup=1, iters=1)  # fmt: skip
        del plain_student
        torch.backends.cudnn.benchmark = device.type == "cuda"

    # 4. Teacher training on the project's path (train mode, dropout 0.2, EMA).
    if "teacher" not in skip:
        net = place(lively(UNet(cfg), seed=2), fast)
        ema = EMA(net, 0.9999)
        prepare(net, fast)
        updater = Updater(net, lr=2e-4, lr_scale=lambda i: 1.0, grad_clip=1.0, what="bench",
                          after_step=ema.update, graph=fast.graphs, generators=(tgen,))  # fmt: skip
        net.train()

        def teacher_loss() -> torch.Tensor:
            x = sample_batch(data, batch_size=args.batch, generator=tgen)
            return diffusion_loss(net, x=x, diffusion=DIFFUSION, generator=tgen)

        with reported("teacher train fast"):
            record("teacher train fast", lambda: updater.update(teacher_loss), images=args.batch,
                   flop=fwd_bwd, warmup=GRAPH_WARMUP + 2)  # fmt: skip
        del net, ema, updater

    # 5. The card's ceilings.
    result["ceilings"] = ceil = ceilings(device, cfg, args.batch)
    log(f"ceilings: {ceil}")
    # 6. A capture that fails (last: it may leave this process's CUDA state unusable).
    result["capture_refusal"] = refusal = capture_refusal(device)
    log(f"a capture that synchronises: {refusal}")
    if args.out:
        (args.out / "results.json").write_text(json.dumps(result, indent=2))

    print()
    print(f"{info['device']} · torch {info['torch']} · {info['params'] / 1e6:.1f}M params · "
          f"batch {args.batch} · {info['date']}")  # fmt: skip
    print(f"{'phase':<24}{'img/s':>10}{'TFLOP/s':>10}{'spread':>8}{'peak GiB':>10}{'warm s':>8}")
    for name, row in rows.items():
        print(f"{name:<24}{row['img_s']:>10,.0f}{row['tflops']:>10.1f}{row['spread']:>8.1%}"
              f"{row['peak_gib']:>10.1f}{row['warmup_s']:>8.0f}")  # fmt: skip
    if "distill fast" in rows:
        result["speedup"] = rows["distill fast"]["img_s"] / rows["distill fp32 eager"]["img_s"]
        print(f"distill fast / fp32 eager: {result['speedup']:.2f}x")
    print(f"bf16 matmul {n_fmt(ceil['matmul_tflops'])} TFLOP/s, top-level 3x3 conv "
          f"{n_fmt(ceil['conv_tflops'])} TFLOP/s (bf16, NHWC, batch {args.batch})")  # fmt: skip
    print(f"host syncs inside the fast update: {syncs}")
    print(f"a capture that synchronises: {refusal}")
    if "graph_check" in result:
        gc = result["graph_check"]
        verdict = "PASS" if gc["ok"] else "FAIL"
        print(f"graph replays vs eager updates: loss rel {gc['loss_rel']:.1e} (≤ 1e-2), weight "
              f"change rel {gc['delta_rel']:.1e} (≤ 5e-2): {verdict}")  # fmt: skip
    print(f"correctness: loss rel {checked['loss_rel']:.1e} (≤ {LOSS_RTOL}), grad rel "
          f"{checked['grad_rel']:.1e} (≤ {GRAD_RTOL}), cos {checked['grad_cos']:.5f} "
          f"(≥ {GRAD_MIN_COS}): {'PASS' if checked['ok'] else 'FAIL'}")  # fmt: skip
    return 0 if checked["ok"] and result.get("graph_check", {"ok": 1})["ok"] else 1


def n_fmt(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2f}"


if __name__ == "__main__":
    torch.set_float32_matmul_precision("highest")
    sys.exit(main())
