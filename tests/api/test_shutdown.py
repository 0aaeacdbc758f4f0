"""`pdistill serve` stopping while clients follow campaigns: their event streams end with a
reason at once, instead of being held for the grace period and then cut off mid-response (a
real server process, SIGTERM, a real streaming client)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from api_harness import ADMIN, TINY, ApiServer, api_env

from orchestrator import ray_head


def test_a_stopping_server_ends_the_open_event_streams_with_a_reason(
    ray_head_proc: ray_head.Head, tmp_path: Path, cache_dir: Path
) -> None:
    env = api_env(
        tmp=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'pdistill.db'}",
        head=ray_head_proc,
        storage_uri=str(tmp_path / "storage"),
        cache_dir=cache_dir,
    ) | {"PDISTILL_RECONCILE": "false"}  # the campaign stays queued: its stream stays open
    server = ApiServer(env, tmp_path / "serve.log")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            http.post("/v1/teams", json={"name": "vision", "gpu_quota": 0}, headers=admin)
            token = http.post("/v1/teams/vision/tokens", json={}, headers=admin).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            cid = http.post("/v1/campaigns", json=TINY, headers=auth).json()["id"]
            lines: list[str] = []
            opened = threading.Event()

            def follow() -> None:
                with http.stream("GET", f"/v1/campaigns/{cid}/events", headers=auth) as resp:
                    for line in resp.iter_lines():
                        lines.append(line)
                        if line.startswith("event: campaign"):
                            opened.set()

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            # `pdistill watch` follows it too, and says why its stream ended.
            watch = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "watch", cid],
                env=env | {"PDISTILL_API_TOKEN": token},
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert watch.stdout is not None
                assert "pending" in watch.stdout.readline()  # the teacher's line: it follows
                assert opened.wait(30), lines
                assert server.proc is not None
                server.proc.send_signal(signal.SIGTERM)
                reader.join(60)
                assert not reader.is_alive()
                said = [watch.stdout.readline() for _ in range(3)]
            finally:
                watch.kill()
        assert server.proc.wait(60) == 0, server.tail()
    finally:
        server.stop()
    assert "the API ended the event stream: the server is stopping\n" in said, said
    assert lines[-3:] == ["event: end", 'data: {"reason": "the server is stopping"}', ""], lines
    log = server.tail(100_000)
    assert "Exception in ASGI application" not in log and "CancelledError" not in log, log
