"""Connecting to Ray: the cluster at settings.ray_address, or a local head started on the fly."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from orchestrator.jobs import Demand
from orchestrator.settings import Settings
from orchestrator.spec import CampaignSpec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_local(num_cpus: int | None = None, **kwargs: Any) -> Any:
    """`ray.init` of a new local head (with its dashboard) that knows its own state API.

    The dashboard serves the state API, which Train's PlacementGroupCleaner needs to free the
    workers of a Tune trial that was stopped mid-run; without it they leak. The cleaner finds
    the API through RAY_API_SERVER_ADDRESS, else through /tmp/ray/ray_current_cluster, which names
    the *newest* cluster on the machine: with two clusters on one machine it asks the wrong one
    and the stopped trial's CPUs stay reserved. So the dashboard port is chosen here and the
    variable set before the head starts; its processes inherit it. A local head gets a random GCS
    port (`ray.init` never takes 6379, which Redis holds here).
    """
    import ray

    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    return ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=True,
        dashboard_port=port,
        log_to_driver=False,
        **kwargs,
    )


@contextlib.contextmanager
def connect(settings: Settings, *, num_cpus: int | None = None) -> Iterator[str]:
    """Yield a description of the cluster; a local head started here is shut down on exit."""
    import ray

    if ray.is_initialized():
        yield "the connected Ray cluster"
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        where = f"Ray at {settings.ray_address}"
    else:
        init_local(num_cpus)
        where = "a local Ray started for this run"
    try:
        yield where
    finally:
        ray.shutdown()


def short_of(spec: CampaignSpec) -> str | None:
    """Why the connected cluster cannot hold one round of `spec` now (None when it can): its
    Train workers' CPUs and GPUs against the cluster's totals."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))
    need = Demand.of(spec.model_dump(mode="json")).beyond(cpus, gpus)
    return None if need is None else f"{need}; the cluster has {cpus:g} CPUs and {gpus:g} GPUs"
