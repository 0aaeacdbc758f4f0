"""What a Ray Train run costs before and after its work: a bare `TorchTrainer.fit()`.

    .venv/bin/python bench/train_start.py [--workers 1] [--runs 3]

Each run's workers only report once, so its wall time is Train's own cost: the controller and
worker actors' start, the process group, and the controller noticing each change of state. The
controller notices only when it polls its workers (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`): the
runs are timed with Ray's default (2 s) and with the value `orchestrator.stages.run_train` sets
(`TRAIN_POLL_S`), alternately, in one local Ray cluster started here. The first run of all pays
for the cluster's first worker processes and is reported apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from orchestrator.stages import TRAIN_POLL_ENV, TRAIN_POLL_S


def _report_once(config: dict[str, int]) -> None:
    import ray.train

    ray.train.report({"rank": ray.train.get_context().get_world_rank()})


def bare_fit(workers: int, storage: str, name: str) -> float:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _report_once,
        scaling_config=ray.train.ScalingConfig(num_workers=workers),
        run_config=ray.train.RunConfig(name=name, storage_path=storage),
    )
    started = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per setting")
    args = ap.parse_args()

    from orchestrator.ray_cluster import init_local

    os.environ.pop(TRAIN_POLL_ENV, None)
    init_local(num_cpus=max(2, args.workers))
    settings = {"Ray's default (2 s)": None, f"pdistill's ({TRAIN_POLL_S} s)": TRAIN_POLL_S}
    times: dict[str, list[float]] = {k: [] for k in settings}
    console = Console()
    with tempfile.TemporaryDirectory() as storage:
        first = bare_fit(args.workers, storage, "warm-up")
        console.print(f"first run (cold worker processes, default poll): {first:.1f} s")
        for i in range(args.runs):
            for label, value in settings.items():
                if value is None:
                    os.environ.pop(TRAIN_POLL_ENV, None)
                else:
                    os.environ[TRAIN_POLL_ENV] = value
                seconds = bare_fit(args.workers, storage, f"run-{i}-{value or 'default'}")
                times[label].append(seconds)
                console.print(f"{label}: run {i + 1}: {seconds:.1f} s")

    table = Table(title=f"bare TorchTrainer.fit(), {args.workers} worker(s), {args.runs} runs each")
    table.add_column("controller poll")
    table.add_column("median s", justify="right")
    table.add_column("runs s")
    for label, xs in times.items():
        table.add_row(label, f"{statistics.median(xs):.1f}", ", ".join(f"{x:.1f}" for x in xs))
    console.print(table)
    console.print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
