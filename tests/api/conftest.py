"""Fixtures of the control-plane tests: databases (a SQLite file and the machine's PostgreSQL),
a Ray head in its own process (the API under test connects to it as it would to a cluster).

The Ray tests never call `ray.init` in the pytest process: the API subprocess does, so these
tests cannot disturb the session Ray of tests/orchestrator (nor its token settings)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from api_harness import BUCKET

from orchestrator import ray_head


# -- Ray ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_head_proc(
    tmp_path_factory: pytest.TempPathFactory,
    stop_after_directory: Callable[..., Callable[[], None]],
) -> Iterator[ray_head.Head]:
    """A 2-CPU Ray head with its dashboard (Jobs API), in its own process group; stopped after
    the last test of this folder."""
    head = ray_head.start(
        num_cpus=2,
        log_dir=tmp_path_factory.mktemp("ray-head"),
    )
    stop = stop_after_directory(Path(__file__).parent, lambda: ray_head.stop(head))
    try:
        yield head
    finally:
        stop()


@pytest.fixture(scope="session")
def api_bucket(s3_endpoint: str) -> str:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET
