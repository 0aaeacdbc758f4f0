"""The control plane's link to its Ray cluster, without `ray.init` in the API process.

Ray's core worker ends the process that called `ray.init` when the GCS has been unreachable for
a minute (seen here: "Failed to connect to GCS within 60 seconds", exit 1; and an abort when the
head it was connected to is stopped), so an API connected that way would die with a Ray head
restart. Everything the API needs goes over the dashboard's HTTP instead: the Jobs API
(`RayJobs`), nodes and their worker groups (the state API), resource usage and pending demand
(`/api/cluster_status`). The one call that needs the GCS, `request_resources` for the
autoscaler, runs in a short-lived subprocess
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

from orchestrator.jobs import (
    ClusterInfo,
    GroupInfo,
    NodeInfo,
    PendingDemand,
    PendingSource,
    RayJobs,
    RayUnavailableError,
)
from orchestrator.settings import Settings

HTTP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0
# The node label Ray 2.60 derives from RAY_NODE_TYPE_NAME, which KubeRay sets in every Ray
# container from the pod's `ray.io/group` label: the worker group's groupName, "headgroup" for
# the head. So a KubeRay node names its group with no setting of ours.
GROUP_LABEL = "ray.io/node-group"
# Demand lists of Ray's load report, and what we call them. `requestDemand` is left out: it is the
# whole cluster shape asked with request_resources, placed or not (the API shows its own request).
_DEMANDS: tuple[tuple[str, PendingSource], ...] = (
    ("resourceDemand", "tasks"),
    ("pgDemand", "placement_groups"),
)


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
        self._jobs = (
            RayJobs(self.dashboard_url, headers=_auth_headers, timeout_s=HTTP_TIMEOUT_S)
            if self.dashboard_url
            else None
        )
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
        """Nodes and their groups (state API), CPU/GPU totals and usage and the pending demand
        (the autoscaler's load report)."""
        rows = self._get("/api/v0/nodes?detail=1&limit=10000")["data"]["result"]["result"]
        nodes = [_node(row) for row in rows]
        alive = [n for n in nodes if n.alive]
        cpus, gpus = sum(n.cpus for n in alive), sum(n.gpus for n in alive)
        status = self._get("/api/cluster_status?format=0")["data"].get("clusterStatus")
        # Autoscaler v1 publishes this report; v2 (KubeRay's `autoscalerOptions.version: v2`)
        # does not: then usage reads 0 and pending is None (unknown).
        report = (status or {}).get("loadMetricsReport")
        usage = (report or {}).get("usage") or {}
        used_cpus = float((usage.get("CPU") or [0.0])[0])
        used_gpus = float((usage.get("GPU") or [0.0])[0])
        return ClusterInfo(
            nodes=nodes,
            cpus_total=cpus,
            gpus_total=gpus,
            cpus_available=max(0.0, cpus - used_cpus),
            gpus_available=max(0.0, gpus - used_gpus),
            groups=group_nodes(nodes),
            pending=pending_demand(report) if report is not None else None,
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


def node_group(row: dict[str, Any]) -> str:
    """The worker group of a state-API node row: its `ray.io/node-group` label, else "head" for
    the head node and "default" for any other (a node started without the label)."""
    group = (row.get("labels") or {}).get(GROUP_LABEL)
    if group:
        return str(group)
    return "head" if row.get("is_head_node") else "default"


def _node(row: dict[str, Any]) -> NodeInfo:
    total = row.get("resources_total") or {}
    return NodeInfo(
        id=str(row["node_id"]),
        alive=row.get("state") == "ALIVE",
        address=str(row.get("node_ip", "")),
        cpus=float(total.get("CPU", 0.0)),
        gpus=float(total.get("GPU", 0.0)),
        group=node_group(row),
        is_head=bool(row.get("is_head_node")),
    )


def group_nodes(nodes: list[NodeInfo]) -> list[GroupInfo]:
    """Every group that some node names, with its alive nodes and their CPUs and GPUs (a group
    whose nodes are all gone shows 0); the head's group first, then by name."""
    names = {n.group for n in nodes}
    heads = {n.group for n in nodes if n.is_head}
    groups = []
    for name in sorted(names, key=lambda g: (g not in heads, g)):
        alive = [n for n in nodes if n.group == name and n.alive]
        groups.append(
            GroupInfo(
                name=name,
                nodes=len(alive),
                cpus=sum((n.cpus for n in alive), 0.0),
                gpus=sum((n.gpus for n in alive), 0.0),
            )
        )
    return groups


def _counted(entries: Any) -> list[tuple[dict[str, Any], int]]:
    """The report's `[[item, count], ...]` lists; anything of another shape is skipped."""
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict):
            out.append((entry[0], int(entry[1])))
    return out


def pending_demand(report: dict[str, Any]) -> list[PendingDemand]:
    """What the load report says waits for resources, cluster-wide (the report does not say
    which group would take it): task and actor bundles, and each bundle of pending placement
    groups times the number of such groups."""
    pending = []
    for key, source in _DEMANDS:
        for item, count in _counted(report.get(key)):
            # A placement group entry is {"bundles": [[bundle, n], ...], "strategy": ...}.
            bundles = _counted(item.get("bundles")) if source == "placement_groups" else [(item, 1)]
            pending += [
                PendingDemand(
                    resources={k: float(v) for k, v in bundle.items()},
                    count=n * count,
                    source=source,
                )
                for bundle, n in bundles
            ]
    return pending


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
