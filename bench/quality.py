"""Quality benchmark: FID per step count, distilled vs DDIM teacher, with the real-data floor.

    .venv/bin/python bench/quality.py [--spec bench/mnist-quality.yaml] [--out runs/quality]

Runs (or resumes) the campaign with `pdistill local-run`'s code, then computes the real-data
floor (FID between two random halves of the dataset, same feature network) and checks the
targets of issue #2. Prints the table last. Budget: ≤ 60 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console

from api.cli import DEFAULT_CACHE, round_table
from api.progress import RichProgress
from orchestrator.local import feature_net, run_local
from orchestrator.spec import load_spec
from workers.accel import choose
from workers.data import load_dataset, split_dataset
from workers.fid import compute_stats, fid

HERE = Path(__file__).parent


def data_floor(spec_path: Path, cache_dir: Path) -> float:
    spec = load_spec(spec_path)
    ds = load_dataset(spec.dataset)
    net = feature_net(spec, ds, cache_dir, choose(spec.resources.fast_path).device)
    a, b = split_dataset(ds, fraction=0.5, seed=spec.seed)
    return fid(compute_stats(net, a.images), compute_stats(net, b.images))


def check_targets(report: dict, floor: float) -> list[tuple[str, float, str, bool]]:
    teacher = report["teacher"]["fid"]
    by_steps = {r["steps"]: r for r in report["rounds"]}
    checks = [
        (
            f"PD@{s} < DDIM@{s}",
            by_steps[s]["fid"],
            f"< {by_steps[s]['ddim_fid']:.2f}",
            by_steps[s]["fid"] < by_steps[s]["ddim_fid"],
        )
        for s in sorted(by_steps, reverse=True)
    ]
    for s, bound in ((8, 1.2), (4, 1.5), (2, 2.0)):
        if s in by_steps:
            ratio = by_steps[s]["fid"] / teacher
            checks.append((f"PD@{s} / teacher", ratio, f"≤ {bound}", ratio <= bound))
    if 1 in by_steps:
        ratio = by_steps[1]["ddim_fid"] / by_steps[1]["fid"]
        checks.append(("DDIM@1 / PD@1", ratio, "≥ 3", ratio >= 3))
    checks.append(("real-data floor (FID of halves)", floor, "(reference)", True))
    return checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=HERE / "mnist-quality.yaml")
    ap.add_argument("--out", type=Path, default=Path("runs/quality"))
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    console = Console()
    torch.set_num_threads(2)
    started = time.perf_counter()
    with RichProgress(console) as progress:
        report = run_local(
            load_spec(args.spec), out=args.out, cache_dir=args.cache_dir, progress=progress
        )
    floor = data_floor(args.spec, args.cache_dir)
    wall = time.perf_counter() - started
    checks = check_targets(report, floor)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads",
        "wall_seconds": wall,
        "report": report,
        "floor": floor,
        "checks": [dict(zip(("check", "value", "target", "ok"), c, strict=True)) for c in checks],
    }
    (args.out / "quality.json").write_text(json.dumps(result, indent=2))
    console.print(round_table(report))
    for name, value, target, ok in checks:
        console.print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.3f} {target}")
    console.print(f"wall time {wall / 60:.1f} min; results in {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
