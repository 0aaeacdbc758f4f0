"""What a campaign leaves in its storage, by part: `pdistill run SPEC` (a local Ray head started
for it, storage in a fresh local folder, MLflow on SQLite), then the bytes under each part of the
campaign's folder.

    .venv/bin/python bench/storage_size.py [--spec bench/storage.yaml] [--out runs/storage-size]

The parts: the teacher, each round's student, samples, stage records, reference statistics,
the compile cache, `ray/` (what Ray Train and Tune keep of the rounds: removed once a round's
student is stored) and MLflow's artifacts.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("bench/storage.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/storage-size"))
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = os.environ | {
        "PDISTILL_STORAGE_URI": str(out / "storage"),
        "PDISTILL_MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
        "PDISTILL_STATE_DIR": str(out / "state"),
    }
    env.pop("PDISTILL_RAY_ADDRESS", None)  # a local head, started for this run
    started = datetime.now(UTC)
    run = subprocess.run([sys.executable, "-m", "api.cli", "run", str(args.spec)], env=env)
    if run.returncode != 0:
        sys.exit(f"pdistill run exited {run.returncode}")
    storage = out / "storage"
    (campaign,) = (storage / "campaigns").iterdir()
    table = Table(title=f"{campaign.name}: storage after the campaign ({args.spec})")
    table.add_column("part")
    table.add_column("bytes", justify="right")
    parts = [*sorted(campaign.iterdir()), storage / "mlflow-artifacts"]
    for part in parts:
        if part.exists():
            table.add_row(str(part.relative_to(storage)), f"{_size(part):,}")
    table.add_row("total", f"{_size(storage):,}")
    console = Console()
    console.print(table)
    ray = campaign / "ray"
    left = sorted(p.name for p in ray.iterdir()) if ray.exists() else []
    console.print(f"runs left under ray/: {left or 'none'}")
    console.print(f"{platform.node()}, {os.cpu_count()} CPUs, started {started:%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
