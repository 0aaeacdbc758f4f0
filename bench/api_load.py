"""Load on the control plane: 1,000 campaigns stored, 50 concurrent clients, 127.0.0.1 only.

    .venv/bin/python bench/api_load.py [--db sqlite|postgresql] [--campaigns 1000]
                                       [--clients 50] [--interval 1.0] [--seconds 60]

Starts the real app (`api.app.create_app`, uvicorn, one process) on a free loopback port with a
fresh store (a SQLite file, or a new database on the local PostgreSQL server) and the reconciler
off, so campaigns stay queued and only the API and the store are measured. Then, from this
process (the same 2 cores), `--clients` concurrent httpx clients:
1. fill: POST the campaigns back to back (each a valid spec; every fifth one with an
   Idempotency-Key) — a closed loop, so this phase measures the saturation throughput, and its
   latencies are concurrency / throughput (Little's law);
2. steady: each client sends one request every `--interval` seconds (random phase) for
   `--seconds`: 10% POST, 45% GET of a campaign, 45% GET of the first list page (50 items) —
   50 dashboards and CLIs polling at once. Latency under load: the targets are judged here.
Prints p50/p95/p99 per phase and kind, and stops by itself. Targets (issue #4): POST p95 ≤ 50 ms,
GET p95 ≤ 100 ms with store and API on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from orchestrator.ray_cluster import free_port

ADMIN = "bench-admin-token"
SPEC = {
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 30, "batch_size": 32}},
    "steps": {"start": 4, "target": 1},
    "distill": {"updates": 20, "batch_size": 16},
    "evaluation": {"samples": 32, "batch_size": 32},
}
SERVER = """
import sys, uvicorn
from api.app import create_app
from orchestrator.settings import Settings
app = create_app(Settings(), reconcile=False)
# Keep-alive longer than a client's pause, so a reused connection is never one the server has
# just closed (uvicorn's default is 5 s).
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            timeout_keep_alive=75)
"""


def percentiles(xs: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(xs, n=100, method="inclusive")
    return {"n": len(xs), "p50": qs[49], "p95": qs[94], "p99": qs[98], "max": max(xs)}


async def run_clients(
    url: str, token: str, *, campaigns: int, clients: int, interval: float, seconds: float
) -> dict[str, dict[str, list[float]]]:
    lat: dict[str, dict[str, list[float]]] = {"fill": {}, "steady": {}}
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def call(c: httpx.AsyncClient, phase: str, kind: int) -> None:
        if kind == 0:
            name, extra = "POST /v1/campaigns", {}
            if len(ids) % 5 == 0:
                extra = {"Idempotency-Key": uuid.uuid4().hex}
            req = c.post("/v1/campaigns", json={**SPEC, "name": f"load-{len(ids)}"}, headers=extra)
            want = 201
        elif kind == 1:
            name, want = "GET /v1/campaigns/{id}", 200
            req = c.get(f"/v1/campaigns/{random.choice(ids)}")
        else:
            name, want = "GET /v1/campaigns?limit=50", 200
            req = c.get("/v1/campaigns?limit=50")
        t = time.perf_counter()
        r = await req
        lat[phase].setdefault(name, []).append(time.perf_counter() - t)
        if r.status_code != want:
            raise RuntimeError(f"{name} answered {r.status_code}: {r.text[:300]}")
        if kind == 0:
            ids.append(r.json()["id"])

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:
        left = [campaigns]

        async def filler() -> None:
            while left[0] > 0:
                left[0] -= 1
                await call(c, "fill", 0)

        started = time.perf_counter()
        await asyncio.gather(*(filler() for _ in range(clients)))
        lat["fill_seconds"] = {"": [time.perf_counter() - started]}
        rng = random.Random(0)
        stop_at = time.perf_counter() + seconds

        async def poller() -> None:
            await asyncio.sleep(rng.uniform(0, interval))
            while time.perf_counter() < stop_at:
                due = time.perf_counter() + interval
                roll = rng.random()
                await call(c, "steady", 0 if roll < 0.1 else 1 if roll < 0.55 else 2)
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

        await asyncio.gather(*(poller() for _ in range(clients)))
    return lat


def fresh_database(kind: str, tmp: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'store.db'}", None
    import psycopg

    name = f"pdistill_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--campaigns", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db_url, pg_name = fresh_database(args.db, tmp)
        port = free_port()
        env = {
            **os.environ,
            "PDISTILL_DATABASE_URL": db_url,
            "PDISTILL_ADMIN_TOKEN": ADMIN,
            "PDISTILL_STORAGE_URI": str(tmp / "storage"),
            "PDISTILL_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "PDISTILL_STATE_DIR": str(tmp),
            "PDISTILL_RECONCILE": "false",
        }
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the API did not start")
                time.sleep(0.2)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            httpx.post(
                f"{url}/v1/teams", json={"name": "load", "gpu_quota": 8}, headers=admin
            ).raise_for_status()
            r = httpx.post(f"{url}/v1/teams/load/tokens", json={"name": "bench"}, headers=admin)
            r.raise_for_status()
            token = r.json()["token"]
            started = time.perf_counter()
            lat = asyncio.run(
                run_clients(
                    url,
                    token,
                    campaigns=args.campaigns,
                    clients=args.clients,
                    interval=args.interval,
                    seconds=args.seconds,
                )
            )
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
            if pg_name:
                drop_database(pg_name)
    fill_seconds = lat.pop("fill_seconds")[""][0]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "db": args.db,
        "campaigns": args.campaigns,
        "clients": args.clients,
        "interval_s": args.interval,
        "wall_s": round(wall, 1),
        "fill_throughput_per_s": round(args.campaigns / fill_seconds, 1),
        "ms": {
            phase: {
                k: {q: v if q == "n" else round(v * 1000, 1) for q, v in percentiles(xs).items()}
                for k, xs in kinds.items()
            }
            for phase, kinds in lat.items()
        },
        "load_average_1_5_15_at_end": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    steady = result["ms"]["steady"]
    post95 = steady["POST /v1/campaigns"]["p95"]
    get95 = max(v["p95"] for k, v in steady.items() if k.startswith("GET"))
    print(
        f"fill: {result['fill_throughput_per_s']} POST/s back to back; steady "
        f"({args.clients} clients, one request per {args.interval} s each): "
        f"POST p95 {post95} ms (target ≤ 50), GET p95 {get95} ms (target ≤ 100)"
    )


if __name__ == "__main__":
    main()
