"""A campaign's Ray Job: its names (submission id, storage name) and the Ray Jobs API calls the
control plane makes (submit, status, stop, logs), plus the cluster's nodes and resources.

Ray job status is advisory: the control plane's store decides (see DESIGN.md). Calls that reach
the cluster raise `RayUnavailableError` when it cannot be reached, so a caller never mistakes
"Ray is down" for "the job is gone".
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any, Literal

import httpx

from orchestrator.settings import Settings
from orchestrator.spec import ResourcesSpec

_ATTEMPT = re.compile(r"^pdistill-(?P<cid>[a-z0-9-]+)-a(?P<n>\d+)$")
# Settings the campaign driver needs (read again there from the environment).
_FORWARDED = (
    "database_url",
    "mlflow_tracking_uri",
    "storage_uri",
    "cache_dir",
    "placement_timeout_s",
)
FINAL_JOB_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayUnavailableError(RuntimeError):
    """The Ray cluster (its dashboard / Jobs API or GCS) did not answer."""


def submission_id(campaign_id: str, attempt: int) -> str:
    """One Ray Job per attempt: submitting the same attempt twice cannot start it twice."""
    return f"pdistill-{campaign_id}-a{attempt}"


def attempt_of(sid: str | None) -> int:
    """The attempt number in a submission id; 0 before the first submission."""
    m = _ATTEMPT.match(sid or "")
    return int(m["n"]) if m else 0


def storage_name(campaign_id: str, name: str) -> str:
    """The name a campaign runs under (storage prefix, MLflow keys, registered model): unique
    per campaign, so two teams that submit the same spec name never share a record."""
    return f"{campaign_id}-{name}"[:63]


def campaign_prefix(name: str) -> str:
    """The folder of the campaign that runs under `name` (`storage_name`) in its storage."""
    return f"campaigns/{name}"


# The campaign's teacher, trained or loaded, in its folder (`teacher.checkpoint` of a new spec
# may name it, to distil the same teacher again).
TEACHER_CHECKPOINT = "teacher.safetensors"


@dataclasses.dataclass(frozen=True)
class Demand:
    """What a campaign needs from the cluster while it runs: its Train workers' CPUs and GPUs
    (at least one CPU: the teacher and the evaluations run as 1-CPU tasks)."""

    cpus: float
    gpus: float
    bundles: tuple[tuple[tuple[str, float], ...], ...]  # one {"CPU", "GPU"} bundle per worker

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Demand:
        res = ResourcesSpec.model_validate(spec.get("resources") or {})
        bundle = (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker))
        return cls(
            cpus=max(1.0, res.workers * res.cpus_per_worker),
            gpus=res.workers * res.gpus_per_worker,
            bundles=(bundle,) * res.workers,
        )

    def beyond(self, cpus: float, gpus: float) -> str | None:
        """What a round needs, said when it is more than `cpus` and `gpus`; None when it fits."""
        if self.cpus <= cpus + 1e-9 and self.gpus <= gpus + 1e-9:
            return None
        per_worker = dict(self.bundles[0])
        return (
            f"a round needs {self.cpus:g} CPUs and {self.gpus:g} GPUs (resources.workers="
            f"{len(self.bundles)} × cpus_per_worker={per_worker['CPU']:g}, gpus_per_worker="
            f"{per_worker['GPU']:g})"
        )


def job_env(settings: Settings) -> dict[str, str]:
    """Environment of a campaign's Ray Job: the settings the driver reads, and AWS_* (boto3 and
    pyarrow read those), unless the cluster carries its own (settings.job_env_forward)."""
    if not settings.job_env_forward:
        return {}
    env = {f"PDISTILL_{k.upper()}": str(getattr(settings, k)) for k in _FORWARDED}
    env |= {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return env


class RayJobs:
    """The Ray Jobs REST API of one cluster (`/api/jobs/` on its dashboard), over httpx with a
    timeout on every call: Ray's `JobSubmissionClient` sets none, and a dashboard that stops
    answering would hang the reconciler. `headers()` gives the auth header (Ray token mode)."""

    def __init__(
        self,
        dashboard_url: str,
        *,
        headers: Callable[[], dict[str, str]] = dict,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = dashboard_url.rstrip("/")
        self._headers, self._timeout = headers, timeout_s

    def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response | None:
        """The answer (2xx or 400); None for 404. Raises RayUnavailableError otherwise."""
        url = f"{self.url}{path}"
        try:
            resp = httpx.request(method, url, headers=self._headers(), timeout=self._timeout, **kw)
        except httpx.HTTPError as exc:
            raise RayUnavailableError(f"{what}: Ray Jobs API at {self.url}: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.is_success or resp.status_code == 400:
            return resp
        # 500 is also "No available agent to submit job" for a while after a head starts.
        detail = resp.text.strip().splitlines()[-1:] or [""]
        raise RayUnavailableError(f"{what}: HTTP {resp.status_code} from {url}: {detail[0]}")

    def version(self) -> str:
        resp = self._request("GET", "/api/version", "Ray version")
        if resp is None or not resp.is_success:
            raise RayUnavailableError(f"{self.url} does not serve the Ray Jobs API")
        return str(resp.json().get("ray_version"))

    def submit(self, sid: str, *, campaign_id: str, env: dict[str, str]) -> bool:
        """Submit the driver of `campaign_id` as job `sid`; False if that job already exists.
        Raises RayUnavailableError also when the cluster cannot take jobs yet (its agent not up)."""
        body: dict[str, Any] = {
            "entrypoint": f"python -m orchestrator.driver {campaign_id} --submission-id {sid}",
            "submission_id": sid,
            "metadata": {"pdistill_campaign": campaign_id},
        }
        if env:
            body["runtime_env"] = {"env_vars": env}
        resp = self._request("POST", "/api/jobs/", f"submitting Ray job {sid}", json=body)
        if resp is not None and resp.is_success:
            return True
        text = resp.text if resp is not None else "404"
        if "already exists" in text:
            return False
        raise RayUnavailableError(f"cannot submit Ray job {sid}: {text.strip()[-500:]}")

    def status(self, sid: str) -> tuple[str, str] | None:
        """(status, message) of job `sid` (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), or None
        when the cluster does not know it (never submitted, or the head restarted)."""
        resp = self._request("GET", f"/api/jobs/{sid}", f"Ray job {sid}")
        if resp is None:
            return None
        if not resp.is_success:
            raise RayUnavailableError(f"Ray job {sid}: {resp.text.strip()[-500:]}")
        info = resp.json()
        return str(info["status"]), str(info.get("message") or "")

    def stop(self, sid: str) -> bool:
        """Ask job `sid` to stop; False if it was not running or does not exist."""
        resp = self._request("POST", f"/api/jobs/{sid}/stop", f"stopping Ray job {sid}")
        if resp is None:
            return False
        if not resp.is_success:
            raise RayUnavailableError(f"cannot stop Ray job {sid}: {resp.text.strip()[-500:]}")
        return bool(resp.json().get("stopped"))

    def logs(self, sid: str) -> str | None:
        """The job's whole log so far; None when the cluster does not know the job."""
        resp = self._request("GET", f"/api/jobs/{sid}/logs", f"logs of Ray job {sid}")
        if resp is None:
            return None
        if not resp.is_success:
            raise RayUnavailableError(f"logs of Ray job {sid}: {resp.text.strip()[-500:]}")
        return str(resp.json().get("logs") or "")


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    id: str
    alive: bool
    address: str
    cpus: float
    gpus: float
    group: str = "default"  # its worker group (see ray_link.node_group)
    is_head: bool = False


@dataclasses.dataclass(frozen=True)
class GroupInfo:
    """A worker group as Ray sees it: the nodes that carry its name (alive ones counted)."""

    name: str
    nodes: int
    cpus: float
    gpus: float


PendingSource = Literal["tasks", "placement_groups"]


@dataclasses.dataclass(frozen=True)
class PendingDemand:
    """`count` bundles of `resources` that Ray cannot place yet. `source`: "tasks" (tasks and
    actors) or "placement_groups" (Train's workers ask this way)."""

    resources: dict[str, float]
    count: int
    source: PendingSource


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    nodes: list[NodeInfo]
    cpus_total: float
    gpus_total: float
    cpus_available: float
    gpus_available: float
    groups: list[GroupInfo] = dataclasses.field(default_factory=list)
    # Cluster-wide (Ray's load report is not per group); None when Ray publishes no load report.
    pending: list[PendingDemand] | None = None
