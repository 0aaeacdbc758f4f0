"""A stage's first distillation update: compiled from nothing, and with the campaign's compile
cache (`orchestrator/compile_cache.py`: PyTorch's portable cache artifacts kept in storage).

    python bench/compile_cache.py [--out DIR]                  # on the GPU machine (cifar10)
    .venv/bin/python bench/compile_cache.py --device cpu --tiny  # here: the same at tiny size

Runs the project's fast update (bf16 autocast, channels_last, torch.compile; the `cifar10`
preset at batch 128 as in `bench/gpu.py`) once in each of two fresh processes, each with its own
empty Inductor and Triton cache folders, as two Ray workers on two nodes would: the first
compiles from nothing and saves the artifacts (`torch.compiler.save_cache_artifacts`), the
second loads them (`load_cache_artifacts`) before it compiles. Prints each one's first-update
time (compilation included), its Inductor cache hits and misses, and a table last. Imports
torch and `workers/` only (through `bench/gpu.py`), like `bench/gpu.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import bench_config, distill_step, lively, log, sync

from workers.accel import choose, prepare
from workers.unet import UNet


def first_update(device: torch.device, tiny: bool, batch: int) -> float:
    """Seconds of the fast path's first update (its compilation included)."""
    cfg = bench_config(tiny).replace(dropout=0.0)  # the student's U-Net, as in bench/gpu.py
    fast = choose("on", device)
    teacher = prepare(lively(UNet(cfg), seed=1).eval().requires_grad_(False), fast)
    student = prepare(lively(UNet(cfg), seed=1), fast).train()
    gen = torch.Generator(device).manual_seed(0)
    data = torch.rand((max(batch, 256), cfg.in_channels, cfg.image_size, cfg.image_size),
                      generator=gen, device=device) * 2 - 1  # fmt: skip
    step = distill_step(student, teacher, data, batch, fast)
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    from torch._dynamo.utils import counters

    loaded = None
    if args.child == "warm":
        loaded = torch.compiler.load_cache_artifacts(args.artifacts.read_bytes())
    seconds = first_update(torch.device(args.device), args.tiny, args.batch)
    saved = 0
    if args.child == "cold":
        got = torch.compiler.save_cache_artifacts()
        if got is not None:
            args.artifacts.write_bytes(got[0])
            saved = len(got[0])
    stats = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
    stats |= {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")}
    print(json.dumps({"seconds": seconds, "loaded": loaded is not None, "saved_bytes": saved,
                      **stats}))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny U-Net and batch (CPU check)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="compile_cache.json here")
    ap.add_argument("--child", choices=["cold", "warm"], help=argparse.SUPPRESS)
    ap.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny:
        args.batch = min(args.batch, 8)
    if args.child:
        child(args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --tiny for the CPU check", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp) / "artifacts.bin"
        for kind in ("cold", "warm"):
            env = {
                **os.environ,
                "TORCHINDUCTOR_CACHE_DIR": f"{tmp}/{kind}/inductor",
                "TRITON_CACHE_DIR": f"{tmp}/{kind}/triton",
            }
            cmd = [sys.executable, __file__, "--child", kind, "--artifacts", str(artifacts),
                   "--device", args.device, "--batch", str(args.batch)]  # fmt: skip
            cmd += ["--tiny"] if args.tiny else []
            log(f"{kind}: a fresh process, empty local compile caches")
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                return 1
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            log(f"{kind}: {results[kind]}")
    info = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "preset": "tiny" if args.tiny else "cifar10",
        "batch": args.batch,
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {"info": info, "results": results}
        (args.out / "compile_cache.json").write_text(json.dumps(report, indent=2))
    cold, warm = results["cold"], results["warm"]
    print(f"\n{info}")
    print("| first update | s | Inductor hits / misses | AOTAutograd hits / misses / bypasses |")
    print("|---|---|---|---|")
    for name, r in (("compiled from nothing", cold), ("with the compile cache", warm)):
        hits, misses = r.get("fxgraph_cache_hit", 0), r.get("fxgraph_cache_miss", 0)
        aot = [r.get(f"autograd_cache_{k}", 0) for k in ("hit", "miss", "bypass")]
        print(f"| {name} | {r['seconds']:.1f} | {hits} / {misses} | {' / '.join(map(str, aot))} |")
    print(f"| saved artifacts | {cold['saved_bytes'] / 2**20:.1f} MiB | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
