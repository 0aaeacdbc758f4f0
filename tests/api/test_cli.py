"""The `pdistill` command line, run as a subprocess the way a user runs it."""

import itertools
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from orchestrator.ray_head import free_port

TINY = {
    "name": "cli-tiny",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "teacher": {"train": {"updates": 20, "batch_size": 16, "warmup_updates": 2}},
    "steps": {"start": 2, "target": 1},
    "distill": {"updates": 5, "batch_size": 16},
    "evaluation": {"samples": 32, "batch_size": 32},
}


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, timeout=600
    )


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command prints on stderr (beside what Ray logs there): one line, never
    wrapped (long paths stay whole), and an indented line per field of a spec it refuses."""
    lines = proc.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, proc.stdout + proc.stderr
    block = [lines[starts[0]]]
    block += itertools.takewhile(lambda line: line.startswith(" "), lines[starts[0] + 1 :])
    return "\n".join(block)


def test_local_run_prints_round_table_and_writes_report(tmp_path, cache_dir):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    proc = _cli("local-run", str(spec), "--out", str(out), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "distilled FID" in proc.stdout and "teacher" in proc.stdout
    # Not a terminal: each bar is a line now and then and at its end, evaluations' too.
    assert "teacher training: 20/20 updates, loss " in proc.stdout, proc.stdout
    assert "distilled at 1 steps: FID samples: 32/32 samples, eta 0s" in proc.stdout, proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert [r["steps"] for r in report["rounds"]] == [1]
    assert (out / "fid_vs_steps.png").exists()


def test_bad_spec_exits_2_naming_field_before_training(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "steps": {"start": 6, "target": 1}}))
    proc = _cli("local-run", str(spec), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    said = _error_line(proc)
    assert "steps.start" in said and "power of two" in said
    assert not (tmp_path / "o").exists()


def test_missing_spec_file_is_a_clear_error(tmp_path):
    proc = _cli("local-run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read spec" in _error_line(proc)


def test_run_rejects_bad_spec_before_starting_ray(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "resources": {"workers": 0}}))
    proc = _cli("run", str(spec))
    assert proc.returncode == 2
    said = _error_line(proc)
    assert "resources.workers" in said and "greater than 0" in said
    assert "Ray" not in proc.stdout + proc.stderr  # failed before connecting


def test_run_refuses_a_round_its_local_ray_cannot_hold(tmp_path):
    """A GPU spec on a machine without one would wait for ever; it is refused, naming why."""
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "resources": {"workers": 2, "gpus_per_worker": 64}}))
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PDISTILL_STORAGE_URI": str(tmp_path / "store")},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = _error_line(proc)
    assert "resources: a round needs 2 CPUs and 128 GPUs" in out
    assert re.search(r"gpus_per_worker=64\); the cluster has \d+ CPUs and \d+ GPUs", out), out
    assert not (tmp_path / "store").exists()  # nothing ran


def test_run_with_unusable_storage_is_one_error_line(tmp_path):
    spec = tmp_path / "bad-storage.yaml"
    (tmp_path / "a-file").write_text("")  # storage under a file: no directory can be made
    spec.write_text(yaml.safe_dump({**TINY, "storage": str(tmp_path / "a-file" / "store")}))
    proc = _cli("run", str(spec))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = _error_line(proc)
    assert f"error: cannot read {tmp_path}/a-file/store/campaigns/cli-tiny/spec.json" in said
    assert "Not a directory" in said and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["run", "serve", "demo"])
def test_an_unreachable_s3_endpoint_is_named_before_any_ray_head_starts(tmp_path, command):
    """Nothing listens on port 1: one quick request says so (the patient retries took ~100 s,
    and `serve` would have said so only at its first campaign)."""
    spec = tmp_path / "s3.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "storage": "s3://pdistill-probe/runs"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDISTILL_", "RAY_", "AWS_"))}
    env |= {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "PDISTILL_STORAGE_URI": "s3://pdistill-probe/runs",
            "PDISTILL_STATE_DIR": str(tmp_path / "state"),
            "PDISTILL_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}  # fmt: skip
    serving = ["--host", "127.0.0.1", "--port", str(free_port())]  # only the storage stops it
    args = {"run": [str(spec)], "serve": serving, "demo": [str(spec), *serving]}
    proc = subprocess.run([sys.executable, "-m", "api.cli", command, *args[command]],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: cannot reach s3://pdistill-probe/runs (S3 endpoint http://127.0.0.1:1)" in out
    assert "check AWS_ENDPOINT_URL and the AWS credentials" in out, out
    assert "Ray head" not in out and "campaign cli-tiny on" not in out and "Traceback" not in out
    assert not (tmp_path / "state" / "ray-head.json").exists()


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_taken_port_is_named_before_any_ray_head_starts(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PDISTILL_", "RAY_"))}
        env |= {
            "PDISTILL_STATE_DIR": str(tmp_path / "state"),
            "PDISTILL_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "api.cli", command, "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    out = " ".join(proc.stderr.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"error: cannot serve on 127.0.0.1:{port} (Address already in use)" in out, out
    assert "Ray head" not in proc.stdout + proc.stderr
    assert not (tmp_path / "state" / "ray-head.json").exists()
