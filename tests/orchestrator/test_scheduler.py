"""The reconciler's decisions on a real store (SQLite): who may start (quota, capacity,
max_running, priority), requeue or fail after a driver died, and the names of a campaign's jobs.
The Ray side of the loop runs in tests/api (a real head, real jobs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.jobs import Demand, attempt_of, job_env, storage_name, submission_id
from orchestrator.ray_link import RayLink, dashboard_url
from orchestrator.scheduler import Capacity, Reconciler, resume_campaign
from orchestrator.settings import Settings
from orchestrator.store import CampaignStatus, CampaignView, RoundStatus, Store

S = CampaignStatus


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.from_url(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


def _spec(workers: int = 1, gpus: float = 0.0, cpus: float = 1.0) -> dict[str, Any]:
    resources = {"workers": workers, "gpus_per_worker": gpus, "cpus_per_worker": cpus}
    return {"name": "c", "dataset": "builtin:digits", "resources": resources}


def _campaign(store: Store, team_id: int, priority: int = 0, **res: Any) -> CampaignView:
    spec = _spec(**res)
    c, _ = store.create_campaign(
        team_id=team_id,
        name="c",
        spec=spec,
        gpus=Demand.of(spec).gpus,
        rounds=[(1, 2, 1, 10)],
        priority=priority,
    )
    return c


def test_names_of_jobs_and_storage() -> None:
    assert submission_id("c-0123456789ab", 2) == "pdistill-c-0123456789ab-a2"
    assert attempt_of("pdistill-c-0123456789ab-a2") == 2
    assert attempt_of(None) == 0 and attempt_of("raysubmit_x") == 0
    assert storage_name("c-0123456789ab", "mnist") == "c-0123456789ab-mnist"
    assert len(storage_name("c-0123456789ab", "x" * 63)) == 63
    d = Demand.of(_spec(workers=2, gpus=1, cpus=4))
    assert (d.cpus, d.gpus, len(d.bundles)) == (8.0, 2.0, 2)
    assert Demand.of(_spec(workers=1, cpus=0.5)).cpus == 1.0  # evaluations take a whole CPU


def test_dashboard_url_defaults_to_8265_on_the_ray_host() -> None:
    assert dashboard_url(Settings(ray_address="ray://head-svc:10001")) == "http://head-svc:8265"
    assert dashboard_url(Settings(ray_address="10.0.0.5:6379")) == "http://10.0.0.5:8265"
    given = Settings(ray_address="x:1", ray_dashboard_url="http://d:9/")
    assert dashboard_url(given) == "http://d:9"
    assert dashboard_url(Settings(ray_address=None, ray_dashboard_url=None)) is None


def test_job_env_forwards_settings_and_aws_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.local")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", storage_uri="s3://b/p")
    env = job_env(settings)
    assert env["PDISTILL_DATABASE_URL"] == f"sqlite:///{tmp_path}/x.db"
    assert (
        env["PDISTILL_STORAGE_URI"] == "s3://b/p" and env["AWS_ENDPOINT_URL"] == "http://s3.local"
    )
    assert env["PDISTILL_PLACEMENT_TIMEOUT_S"] == "1800.0"  # the driver's Train runs read it
    assert not any(k in env for k in ("PDISTILL_ADMIN_TOKEN", "PDISTILL_RAY_ADDRESS"))
    assert job_env(settings.model_copy(update={"job_env_forward": False})) == {}


def test_capacity_admits_by_quota_cluster_and_max_running(store: Store) -> None:
    a = store.create_team("a", gpu_quota=2)
    b = store.create_team("b", gpu_quota=0)
    running = _campaign(store, a.id, gpus=1)
    room = Capacity.of(
        cpus_total=4,
        gpus_total=4,
        active=[running],
        teams=store.list_teams(),
        max_running=None,
    )
    second = _campaign(store, a.id, gpus=1)
    assert room.why_not(second) is None
    room.take(second)
    third = _campaign(store, a.id, gpus=1)
    assert room.why_not(third) == (
        "waiting for the GPU quota of team a: 2 of 2 GPUs in use, this campaign needs 1"
    )
    # Another team is not held back by team a's quota; 0-GPU campaigns use no quota...
    cpu_only = _campaign(store, b.id, workers=2, cpus=1)
    assert room.why_not(cpu_only) is None
    room.take(cpu_only)
    # ...but they need the cluster's CPUs: 1 + 1 + 2 of 4 are taken.
    assert room.why_not(_campaign(store, b.id)) == (
        "waiting for cluster capacity: needs 1 CPUs and 0 GPUs, 0 CPUs and 2 GPUs are free"
    )
    capped = Capacity.of(
        cpus_total=64, gpus_total=0, active=[running], teams=store.list_teams(), max_running=1
    )
    assert capped.why_not(cpu_only) == "waiting: 1 campaigns are running (max_running=1)"


def test_queue_order_is_priority_then_age(store: Store) -> None:
    a = store.create_team("a", gpu_quota=0)
    low, high, mid = (_campaign(store, a.id, priority=p) for p in (0, 5, 1))
    assert [c.id for c in store.queue()] == [high.id, mid.id, low.id]


def test_a_dead_driver_is_requeued_then_failed_after_max_restarts(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", max_restarts=2)
    reconciler = Reconciler(store, settings, RayLink(settings))
    team = store.create_team("a", gpu_quota=0)
    cid = _campaign(store, team.id).id

    def run(attempt: int) -> CampaignView:
        sid = submission_id(cid, attempt)
        store.transition(cid, S.STARTING, actor="scheduler", submission_id=sid)
        store.transition(cid, S.RUNNING, actor="driver")
        store.update_round(cid, 1, status=RoundStatus.TRAINING)
        c = store.get_campaign(cid, team_id=None)
        assert c is not None
        return c

    for attempt in (1, 2):
        reconciler.restart(run(attempt), "its Ray job is FAILED")
        c = store.get_campaign(cid, team_id=None)
        assert c is not None and c.status is S.QUEUED
        assert c.reason == "restarting: its Ray job is FAILED"
    stale = run(3)
    reconciler.restart(stale, "its Ray job is FAILED")
    c = store.get_campaign(cid, team_id=None)
    assert c is not None and c.status is S.FAILED
    assert c.reason == "its Ray job is FAILED; gave up after 2 restarts (max_restarts=2)"
    assert store.rounds(cid)[0].status is RoundStatus.FAILED
    # A report about an attempt that is over changes nothing (no second audit row).
    before = len(store.audit(cid))
    reconciler.restart(stale, "late duplicate")
    assert len(store.audit(cid)) == before
    # A person's resume starts the count again.
    resume_campaign(store, c, actor="team:a")
    reconciler.restart(run(4), "its Ray job is FAILED")
    c = store.get_campaign(cid, team_id=None)
    assert c is not None and c.status is S.QUEUED
