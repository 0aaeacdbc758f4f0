"""`pdistill serve` stopping while clients follow campaigns: their event streams end with a
reason at once, instead of being held for the grace period and then cut off mid-response (a
real server process, SIGTERM, a real streaming client and `pdistill watch`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from api_harness import TINY, idle_server

from orchestrator import ray_head


def test_a_stopping_server_ends_the_open_event_streams_with_a_reason(
    ray_head_proc: ray_head.Head, tmp_path: Path, cache_dir: Path
) -> None:
    with idle_server(head=ray_head_proc, tmp=tmp_path, cache_dir=cache_dir) as (server, env):
        auth = {"Authorization": f"Bearer {env['PDISTILL_API_TOKEN']}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            cid = http.post("/v1/campaigns", json=TINY).json()["id"]  # queued: it stays open
            lines: list[str] = []
            opened = threading.Event()

            def follow() -> None:
                with http.stream("GET", f"/v1/campaigns/{cid}/events") as resp:
                    for line in resp.iter_lines():
                        lines.append(line)
                        if line.startswith("event: campaign"):
                            opened.set()

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            # `pdistill watch` follows it too, and says why its stream ended.
            watch = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "watch", cid],
                env=env,
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
    assert lines[-3:] == ["event: end", 'data: {"reason": "the server is stopping"}', ""], lines
    assert "the API ended the event stream: the server is stopping\n" in said, said
    log = server.tail(100_000)
    assert "Exception in ASGI application" not in log and "CancelledError" not in log, log
