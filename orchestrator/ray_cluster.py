"""Connecting to Ray: the cluster at settings.ray_address, or a local head started on the fly."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.jobs import Demand
from orchestrator.ray_head import STATE_API_ENV, free_port
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec


def init_local(num_cpus: int | None = None, **kwargs: Any) -> Callable[[], None]:
    """`ray.init` of a new local head (with its dashboard) that knows its own state API; returns
    the function that shuts it down.

    The dashboard serves the state API, which Train's PlacementGroupCleaner needs to free the
    workers of a Tune trial that was stopped mid-run; without it they leak. The cleaner finds
    the API through RAY_API_SERVER_ADDRESS, else through /tmp/ray/ray_current_cluster, which names
    the *newest* cluster on the machine: with two clusters on one machine it asks the wrong one
    and the stopped trial's CPUs stay reserved. So the dashboard port is chosen here and the
    variable set before the head starts; its processes inherit it. Shutting down puts the
    variable back as it was, so nothing this process starts later is sent to a stopped head. A
    local head gets a random GCS port (`ray.init` never takes 6379, which Redis holds here).
    """
    import ray

    port = free_port()
    before = os.environ.get(STATE_API_ENV)

    def restore() -> None:
        if before is None:
            os.environ.pop(STATE_API_ENV, None)
        else:
            os.environ[STATE_API_ENV] = before

    def stop() -> None:
        ray.shutdown()
        restore()

    os.environ[STATE_API_ENV] = f"http://127.0.0.1:{port}"
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=True,
            dashboard_port=port,
            log_to_driver=False,
            **kwargs,
        )
    except BaseException:
        restore()
        raise
    return stop


@contextlib.contextmanager
def connect(settings: Settings, *, num_cpus: int | None = None) -> Iterator[str]:
    """Yield a description of the cluster; a local head started here is shut down on exit."""
    import ray

    if ray.is_initialized():
        yield "the connected Ray cluster"
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        where, stop = f"Ray at {settings.ray_address}", ray.shutdown
    else:
        where, stop = "a local Ray started for this run", init_local(num_cpus)
    try:
        yield where
    finally:
        stop()


def short_of(spec: CampaignSpec) -> str | None:
    """Why the connected cluster cannot hold one round of `spec` now (None when it can): its
    Train workers' CPUs and GPUs against the cluster's totals."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))
    need = Demand.of(spec.model_dump(mode="json")).beyond(cpus, gpus)
    return None if need is None else f"{need}; the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
