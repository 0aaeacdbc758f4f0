"""The control plane's link to its Ray cluster, without `ray.init` in the API process.

Ray's core worker ends the process that called `ray.init` when the GCS has been unreachable for
a minute (seen here: "Failed to connect to GCS within 60 seconds", exit 1; and an abort when the
head it was connected to is stopped), so an API connected that way would die with a Ray head
restart. Everything the API needs goes over the dashboard's HTTP instead: the Jobs API
(`RayJobs`), nodes and their worker groups (the state API), resource usage and pending demand
(`/api/cluster_status`, where autoscaler v1 publishes its load report). The calls that need the
GCS run in short-lived subprocesses: `request_resources` for the autoscaler
(`python -m orchestrator.ray_link request-resources ADDRESS BUNDLES`), and, under autoscaler v2,
which publishes no load report there, the cluster status of Ray's v2 SDK
(`python -m orchestrator.ray_link cluster-status GCS_ADDRESS`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
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

log = logging.getLogger(__name__)
HTTP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0
STATUS_TIMEOUT_S = 20.0
# A v2 status read is used for this long: autoscaler v1 publishes its report every 5 s too.
STATUS_MAX_AGE_S = 5.0
# The GCS port of a `ray://` head: what `ray start --head` and KubeRay's head service use.
GCS_PORT = 6379
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


def gcs_address(settings: Settings) -> str | None:
    """The GCS (host:port) behind settings.ray_address: a Ray Client address (`ray://HOST:10001`,
    as deploy/ sets) gives port 6379 on its host, the GCS port of KubeRay's head service."""
    address = settings.ray_address
    if not address or not address.startswith("ray://"):
        return address
    host = urlsplit(address).hostname
    return f"{host}:{GCS_PORT}" if host else None


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
        self._v2 = StatusReader(gcs_address(settings))

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

    def nodes(self) -> list[NodeInfo]:
        """The cluster's nodes, alive or not (the state API)."""
        rows = self._get("/api/v0/nodes?detail=1&limit=10000")["data"]["result"]["result"]
        return [_node(row) for row in rows]

    def totals(self) -> tuple[float, float]:
        """CPUs and GPUs of the alive nodes: all that admission needs, without `cluster()`'s
        load report (under autoscaler v2 each report is a process reading the GCS)."""
        alive = [n for n in self.nodes() if n.alive]
        return sum(n.cpus for n in alive), sum(n.gpus for n in alive)

    def cluster(self) -> ClusterInfo:
        """Nodes and their groups (state API), CPU/GPU totals and usage and the pending demand
        (the autoscaler's load report)."""
        nodes = self.nodes()
        alive = [n for n in nodes if n.alive]
        cpus, gpus = sum(n.cpus for n in alive), sum(n.gpus for n in alive)
        status = self._get("/api/cluster_status?format=0")["data"].get("clusterStatus")
        # Autoscaler v1 publishes this report; v2 (KubeRay's `autoscalerOptions.version: v2`)
        # does not: then the v2 SDK's status, translated to it; None (unknown) until it is read.
        report = status.get("loadMetricsReport") if status else self._v2.report()
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

    @property
    def status_error(self) -> str | None:
        """Why the last autoscaler v2 status read failed (None: it did not, or none was made)."""
        return self._v2.error

    def close(self) -> None:
        """Nothing is held open (kept for symmetry with the app's lifespan)."""


