"""torch.compile's results shared through campaign storage: a process with an empty local
compile cache looks up what another process compiled instead of compiling it (real
torch.compile with Inductor on the CPU, each process with its own TORCHINDUCTOR_CACHE_DIR;
local storage, and S3 on moto_server for listing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from orchestrator.compile_cache import CompileCache
from orchestrator.storage import Storage

# Compiles a small conv net (forward and backward) at each batch size given, then saves what
# it compiled into the folder; prints Inductor's cache counters and what load/save did.
STAGE = """
import json, sys, torch
from torch import nn
from torch._dynamo.utils import counters
from orchestrator.compile_cache import CompileCache
from orchestrator.storage import Storage
cache = CompileCache(Storage(sys.argv[1]), "campaigns/c/compile-cache")
loaded = cache.load()
class Net(nn.Module):  # a model of our own: Dynamo does not trace torch.nn's own frames
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
    def forward(self, x):
        return self.b(torch.nn.functional.silu(self.norm(self.a(x))))
torch.manual_seed(0)
net = Net()
net.compile(dynamic=False)
for batch in map(int, sys.argv[2:]):
    net(torch.randn(batch, 1, 8, 8)).mean().backward()
stats = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
print(json.dumps({"loaded": loaded, "saved": cache.save(), **stats}))
"""


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint) -> str:
    boto3.client("s3").create_bucket(Bucket="pdistill-compile")
    return "pdistill-compile"


def _stage(root: str, tmp: Path, *batches: int) -> dict:
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(tmp / f"inductor-{len(list(tmp.iterdir()))}"),
    }
    out = subprocess.run(
        [sys.executable, "-c", STAGE, root, *map(str, batches)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_stage_looks_up_what_an_earlier_stage_compiled(tmp_path) -> None:
    root = str(tmp_path / "storage")
    work = tmp_path / "work"
    work.mkdir()
    first = _stage(root, work, 4)
    assert first["loaded"] == 0 and first["fxgraph_cache_miss"] >= 1 and first["saved"]
    assert "fxgraph_cache_hit" not in first

    # Another process, its own empty local cache: batch 4 is looked up; batch 6 is new, and
    # what it compiled is saved beside the first file.
    second = _stage(root, work, 4, 6)
    assert second["loaded"] == 1
    assert second["fxgraph_cache_hit"] >= 1 and second["fxgraph_cache_miss"] >= 1
    assert second["saved"] not in (None, first["saved"])
    folder = "campaigns/c/compile-cache"
    assert Storage(root).list(folder) == sorted([first["saved"], second["saved"]])


def test_storage_lists_a_folder_on_s3(s3_bucket) -> None:
    storage = Storage(f"s3://{s3_bucket}/cc")
    assert storage.list("folder") == []  # none yet
    for name in ("b.bin", "a.bin", "sub/c.bin"):
        storage.write_bytes(f"folder/{name}", b"x")
    assert storage.list("folder") == ["a.bin", "b.bin"]  # files directly in it, sorted


def test_an_unreadable_cache_costs_only_a_compile(tmp_path) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes("cc/broken.bin", b"not a cache")
    cache = CompileCache(storage, "cc")
    assert cache.load() == 0  # PyTorch logs a warning and skips it
    assert CompileCache(None, "cc").load() == 0  # no storage: nothing to do
    assert CompileCache(storage, "cc", enabled=False).save() is None
