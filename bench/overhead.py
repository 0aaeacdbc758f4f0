"""Overhead of a Ray campaign against the bare `local-run` loop: the same campaign, Tune off.

    .venv/bin/python bench/overhead.py [--spec bench/overhead.yaml] [--out runs/overhead]

1. `local-run` trains the teacher and runs the rounds in this process (the bare loop).
2. The same spec runs under Ray (a local head started here, one Train worker holding both CPUs,
   storage in a local folder, MLflow on SQLite), starting from the teacher of step 1, so both
   distil the same model.
Per round: Ray's train stage (one TorchTrainer.fit() with its checkpoints and MLflow logging)
minus the bare loop's training time is the per-round overhead; the gap between rounds is the
time from one train stage's end to the next one's start. The campaign wall compares both runs
without the teacher's training (which only the bare run does). Targets (issue #3): per-round
overhead ≤ 10 s median, campaign wall ≤ 1.2× bare with rounds of ≥ 2 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from api.progress import RichProgress
from orchestrator.campaign import run_campaign
from orchestrator.local import run_local
from orchestrator.ray_cluster import connect
from orchestrator.settings import Settings
from orchestrator.spec import load_spec, parse_spec
from orchestrator.stages import Campaign

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=HERE / "overhead.yaml")
    ap.add_argument("--out", type=Path, default=Path("runs/overhead"))
    ap.add_argument(
        "--reuse-bare",
        action="store_true",
        help="keep the bare loop's run and timing from an earlier run into --out; redo Ray only",
    )
    args = ap.parse_args()
    console = Console()
    out: Path = args.out.resolve()
    cache = Path.home() / ".cache" / "pdistill"
    spec = load_spec(args.spec)
    timing = out / "bare-timing.json"
    # A benchmark measures fresh runs, never resumed ones.
    for stale in (out / "ray-storage", out / "mlflow.db"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    if args.reuse_bare and timing.exists():
        local = json.loads((out / "local" / "report.json").read_text())
        local_wall = json.loads(timing.read_text())["wall_s"]
        console.print(f"[bold]1. bare loop[/]: reusing {out / 'local'} ({local_wall:.1f} s)")
    else:
        shutil.rmtree(out / "local", ignore_errors=True)
        console.print(f"[bold]1. bare loop[/] (local-run) into {out / 'local'}")
        t0 = time.perf_counter()
        with RichProgress(console) as progress:
            local = run_local(spec, out=out / "local", cache_dir=cache, progress=progress)
        local_wall = time.perf_counter() - t0
        timing.write_text(json.dumps({"wall_s": local_wall}))
    local_no_teacher = local_wall - local["teacher"]["train_seconds"]

    console.print("[bold]2. Ray[/]: the same rounds from the same teacher")
    data = spec.model_dump(mode="json")
    data["name"] = f"{spec.name}-ray"
    data["teacher"] = {"checkpoint": str(out / "local" / "teacher.safetensors")}
    ray_spec = parse_spec(data)
    settings = Settings(
        storage_uri=str(out / "ray-storage"),
        mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
        cache_dir=cache,
    )
    t0 = time.perf_counter()
    with connect(settings, num_cpus=os.cpu_count()):
        t1 = time.perf_counter()
        ray_report = run_campaign(ray_spec, settings, on_status=console.print, poll_s=1.0)
    ray_wall = time.perf_counter() - t1
    cluster_start = t1 - t0

    campaign = Campaign(ray_spec, settings)
    records = [campaign.record(f"round-{p.round}-train") or {} for p in campaign.plan]
    rows = []
    for p, loc, rec in zip(campaign.plan, local["rounds"], records, strict=True):
        rows.append(
            {
                "round": p.round,
                "updates": p.updates,
                "bare_train_s": loc["train_seconds"],
                "ray_train_s": rec["train_seconds"],
                "overhead_s": rec["train_seconds"] - loc["train_seconds"],
            }
        )
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(records)]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "spec": str(args.spec),
        "rounds": rows,
        "median_round_overhead_s": statistics.median(r["overhead_s"] for r in rows),
        "gaps_between_rounds_s": gaps,
        "bare_wall_s": local_wall,
        "bare_wall_without_teacher_s": local_no_teacher,
        "ray_wall_s": ray_wall,
        "ray_cluster_start_s": cluster_start,
        "wall_ratio": ray_wall / local_no_teacher,
        "load_average_1_5_15_at_end": os.getloadavg(),
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"),
        "fid": {
            "bare": [r["fid"] for r in local["rounds"]],
            "ray": [r["fid"] for r in ray_report["rounds"]],
        },
    }
    (out / "overhead.json").write_text(json.dumps(result, indent=2))

    table = Table(title=f"Ray vs bare loop ({result['machine']})")
    for col in ("round", "updates", "bare train s", "Ray train stage s", "overhead s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["round"]),
            str(r["updates"]),
            f"{r['bare_train_s']:.1f}",
            f"{r['ray_train_s']:.1f}",
            f"{r['overhead_s']:.1f}",
        )
    console.print(table)
    console.print(
        f"median per-round overhead {result['median_round_overhead_s']:.1f} s (target ≤ 10); "
        f"gaps between rounds {', '.join(f'{g:.1f}' for g in gaps)} s\n"
        f"campaign wall: bare {local_no_teacher:.1f} s without the teacher's "
        f"{local['teacher']['train_seconds']:.1f} s of training, Ray {ray_wall:.1f} s "
        f"(+{cluster_start:.1f} s to start the local head): "
        f"ratio {result['wall_ratio']:.2f} (target ≤ 1.2)\n"
        f"FID bare {result['fid']['bare']}, Ray {result['fid']['ray']}"
    )


if __name__ == "__main__":
    main()