class StatusReader:
    """The autoscaler v2 status of the cluster at GCS `address`, in the shape of v1's load report.

    A read starts a Python process that imports Ray, so a request never waits for one:
    `report()` answers the last read at once and, when that is older than STATUS_MAX_AGE_S,
    starts the next in a background thread (at most one at a time). An answer is then at most a
    few seconds stale, and no process runs while nobody asks for the cluster (a refresh on the
    reconciler's loop would run with nobody looking, and not at all in a replica that does not
    reconcile). A failed or timed-out read makes the report None (unknown), with `error` set."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.error: str | None = None
        self._report: dict[str, Any] | None = None
        self._read_at = -STATUS_MAX_AGE_S  # time.monotonic() of the last finished read
        self._reading = False
        self._lock = threading.Lock()

    def report(self) -> dict[str, Any] | None:
        with self._lock:
            stale = time.monotonic() - self._read_at >= STATUS_MAX_AGE_S
            if stale and not self._reading:
                self._reading = True
                threading.Thread(target=self.read, name="ray-status-v2", daemon=True).start()
            return self._report

    def read(self) -> None:
        """Read the status now (in this thread) and keep it, or its error."""
        report: dict[str, Any] | None = None
        error: str | None = "the read ended with an exception"
        try:
            report, error = self._read(), None
        except RayUnavailableError as exc:
            if str(exc) != self.error:
                log.warning("autoscaler v2 status: %s", exc)
            error = str(exc)
        finally:  # whatever happened, the next report() may read again
            with self._lock:
                self._report, self.error = report, error
                self._read_at, self._reading = time.monotonic(), False

    def _read(self) -> dict[str, Any]:
        if not self.address:
            raise RayUnavailableError("no Ray address (PDISTILL_RAY_ADDRESS) to reach the GCS")
        cmd = [sys.executable, "-m", "orchestrator.ray_link", "cluster-status", self.address]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=STATUS_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as exc:  # TimeoutExpired among them
            raise RayUnavailableError(f"cluster status: {exc}") from exc
        if done.returncode != 0:
            raise RayUnavailableError(f"cluster status failed: {done.stderr.strip()[-500:]}")
        try:
            report = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError) as exc:
            raise RayUnavailableError(f"cluster status: no JSON in {done.stdout!r:.500}") from exc
        if not isinstance(report, dict):
            raise RayUnavailableError(f"cluster status: not an object: {report!r:.500}")
        return report


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
    groups times the number of such groups; one entry per source and bundle shape."""
    counts: dict[tuple[PendingSource, tuple[tuple[str, float], ...]], int] = {}
    for key, source in _DEMANDS:
        for item, count in _counted(report.get(key)):
            # A placement group entry is {"bundles": [[bundle, n], ...], "strategy": ...}.
            bundles = _counted(item.get("bundles")) if source == "placement_groups" else [(item, 1)]
            for bundle, n in bundles:
                shape = tuple(sorted((k, float(v)) for k, v in bundle.items()))
                counts[source, shape] = counts.get((source, shape), 0) + n * count
    return [
        PendingDemand(resources=dict(shape), count=count, source=source)
        for (source, shape), count in counts.items()
    ]


def _request_resources(address: str, bundles: list[dict[str, float]]) -> None:
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    try:
        request_resources(bundles=bundles)
    finally:
        ray.shutdown()


def _cluster_status(address: str) -> dict[str, Any]:
    """The autoscaler v2 SDK's status of the cluster at GCS `address`, as the part of v1's load
    report that `RayLink.cluster()` reads: usage (`{name: [used, total]}`), task and actor
    demand, and one entry per pending placement group. Its cluster constraint demand (v1's
    `requestDemand`, what request_resources asked) is left out, as `_DEMANDS` leaves it out."""
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray.autoscaler.v2.schema import ResourceDemand
    from ray.autoscaler.v2.sdk import get_cluster_status

    gcs = canonicalize_bootstrap_address_or_die(address)  # also "auto", as ray.init takes it
    status = get_cluster_status(gcs, timeout=int(STATUS_TIMEOUT_S / 2))
    demands = status.resource_demands

    def counted(demand: ResourceDemand) -> list[list[Any]]:
        return [[dict(r.bundle), r.count] for r in demand.bundles_by_count]

    return {
        "usage": {u.resource_name: [u.used, u.total] for u in status.cluster_resource_usage},
        "resourceDemand": [pair for d in demands.ray_task_actor_demand for pair in counted(d)],
        "pgDemand": [[{"bundles": counted(d)}, 1] for d in demands.placement_group_demand],
    }


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["request-resources", address, bundles]:
            _request_resources(address, json.loads(bundles))
        case ["cluster-status", address]:
            print(json.dumps(_cluster_status(address)))
        case _:
            sys.exit(
                "usage: python -m orchestrator.ray_link request-resources ADDRESS BUNDLES_JSON\n"
                "       python -m orchestrator.ray_link cluster-status GCS_ADDRESS"
            )
