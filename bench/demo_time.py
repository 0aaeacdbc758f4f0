"""Wall time of `make demo` (the control plane, a local Ray head, one Ray Job) from a fresh clone.

    python3 bench/demo_time.py [--clone /tmp/democlone] [--port 8000]

Clones this repository's HEAD into `--clone` (which must not exist), then runs `make demo` there
as a new user would: a fresh virtual environment, an empty state dir (store, MLflow, storage)
and an empty feature cache (the FID classifier is trained), both inside the clone. It prints the
demo's output with the seconds since the start, stops the demo with Ctrl-C once the campaign is
final, and prints when each part ended: install and head start, the teacher, each round, the
whole campaign. Needs an idle machine for honest figures; the port must be free.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MILESTONES = {
    "Ray head up (install included)": re.compile(r"(started|reusing) a local Ray head"),
    "campaign submitted": re.compile(r"^campaign c-\w+ \(.*\): queued"),
    "teacher ready": re.compile(r"^teacher: ready"),
    "round 1 succeeded": re.compile(r"^round 1 \(.*\): succeeded"),
    "round 2 succeeded": re.compile(r"^round 2 \(.*\): succeeded"),
    "round 3 succeeded": re.compile(r"^round 3 \(.*\): succeeded"),
    "campaign final": re.compile(r"^c-\w+ \S+: (succeeded|failed|cancelled)"),
}
FINAL = MILESTONES["campaign final"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clone", type=Path, default=Path("/tmp/democlone"))
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--timeout-min", type=float, default=90.0)
    args = ap.parse_args()
    if args.clone.exists():
        sys.exit(f"{args.clone} exists: give a new --clone folder (the run must start fresh)")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(args.clone)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.clone, capture_output=True, text=True
    ).stdout.strip()
    env = {
        **os.environ,
        "PDISTILL_STATE_DIR": str(args.clone / "state"),
        "PDISTILL_CACHE_DIR": str(args.clone / "cache"),
        "PDISTILL_API_PORT": str(args.port),
        "COLUMNS": "120",
    }
    start = time.monotonic()
    proc = subprocess.Popen(
        ["make", "demo"],
        cwd=args.clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: dict[str, float] = {}
    final = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        t = time.monotonic() - start
        print(f"{t:7.1f}s  {line}", end="", flush=True)
        for name, pattern in MILESTONES.items():
            if name not in seen and pattern.search(line.strip()):
                seen[name] = t
        if (m := FINAL.search(line.strip())) and not final:
            final = m.group(1)
            os.killpg(proc.pid, signal.SIGINT)  # the demo keeps serving until Ctrl-C
        if t > args.timeout_min * 60 and not final:
            final = "timed out"
            os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait()
    print(f"\n`make demo` in a fresh clone of {head}, {os.cpu_count()} CPUs; exit {code}")
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')}; load {os.getloadavg()}")
    print(f"{'milestone':34} {'s since start':>14}")
    for name in MILESTONES:
        print(f"{name:34} {seen.get(name, float('nan')):14.1f}")
    print(f"campaign: {final or 'not final'}")
    return 0 if final == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
