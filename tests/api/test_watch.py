"""`pdistill watch` into a pipe (a CI log, `nohup`): no bars there, so it prints a line when
a stage's status changes and at each tenth of its updates. The campaign's progress is written
to the store as its driver writes it; the API and the CLI are the real ones."""

from __future__ import annotations

import io
import queue
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from api_harness import TINY, idle_server, wait_for
from rich.console import Console

from api.client import Client
from api.watch import round_line, rounds_table, teacher_line, watch
from orchestrator import ray_head
from orchestrator.store import CampaignStatus, RoundStatus, Store

SPEC = TINY | {"name": "watched", "distill": TINY["distill"] | {"updates": 100}}


def test_watch_into_a_pipe_prints_each_tenth_of_a_round(
    ray_head_proc: ray_head.Head, tmp_path: Path, cache_dir: Path
) -> None:
    with idle_server(head=ray_head_proc, tmp=tmp_path, cache_dir=cache_dir) as (server, env):
        auth = {"Authorization": f"Bearer {env['PDISTILL_API_TOKEN']}"}
        cid = httpx.post(f"{server.url}/v1/campaigns", json=SPEC, headers=auth).json()["id"]
        command = [sys.executable, "-m", "api.cli", "watch", cid]
        watch = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        try:
            printed = _follow(watch, env["PDISTILL_DATABASE_URL"], cid)
            assert watch.wait(60) == 0
        finally:
            watch.kill()
    rounds = [line for line in printed if line.startswith("round 1")]
    assert rounds == [
        "round 1 (2→1 steps): pending, 0/100 updates",
        "round 1 (2→1 steps): training, 0/100 updates",
        "round 1 (2→1 steps): training, 25/100 updates",
        "round 1 (2→1 steps): training, 10/100 updates",
        "round 1 (2→1 steps): training, 100/100 updates",
        "round 1 (2→1 steps): succeeded, 100/100 updates",
    ], printed
    # The note of the restart, from the campaign's history: once, when it was read.
    notes = [line for line in printed if " running by driver: " in line]
    assert len(notes) == 1 and notes[0].endswith(f"running by driver: {RESTART}"), printed


RESTART = (
    "round 1's training started again (restart 1) from its saved update 10; update 27 had been "
    "logged"
)


def _follow(watch: subprocess.Popen[str], db: str, cid: str) -> list[str]:
    """Move the campaign step by step, each once `watch` printed the line of the one before;
    returns what it printed."""
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in watch.stdout or []])
    reader.daemon = True
    reader.start()
    printed: list[str] = []

    def printed_until(part: str) -> None:
        try:
            while part not in (line := lines.get(timeout=60)):
                printed.append(line.strip())
        except queue.Empty:
            pytest.fail(f"watch printed no line with {part!r}; it printed {printed}")
        printed.append(line.strip())

    with Store.from_url(db) as store:
        printed_until("round 1 (2→1 steps): pending")
        store.transition(cid, CampaignStatus.STARTING, actor="test", submission_id="j")
        store.transition(cid, CampaignStatus.RUNNING, actor="test")
        store.update_round(cid, 1, status=RoundStatus.TRAINING, updates_done=0)
        printed_until("training, 0/100")
        store.update_round(cid, 1, updates_done=25)
        printed_until("training, 25/100")
        store.update_round(cid, 1, updates_done=27)  # the same tenth: no line
        # The round's Train worker was lost: its training goes on from its checkpoint at 10.
        assert store.note(cid, RESTART, actor="driver", only_submission="j")
        store.update_round(cid, 1, updates_done=10)
        printed_until("training, 10/100")
        store.update_round(cid, 1, updates_done=100)
        printed_until("training, 100/100")
        store.update_round(cid, 1, status=RoundStatus.SUCCEEDED)
        store.transition(cid, CampaignStatus.SUCCEEDED, actor="test")
        printed_until(f"{cid} watched: succeeded")
    return printed


def test_watch_stops_without_a_word_when_its_caller_is_stopping(
    ray_head_proc: ray_head.Head, tmp_path: Path, cache_dir: Path
) -> None:
    """`pdistill demo` after Ctrl-C: its own API stops and ends the event stream; the watch in
    the demo's thread neither reports the stream's end nor tries to reconnect."""
    stopping = threading.Event()
    out = io.StringIO()
    codes: list[int] = []
    console = Console(file=out, width=200)
    with (
        idle_server(head=ray_head_proc, tmp=tmp_path, cache_dir=cache_dir) as (server, env),
        Client(server.url, env["PDISTILL_API_TOKEN"]) as client,
    ):
        cid = client.submit(SPEC | {"name": "interrupted"}, key="interrupted")["id"]
        follower = threading.Thread(
            target=lambda: codes.append(watch(client, cid, console, stopped=stopping.is_set))
        )
        follower.start()
        wait_for("watch's first line", out.getvalue, lambda s: "pending" in s, timeout=60)
        stopping.set()
        server.stop()  # SIGTERM: the server ends its event streams as it stops
        follower.join(30)
    assert not follower.is_alive(), out.getvalue()
    assert codes == [1]
    assert "ended the event stream" not in out.getvalue()
    assert "trying again" not in out.getvalue()


def test_an_evaluating_round_says_how_many_of_its_samples_are_drawn() -> None:
    r = {"k": 1, "teacher_steps": 4, "student_steps": 2, "updates_done": 10, "updates": 10}
    r |= {"status": "evaluating", "eval_samples": 64, "eval_samples_done": 16, "loss": 0.25}
    said = "round 1 (4→2 steps): evaluating, 10/10 updates, 16/64 samples, loss 0.25"
    assert round_line(r) == said
    # A round made before the store counted its samples (0 of 0) says nothing of them.
    assert "samples" not in round_line(r | {"eval_samples": 0, "eval_samples_done": 0})
    # The teacher's own evaluation, until its FID is known.
    t = {"source": "train", "status": "ready", "updates_done": 30, "updates": 30, "loss": 0.5}
    t |= {"steps": 4, "fid": None, "eval_samples": 32, "eval_samples_done": 16}
    said = "teacher: ready, 30/30 updates, loss 0.5, evaluating 16/32 samples"
    assert teacher_line(t) == said
    assert teacher_line(t | {"fid": 12.5}).endswith("loss 0.5, FID 12.50 at 4 steps")
    # `pdistill status`'s table too.
    console = Console(record=True, width=160)
    console.print(rounds_table({"id": "c-1", "name": "n", "status": "running", "teacher": t}, [r]))
    assert "evaluating 16/64" in console.export_text()
