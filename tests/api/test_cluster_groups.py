"""Worker groups as Ray sees them, on a real 3-node local cluster (`ray.cluster_utils.Cluster`):
`RayLink.cluster()` and `GET /v1/cluster` read them over the dashboard's HTTP, as the API does.

A node names its group as on KubeRay: KubeRay sets RAY_NODE_TYPE_NAME (the pod's `ray.io/group`
label: the groupName) in every Ray container, and Ray turns it into the node label
`ray.io/node-group`. Here the "gpu" node is started with that variable (its GPU is a logical
resource: this machine has none), the head and one worker without it (the fallbacks "head" and
"default"). Something waits for resources (a 2-GPU task, a 4-CPU placement group), so Ray's
load report has pending demand.

Every test runs twice: under autoscaler v1, which publishes its load report on the dashboard's
`/api/cluster_status`, and under v2 (`RAY_enable_autoscaler_v2=1`, as KubeRay runs it), which
does not, so usage and pending demand come from Ray's v2 SDK in a subprocess.

The cluster runs in a subprocess: its nodes are started in the process that creates them and
read RAY_NODE_TYPE_NAME from its environment, which must not leak into the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_harness import ADMIN
from fastapi.testclient import TestClient

from api.app import create_app
from orchestrator.jobs import ClusterInfo
from orchestrator.ray_link import RayLink, gcs_address
from orchestrator.scheduler import Reconciler
from orchestrator.settings import Settings
from orchestrator.store import Store

CLUSTER = """
import json, os, sys
import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group
from orchestrator.ray_head import free_ports

ready_file = sys.argv[1]
port, agent, metrics = free_ports(3)
# Its own state API (see orchestrator.ray_cluster.init_local): other clusters may run beside it.
os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
os.environ.pop("RAY_NODE_TYPE_NAME", None)
ports = {"dashboard_agent_listen_port": agent, "metrics_export_port": metrics}
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": port, **ports},
)
groups = {cluster.head_node.node_id: "head"}
os.environ["RAY_NODE_TYPE_NAME"] = "gpu"  # what KubeRay sets in the pods of group "gpu"
groups[cluster.add_node(num_cpus=1, num_gpus=1).node_id] = "gpu"
del os.environ["RAY_NODE_TYPE_NAME"]
groups[cluster.add_node(num_cpus=1).node_id] = "default"
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)


@ray.remote(num_cpus=1)
class Holder:  # holds one CPU while it lives
    pass


@ray.remote(num_cpus=0, num_gpus=2)
def two_gpus():  # no node has 2 GPUs: it waits
    pass


