"""Why a Ray round is slower than the bare loop on a small CPU machine: one update, three places.

    .venv/bin/python bench/ray_noise.py [--updates 40] [--preset mnist-tiny] [--batch 64]

Times the distillation update of `bench/overhead.yaml` (median seconds per update, after 3
warm-up updates) with 1 and with 2 torch threads:
1. alone (no Ray on the machine);
2. in this process while a local Ray head (with its dashboard, as `pdistill run` starts it)
   idles beside it;
3. inside a Ray Train V2 worker (one worker holding every CPU), as a campaign round runs it.
During 2 and 3 it counts the context switches per second of every Ray process (from /proc):
each is a wake-up that takes a core from the update for a moment. With as many torch threads as
cores, every parallel operator waits for its slowest thread, so a wake-up on either core stalls
both; a single thread only loses the wake-up's own time. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

WARMUP = 3


def time_updates(*, updates: int, threads: int, preset: str, batch: int) -> float:
    """Median seconds per distillation update (v output, 2 student steps) on mnist5k."""
    from workers.config import DiffusionConfig
    from workers.data import load_dataset
    from workers.distill import distillation_loss
    from workers.training import Updater, sample_batch
    from workers.unet import UNet, preset_config

    torch.set_num_threads(threads)
    images = load_dataset("builtin:mnist5k").images
    channels = images.shape[1]
    cfg = preset_config(
        preset, image_size=images.shape[2], in_channels=channels, out_channels=channels
    )
    teacher, student = UNet(cfg), UNet(cfg)
    student.load_state_dict(teacher.state_dict())
    teacher.eval().requires_grad_(False)
    diffusion = DiffusionConfig("v", "snr_plus_one")
    updater = Updater(student, lr=1e-4, lr_scale=lambda i: 1.0, grad_clip=1.0, what="bench")
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(updates + WARMUP):
        t0 = time.perf_counter()
        x = sample_batch(images, batch_size=batch, generator=gen)
        loss = distillation_loss(
            student, teacher, x=x, student_steps=2, diffusion=diffusion, generator=gen
        )
        updater.step(loss)
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds[WARMUP:])


def _switches() -> dict[int, tuple[int, str]]:
    """Context switches so far of every process whose command line mentions ray."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            if "ray" not in cmd or "ray_noise" in cmd:
                continue
            total = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
            out[int(pid)] = (total, cmd.split()[0] if cmd.startswith("ray::") else cmd[:60])
        except OSError:
            continue
    return out


def ray_wakeups(during: Callable[[], Any], *, settle_s: float = 10.0) -> tuple[Any, int, float]:
    """Run `during` in a thread; after `settle_s`, count Ray's processes and their context
    switches per second over the next 10 s (or until it ends). Returns (result, processes, /s)."""
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", during()))
    worker.start()
    worker.join(settle_s)
    a, t0 = _switches(), time.perf_counter()
    worker.join(10.0)
    b, dt = _switches(), time.perf_counter() - t0
    worker.join()
    rate = sum(b[p][0] - a[p][0] for p in b if p in a) / dt
    return box["r"], len(b), rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=40)
    ap.add_argument("--preset", default="mnist-tiny")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    kw = {"updates": args.updates, "preset": args.preset, "batch": args.batch}
    console = Console()
    rows: list[tuple[str, int, float, str]] = []
    for threads in (1, 2):
        rows.append(("alone", threads, time_updates(threads=threads, **kw), "—"))
        console.print(rows[-1])

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.ray_cluster import init_local

    cpus = os.cpu_count() or 1
    init_local(cpus)
    time.sleep(5)  # let the head's start-up work finish
    for threads in (1, 2):
        s, procs, rate = ray_wakeups(lambda t=threads: time_updates(threads=t, **kw))
        rows.append(("beside an idle Ray head", threads, s, f"{procs} processes, {rate:.0f}/s"))
        console.print(rows[-1])

    def in_train_worker(threads: int) -> float:
        # Train V2 keeps only checkpointed metrics in its Result: the worker writes a file (the
        # cluster is this machine).
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "seconds"

            def loop(_: dict[str, Any]) -> None:
                out.write_text(str(time_updates(threads=threads, **kw)))

            TorchTrainer(
                loop,
                scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
                run_config=RunConfig(name=f"noise-{threads}", storage_path=d),
            ).fit()
            return float(out.read_text())

    for threads in (1, 2):
        s, procs, rate = ray_wakeups(lambda t=threads: in_train_worker(t), settle_s=15.0)
        rows.append(("in a Ray Train worker", threads, s, f"{procs} processes, {rate:.0f}/s"))
        console.print(rows[-1])
    ray.shutdown()

    machine = f"{platform.machine()}, {cpus} CPUs, torch {torch.__version__}"
    table = Table(title=f"distillation update, {args.preset} batch {args.batch} ({machine})")
    for col in ("where", "torch threads", "s / update", "vs alone", "Ray processes, switches"):
        table.add_column(col, justify="right")
    alone = {t: s for where, t, s, _ in rows if where == "alone"}
    for where, threads, s, noise in rows:
        table.add_row(where, str(threads), f"{s:.3f}", f"{s / alone[threads]:.2f}×", noise)
    console.print(table)
    console.print(f"{datetime.now(UTC).isoformat(timespec='seconds')}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
