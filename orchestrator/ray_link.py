"""The control plane's link to its Ray cluster, without `ray.init` in the API process.

Ray's core worker ends the process that called `ray.init` when the GCS has been unreachable for
a minute (seen here: "Failed to connect to GCS within 60 seconds", exit 1; and an abort when the
head it was connected to is stopped), so an API connected that way would die with a Ray head
restart. Everything the API needs goes over the dashboard's HTTP instead: the Jobs API
(`RayJobs`), nodes (the state API) and resource usage (`/api/cluster_status`). The one call that
needs the GCS, `request_resources` for the autoscaler, runs in a short-lived subprocess
(`python -m orchestrator.ray_link request-resources ADDRESS BUNDLES`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.jobs import ClusterInfo, NodeInfo, RayJobs, RayUnavailableError
from orchestrator.settings import Settings

HTTP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0


def dashboard_url(settings: Settings) -> str | None:
    """settings.ray_dashboard_url, else port 8265 on the host of settings.ray_address (where a
    KubeRay head service or a `ray start --head` serve it by default)."""
    if settings.ray_dashboard_url:
        return settings.ray_dashboard_url.rstrip("/")
    if not settings.ray_address or settings.ray_address == "auto":
        return None
    host = urlsplit(
        settings.ray_address if "://" in settings.ray_address else f"//{settings.ray_address}"
    ).hostname
    return f"http://{host}:8265" if host else None


def _auth_headers() -> dict[str, str]:
    # The header Ray's own clients send when RAY_AUTH_MODE=token (token from RAY_AUTH_TOKEN,
    # RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    return dict(get_auth_headers_if_auth_enabled({}))


class RayLink:
    def __init__(self, settings: Settings) -> None:
        self.address = settings.ray_address
        self.dashboard_url = dashboard_url(settings)
        self._jobs = RayJobs(self.dashboard_url) if self.dashboard_url else None
        self.error: str | None = None

    @property
    def jobs(self) -> RayJobs:
        if self._jobs is None:
            raise RayUnavailableError(
                "no Ray cluster configured: set PDISTILL_RAY_ADDRESS "
                "(and PDISTILL_RAY_DASHBOARD_URL)"
            )
        return self._jobs

    def connect(self) -> bool:
        """True when the cluster's dashboard answers; else False with `error` set."""
        try:
            self.jobs.version()
        except RayUnavailableError as exc:
            self.error = str(exc)
            return False
        self.error = None
        return True

    def _get(self, path: str) -> Any:
        url = f"{self.jobs.url}{path}"
        try:
            resp = httpx.get(url, headers=_auth_headers(), timeout=HTTP_TIMEOUT_S)
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RayUnavailableError(f"Ray dashboard {url}: {exc}") from exc

    def cluster(self) -> ClusterInfo:
        """Nodes (state API) and CPU/GPU totals and usage (the autoscaler's load report)."""
        rows = self._get("/api/v0/nodes?detail=1&limit=10000")["data"]["result"]["result"]
        nodes = [
            NodeInfo(
                id=str(n["node_id"]),
                alive=n.get("state") == "ALIVE",
                address=str(n.get("node_ip", "")),
                cpus=float((n.get("resources_total") or {}).get("CPU", 0.0)),
                gpus=float((n.get("resources_total") or {}).get("GPU", 0.0)),
            )
            for n in rows
        ]
        alive = [n for n in nodes if n.alive]
        cpus, gpus = sum(n.cpus for n in alive), sum(n.gpus for n in alive)
        status = self._get("/api/cluster_status?format=0")["data"].get("clusterStatus") or {}
        usage = (status.get("loadMetricsReport") or {}).get("usage") or {}
        used_cpus = float((usage.get("CPU") or [0.0])[0])
        used_gpus = float((usage.get("GPU") or [0.0])[0])
        return ClusterInfo(
            nodes=nodes,
            cpus_total=cpus,
            gpus_total=gpus,
            cpus_available=max(0.0, cpus - used_cpus),
            gpus_available=max(0.0, gpus - used_gpus),
        )

    def request_resources(self, bundles: list[dict[str, float]]) -> None:
        """Tell the autoscaler the cluster shape to make room for ([] clears the request)."""
        if not self.address:
            raise RayUnavailableError("no Ray address (PDISTILL_RAY_ADDRESS) to reach the GCS")
        cmd = [sys.executable, "-m", "orchestrator.ray_link", "request-resources"]
        try:
            done = subprocess.run(
                [*cmd, self.address, json.dumps(bundles)],
                capture_output=True,
                text=True,
                timeout=REQUEST_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise RayUnavailableError(f"request_resources timed out: {exc}") from exc
        if done.returncode != 0:
            raise RayUnavailableError(f"request_resources failed: {done.stderr.strip()[-500:]}")

    def close(self) -> None:
        """Nothing is held open (kept for symmetry with the app's lifespan)."""


def _request_resources(address: str, bundles: list[dict[str, float]]) -> None:
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        request_resources(bundles=bundles)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "request-resources":
        sys.exit("usage: python -m orchestrator.ray_link request-resources ADDRESS BUNDLES_JSON")
    _request_resources(sys.argv[2], json.loads(sys.argv[3]))
