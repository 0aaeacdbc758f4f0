"""The local Ray head that `pdistill run` starts for itself (orchestrator.ray_cluster)."""

import os
import subprocess
import sys

# In a process of its own: this test session may have a Ray of its own initialised.
SCRIPT = """
import os
import urllib.error
import urllib.request
import ray
from orchestrator.ray_cluster import connect
from orchestrator.settings import Settings

with connect(Settings(), num_cpus=1) as where:
    api = os.environ["RAY_API_SERVER_ADDRESS"]
    try:  # the head's dashboard answers there (401 without Ray's token)
        code = urllib.request.urlopen(api + "/api/version", timeout=10).status
    except urllib.error.HTTPError as exc:
        code = exc.code
    print("INSIDE", where, api, code)
print("AFTER", os.environ.get("RAY_API_SERVER_ADDRESS", "unset"), ray.is_initialized())
"""


def test_a_local_head_knows_its_state_api_and_gives_the_variable_back_when_it_stops():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDISTILL_", "RAY_"))}
    env["RAY_API_SERVER_ADDRESS"] = "http://127.0.0.1:9"  # the user's other cluster
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    inside = next(line for line in proc.stdout.splitlines() if line.startswith("INSIDE")).split()
    assert " ".join(inside[1:-2]) == "a local Ray started for this run"
    assert inside[-2] != "http://127.0.0.1:9" and inside[-1] in ("200", "401")
    assert "AFTER http://127.0.0.1:9 False" in proc.stdout
