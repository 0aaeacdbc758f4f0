"""Connecting to Ray: the cluster at settings.ray_address, or a local head started on the fly."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from orchestrator.settings import Settings


@contextlib.contextmanager
def connect(settings: Settings, *, num_cpus: int | None = None) -> Iterator[str]:
    """Yield a description of the cluster; a local head started here is shut down on exit.

    A local head gets a random GCS port (`ray.init` never takes 6379, which Redis holds here).
    """
    import ray

    if ray.is_initialized():
        yield "the connected Ray cluster"
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        where = f"Ray at {settings.ray_address}"
    else:
        # The dashboard serves the state API, which Train's PlacementGroupCleaner needs to free
        # the workers of a Tune trial that was stopped mid-run; without it they leak.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=True,
            log_to_driver=False,
        )
        where = "a local Ray started for this run"
    try:
        yield where
    finally:
        ray.shutdown()