try:
    holder = Holder.remote()
    ray.get(holder.__ray_ready__.remote())
    waiting = two_gpus.remote()
    group = placement_group([{"CPU": 4}])  # no node has 4 CPUs: it waits
    with open(ready_file + ".tmp", "w") as f:
        json.dump({"address": cluster.address, "dashboard": f"http://127.0.0.1:{port}",
                   "groups": groups}, f)
    os.replace(ready_file + ".tmp", ready_file)
    sys.stdin.read()  # until the test closes it
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.fixture(scope="module", params=["v1", "v2"])
def grouped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    autoscaler = request.param
    tmp = tmp_path_factory.mktemp(f"groups-{autoscaler}")
    ready, log = tmp / "ready.json", tmp / "cluster.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PDISTILL_"))}
    # No token: the test process reads this dashboard without Ray's auth settings. The
    # autoscaler publishes its load report every second instead of every 5.
    env |= {"RAY_AUTH_MODE": "disabled", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env["RAY_enable_autoscaler_v2"] = "1" if autoscaler == "v2" else "0"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLUSTER, str(ready)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the 3-node cluster did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield json.loads(ready.read_text()) | {"autoscaler": autoscaler}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def settings_for(grouped: dict[str, Any], tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        admin_token=ADMIN,
        storage_uri=str(tmp_path / "storage"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        ray_address=grouped["address"],
        ray_dashboard_url=grouped["dashboard"],
    )


def settled(link: RayLink, timeout: float = 60.0) -> ClusterInfo:
    """The cluster once the load report shows both waiting requests and the held CPU (v1's
    autoscaler publishes it every second here; a v2 status read is at most 5 s old)."""
    deadline = time.monotonic() + timeout
    while True:
        info = link.cluster()
        sources = {p.source for p in info.pending or []}
        if {"tasks", "placement_groups"} <= sources and info.cpus_available == 1.0:
            return info
        if time.monotonic() > deadline:
            pytest.fail(f"Ray's load report never showed the pending demand: {info}")
        time.sleep(0.5)


def test_nodes_name_their_group_and_groups_add_up(grouped: dict[str, Any], tmp_path: Path) -> None:
    # The dashboard has the load report under v1 only: under v2 the numbers below come from
    # the v2 SDK (without it, pending would stay None and the CPU in use read 0).
    status = httpx.get(f"{grouped['dashboard']}/api/cluster_status?format=0", timeout=10)
    assert (status.json()["data"]["clusterStatus"] is None) == (grouped["autoscaler"] == "v2")
    info = settled(RayLink(settings_for(grouped, tmp_path)))
    assert {n.id: n.group for n in info.nodes} == grouped["groups"]
    assert [n.is_head for n in info.nodes if n.group == "head"] == [True]
    # The head's group first, then by name; CPUs and GPUs of alive nodes.
    assert [(g.name, g.nodes, g.cpus, g.gpus) for g in info.groups] == [
        ("head", 1, 0.0, 0.0),
        ("default", 1, 1.0, 0.0),
        ("gpu", 1, 1.0, 1.0),
    ]
    assert (info.cpus_total, info.gpus_total) == (2.0, 1.0)
    assert info.pending is not None
    tasks = [p for p in info.pending if p.source == "tasks"]
    groups = [p for p in info.pending if p.source == "placement_groups"]
    assert [(p.resources, p.count) for p in tasks] == [({"GPU": 2.0}, 1)]
    assert [(p.resources, p.count) for p in groups] == [({"CPU": 4.0}, 1)]


def test_get_cluster_answers_groups_and_pending(grouped: dict[str, Any], tmp_path: Path) -> None:
    settings = settings_for(grouped, tmp_path)
    settled(RayLink(settings))
    with TestClient(create_app(settings, reconcile=False)) as client:
        # Under v2 the app's first answer may come before its first status read: pending null.
        deadline = time.monotonic() + 30
        while True:
            r = client.get("/v1/cluster", headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, r.text
            if r.json()["pending"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    body = r.json()
    assert body["pending"] is not None, body
    assert {n["id"]: n["group"] for n in body["nodes"]} == grouped["groups"]
    assert body["groups"] == [
        {"name": "head", "nodes": 1, "cpus": 0.0, "gpus": 0.0},
        {"name": "default", "nodes": 1, "cpus": 1.0, "gpus": 0.0},
        {"name": "gpu", "nodes": 1, "cpus": 1.0, "gpus": 1.0},
    ]
    assert {"resources": {"GPU": 2.0}, "count": 1, "source": "tasks"} in body["pending"]
    assert {"resources": {"CPU": 4.0}, "count": 1, "source": "placement_groups"} in body["pending"]
    # The fields that were there before groups are unchanged.
    assert body["cpus"] == {"total": 2.0, "in_use": 1.0} and body["gpus"]["total"] == 1.0


@pytest.mark.parametrize("grouped", ["v2"], indirect=True)
def test_an_unreadable_v2_status_leaves_pending_unknown(
    grouped: dict[str, Any], tmp_path: Path
) -> None:
    """A v2 status read that fails leaves pending null, and the rest of the answer stands. The
    Ray address here has no port, so the read's subprocess exits with an error at once (one
    pointed at a closed port runs into its 20 s timeout: the same path, slower)."""
    settings = settings_for(grouped, tmp_path).model_copy(update={"ray_address": "no-port"})
    link = RayLink(settings)
    deadline = time.monotonic() + 60
    while link.status_error is None:
        assert link.cluster().pending is None
        if time.monotonic() > deadline:
            pytest.fail("the status read of a Ray address without a port did not fail")
        time.sleep(0.2)
    assert "Invalid address format: no-port" in link.status_error
    info = link.cluster()
    assert info.pending is None and info.cpus_total == 2.0
    assert {n.id: n.group for n in info.nodes} == grouped["groups"]
    with TestClient(create_app(settings, reconcile=False)) as client:
        r = client.get("/v1/cluster", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert r.json()["pending"] is None


@pytest.mark.parametrize("grouped", ["v2"], indirect=True)
def test_admitting_a_waiting_campaign_starts_no_v2_status_read(
    grouped: dict[str, Any], tmp_path: Path
) -> None:
    """Admission needs the cluster's totals only (the state API): a queue that waits must not
    start a status process every tick (each v2 report is one; `cluster()` would start it)."""
    settings = settings_for(grouped, tmp_path)
    link = RayLink(settings)
    with Store.from_url(settings.database_url) as store:
        team = store.create_team("vision", gpu_quota=8)
        spec = {"name": "big", "resources": {"workers": 4, "gpus_per_worker": 1}}
        c, _ = store.create_campaign(
            team_id=team.id, name="big", spec=spec, gpus=4.0, rounds=[(1, 2, 1, 10)]
        )
        waiting = Reconciler(store, settings, link).admit()
        assert [w.id for w in waiting] == [c.id]
        reason = store.get_campaign(c.id, team_id=None).reason  # type: ignore[union-attr]
    assert reason == (
        "waiting for cluster capacity: needs 4 CPUs and 4 GPUs, 2 CPUs and 1 GPUs are free"
    )
    assert (link._v2._reading, link._v2._read_at < 0) == (False, True)  # never asked


def test_gcs_address_of_a_ray_client_address_is_6379_on_its_host() -> None:
    assert gcs_address(Settings(ray_address="ray://head-svc:10001")) == "head-svc:6379"
    assert gcs_address(Settings(ray_address="10.0.0.5:6380")) == "10.0.0.5:6380"
    assert gcs_address(Settings(ray_address="auto")) == "auto"
    assert gcs_address(Settings(ray_address=None)) is None
