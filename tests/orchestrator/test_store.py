"""The campaign store against both databases it supports: a SQLite file and the PostgreSQL server
on this machine (127.0.0.1:5432, user postgres). Each session creates its own PostgreSQL
database and each test its own schema in it, so parallel runs never meet."""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import threading
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from orchestrator.store import (
    CampaignStatus,
    ConflictError,
    NotFoundError,
    RoundStatus,
    Store,
    TransitionError,
    TrialStatus,
    migrate,
)
from orchestrator.store.migrate import MIGRATIONS
from orchestrator.store.models import Base

ROOT = Path(__file__).resolve().parents[2]
S = CampaignStatus
T = TypeVar("T")

# The state machine as the issue describes it, written out here independently of
# orchestrator.store.states, so a wrong edge there fails these tests.
EDGES = {
    (S.QUEUED, S.STARTING),
    (S.QUEUED, S.CANCELLED),
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.CANCELLING),
    (S.STARTING, S.QUEUED),  # reconciler: the driver never came up
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLING),
    (S.RUNNING, S.QUEUED),  # reconciler: the driver died
    (S.CANCELLING, S.CANCELLED),
    (S.FAILED, S.QUEUED),  # resume
    (S.CANCELLED, S.QUEUED),  # resume
}
# A way to reach each status from queued.
PATHS = {
    S.QUEUED: [],
    S.STARTING: [S.STARTING],
    S.RUNNING: [S.STARTING, S.RUNNING],
    S.SUCCEEDED: [S.STARTING, S.RUNNING, S.SUCCEEDED],
    S.FAILED: [S.STARTING, S.RUNNING, S.FAILED],
    S.CANCELLING: [S.STARTING, S.RUNNING, S.CANCELLING],
    S.CANCELLED: [S.CANCELLED],
}
ROUNDS = [(1, 16, 8, 100), (2, 8, 4, 100), (3, 4, 2, 200)]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.from_url(db_url) as s:
        yield s


def _campaign(store: Store, team_id: int, **kw: Any) -> str:
    args: dict[str, Any] = {"name": "c", "spec": {"name": "c"}, "gpus": 1.0, "rounds": ROUNDS}
    campaign, created = store.create_campaign(team_id=team_id, **(args | kw))
    assert created
    return campaign.id


def _walk(store: Store, campaign_id: str, path: list[CampaignStatus]) -> None:
    for status in path:
        _, changed = store.transition(campaign_id, status, actor="test")
        assert changed


def _race(n: int, fn: Callable[[], T]) -> list[T]:
    """Run fn in n threads released at the same instant."""
    barrier = threading.Barrier(n)

    def go() -> T:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: go(), range(n)))


# -- schema ---------------------------------------------------------------------------------------
def test_sqlite_store_in_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    # A fresh machine: `~/.pdistill` is made by the first process that opens the default store.
    path = tmp_path / "new" / "deeper" / "store.db"
    with Store.from_url(f"sqlite:///{path}") as store:
        assert store.list_teams() == []
    assert path.is_file()


def test_migrate_builds_the_schema_of_the_models(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # at head already: nothing to do, no error
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert context.get_current_revision() == "0004"
            # SQLite does not reflect an index's DESC; PostgreSQL does, so both are covered.
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_keep_existing_campaigns(db_url: str) -> None:
    # A store made before the teacher's progress columns (0002) and the rounds' evaluation
    # progress (0004): its campaigns read back with a teacher of 0 updates, its rounds with the
    # samples their spec draws (all drawn once succeeded; 0 of 0 where the spec does not say),
    # and the new fields are writable.
    from alembic import command

    from orchestrator.store.engine import make_engine
    from orchestrator.store.migrate import alembic_config

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
            conn.execute(
                text("INSERT INTO teams (id, name, gpu_quota, created_at) VALUES (1, 'a', 1, :t)"),
                {"t": "2026-11-26 00:00:00+00:00"},
            )
            made = {"c-old": "{}", "c-spec": '{"evaluation": {"samples": 8}}'}
            for cid, spec in made.items():
                conn.execute(
                    text(
                        "INSERT INTO campaigns (id, team_id, name, spec, status, priority, gpus, "
                        "rounds_total, created_at, updated_at) VALUES (:id, 1, 'old', :spec, "
                        "'running', 0, 0, 2, :t, :t)"
                    ),
                    {"id": cid, "spec": spec, "t": "2026-11-26 00:00:00+00:00"},
                )
            for cid, k, status in [
                ("c-old", 1, "evaluating"),
                ("c-spec", 1, "succeeded"),
                ("c-spec", 2, "evaluating"),
            ]:
                conn.execute(
                    text(
                        "INSERT INTO rounds (campaign_id, k, teacher_steps, student_steps, "
                        "updates, updates_done, status) VALUES (:id, :k, 4, 2, 10, 10, :status)"
                    ),
                    {"id": cid, "k": k, "status": status},
                )
    finally:
        engine.dispose()
    with Store.from_url(db_url) as store:  # migrates to head
        (rnd,) = store.rounds("c-old")
        assert (rnd.status, rnd.eval_samples, rnd.eval_samples_done) == ("evaluating", 0, 0)
        counted = [(r.eval_samples, r.eval_samples_done) for r in store.rounds("c-spec")]
        assert counted == [(16, 16), (16, 0)]
        rnd = store.update_round("c-old", 1, eval_samples_done=5)
        assert (rnd.eval_samples, rnd.eval_samples_done) == (0, 5)
        old = store.get_campaign("c-old", team_id=None)
        assert old is not None and old.status is S.RUNNING
        assert (old.teacher_updates, old.teacher_updates_done, old.teacher_loss) == (0, 0, None)
        assert old.teacher_eval_samples_done == 0
        got = store.update_campaign("c-old", teacher_updates_done=5, teacher_loss=0.25)
        assert (got.teacher_updates_done, got.teacher_loss) == (5, 0.25)


def test_sqlite_runs_in_wal_mode_and_refuses_memory(tmp_path: Path) -> None:
    with (
        Store.from_url(f"sqlite:///{tmp_path / 'wal.db'}") as store,
        store.engine.connect() as conn,
    ):
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(ValueError, match="in-memory"):
        Store.from_url("sqlite://")


def test_package_data_covers_every_migration_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["orchestrator.store"]
    package = MIGRATIONS.parent
    files = [
        p.relative_to(package).as_posix()
        for p in MIGRATIONS.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "migrations/versions/0001_initial.py" in files
    assert "migrations/script.py.mako" in files
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    assert missing == [], f"not shipped in the wheel: {missing}"


# -- teams and tokens -----------------------------------------------------------------------------
def test_team_names_are_unique(store: Store) -> None:
    team = store.create_team("vision", gpu_quota=4)
    assert store.get_team(team.id) == team == store.team_by_name("vision")
    assert team.created_at.tzinfo is not None
    with pytest.raises(ConflictError, match="vision"):
        store.create_team("vision", gpu_quota=1)
    assert [t.name for t in store.list_teams()] == ["vision"]


def test_tokens_are_stored_hashed_and_revocable(store: Store) -> None:
    team = store.create_team("vision", gpu_quota=4)
    plaintext, token = store.create_token(team.id, "ci")
    assert plaintext.startswith("pd_") and len(plaintext) > 40
    assert token.prefix == plaintext[: len(token.prefix)] and len(token.prefix) <= 8
    assert store.team_for_token(plaintext) == team

    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM tokens")).all()
    cells = [str(cell) for row in rows for cell in row]
    secret = plaintext[len(token.prefix) :]
    assert not any(secret in cell for cell in cells), "the token's secret is stored in clear"
    assert hashlib.sha256(plaintext.encode()).hexdigest() in cells

    assert store.team_for_token(plaintext + "x") is None
    assert store.team_for_token("pd_" + secrets.token_urlsafe(32)) is None

    other_plaintext, _ = store.create_token(team.id, "laptop")
    revoked = store.revoke_token(token.id)
    assert revoked.revoked_at is not None
    assert store.revoke_token(token.id).revoked_at == revoked.revoked_at
    assert store.team_for_token(plaintext) is None
    assert store.team_for_token(other_plaintext) == team  # the team's other token still works
    assert [t.name for t in store.list_tokens(team.id)] == ["ci", "laptop"]
    with pytest.raises(NotFoundError):
        store.create_token(team.id + 1000, "nobody")


# -- campaigns ------------------------------------------------------------------------------------
def test_idempotency_key_returns_the_first_campaign(store: Store) -> None:
    a = store.create_team("a", gpu_quota=4)
    b = store.create_team("b", gpu_quota=4)
    args: dict[str, Any] = {"name": "c", "spec": {"name": "c"}, "gpus": 1.0, "rounds": ROUNDS}
    first, created = store.create_campaign(team_id=a.id, idempotency_key="k1", **args)
    again, created_again = store.create_campaign(team_id=a.id, idempotency_key="k1", **args)
    assert created and not created_again
    assert again == first
    # A key belongs to its team; no key means no deduplication.
    other_team, created_b = store.create_campaign(team_id=b.id, idempotency_key="k1", **args)
    assert created_b and other_team.id != first.id
    store.create_campaign(team_id=a.id, **args)
    store.create_campaign(team_id=a.id, **args)
    assert store.list_campaigns(team_id=a.id)[1] == 3
    assert len(store.audit(first.id)) == 1


def test_idempotency_key_holds_under_racing_requests(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)

    def post() -> tuple[str, bool]:
        campaign, created = store.create_campaign(
            team_id=team.id,
            name="c",
            spec={"name": "c"},
            gpus=1.0,
            rounds=ROUNDS,
            idempotency_key="retry-me",
        )
        return campaign.id, created

    results = _race(8, post)
    assert sum(created for _, created in results) == 1
    assert len({cid for cid, _ in results}) == 1
    campaigns, total = store.list_campaigns(team_id=team.id)
    assert total == 1
    assert len(store.rounds(campaigns[0].id)) == len(ROUNDS)
    assert len(store.audit(campaigns[0].id)) == 1


def test_a_team_never_sees_another_teams_campaigns(store: Store) -> None:
    a = store.create_team("a", gpu_quota=4)
    b = store.create_team("b", gpu_quota=4)
    cid = _campaign(store, a.id)
    assert store.get_campaign(cid, team_id=b.id) is None
    assert store.list_campaigns(team_id=b.id) == ([], 0)
    assert store.list_campaigns(team_id=b.id, status=S.QUEUED) == ([], 0)
    mine = store.get_campaign(cid, team_id=a.id)
    assert mine is not None and mine.team_id == a.id
    assert store.get_campaign(cid, team_id=None) == mine  # the admin sees every team
    assert store.list_campaigns(team_id=None)[1] == 1


def test_campaign_fields_round_trip(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    spec = {"name": "demo", "steps": {"start": 16, "target": 2}, "tags": ["x", 1.5, None]}
    campaign, _ = store.create_campaign(
        team_id=team.id, name="demo", spec=spec, gpus=2.5, rounds=ROUNDS, priority=3
    )
    got = store.get_campaign(campaign.id, team_id=team.id)
    assert got == campaign
    assert got.id.startswith("c-") and len(got.id) == 14
    assert (got.spec, got.status, got.priority, got.gpus) == (spec, S.QUEUED, 3, 2.5)
    assert (got.rounds_total, got.current_round, got.best_fid) == (3, None, None)
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset().total_seconds() == 0
    rounds = store.rounds(campaign.id)
    assert [(r.k, r.teacher_steps, r.student_steps, r.updates) for r in rounds] == ROUNDS
    assert {r.status for r in rounds} == {RoundStatus.PENDING}

    assert (got.teacher_updates, got.teacher_updates_done) == (0, 0)
    assert (got.teacher_loss, got.teacher_finished_at) == (None, None)
    trained, _ = store.create_campaign(
        team_id=team.id, name="t", spec={}, gpus=0, rounds=ROUNDS, teacher_updates=300
    )
    ready = datetime.now(UTC)
    teacher = store.update_campaign(
        trained.id, teacher_updates_done=300, teacher_loss=0.5, teacher_finished_at=ready
    )
    assert (teacher.teacher_updates, teacher.teacher_updates_done) == (300, 300)
    assert (teacher.teacher_loss, teacher.teacher_finished_at) == (0.5, ready)

    updated = store.update_campaign(campaign.id, current_round=2, best_fid=12.5, submission_id="j")
    assert (updated.current_round, updated.best_fid, updated.submission_id) == (2, 12.5, "j")
    assert store.get_campaign(campaign.id, team_id=None) == updated
    assert len(store.audit(campaign.id)) == 1  # progress is not a transition
    with pytest.raises(TypeError, match="status"):
        store.update_campaign(campaign.id, status="running")
    with pytest.raises(NotFoundError):
        store.update_campaign("c-000000000000", best_fid=1.0)
    with pytest.raises(ValueError, match="distinct"):
        store.create_campaign(team_id=team.id, name="x", spec={}, gpus=0, rounds=[ROUNDS[0]] * 2)
    with pytest.raises(NotFoundError):
        store.create_campaign(team_id=team.id + 1000, name="x", spec={}, gpus=0, rounds=ROUNDS)


# -- state machine --------------------------------------------------------------------------------
def test_every_transition_is_allowed_or_refused_as_specified(store: Store) -> None:
    team = store.create_team("a", gpu_quota=100)
    for start in S:
        for to in S:
            if to == start:
                continue
            cid = _campaign(store, team.id)
            _walk(store, cid, PATHS[start])
            before = store.audit(cid)
            if (start, to) in EDGES:
                campaign, changed = store.transition(cid, to, actor="test", reason="why")
                assert changed and campaign.status == to and campaign.reason == "why"
                last = store.audit(cid)[-1]
                assert (last.from_status, last.to_status, last.actor) == (start, to, "test")
                assert len(store.audit(cid)) == len(before) + 1
            else:
                with pytest.raises(TransitionError) as err:
                    store.transition(cid, to, actor="test")
                assert f"from {start.value} to {to.value}" in str(err.value)
                assert (err.value.from_status, err.value.to_status) == (start, to)
                after = store.get_campaign(cid, team_id=None)
                assert after is not None and after.status == start
                assert store.audit(cid) == before


def test_audit_log_holds_each_transition_once(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id, actor="team:a")
    store.transition(cid, "starting", actor="admin", submission_id="pdistill-" + cid)
    running, _ = store.transition(cid, S.RUNNING, actor="driver")
    again, changed = store.transition(cid, S.RUNNING, actor="driver", reason="ignored")
    assert not changed and again == running
    done, _ = store.transition(cid, S.SUCCEEDED, actor="driver", best_fid=3.5)
    trail = [(e.from_status, e.to_status, e.actor) for e in store.audit(cid)]
    assert trail == [
        (None, "queued", "team:a"),
        ("queued", "starting", "admin"),
        ("starting", "running", "driver"),
        ("running", "succeeded", "driver"),
    ]
    assert done.submission_id == "pdistill-" + cid and done.best_fid == 3.5
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at and done.finished_at.tzinfo == UTC
    with pytest.raises(ValueError, match="allowed"):
        store.transition(cid, "finished", actor="driver")
    with pytest.raises(TypeError, match="name"):
        store.transition(cid, S.SUCCEEDED, actor="driver", name="renamed")
    with pytest.raises(NotFoundError):
        store.transition("c-000000000000", S.STARTING, actor="admin")


def test_concurrent_transitions_change_once(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    results = _race(8, lambda: store.transition(cid, S.STARTING, actor="scheduler")[1])
    assert sum(results) == 1
    assert [e.to_status for e in store.audit(cid)] == ["queued", "starting"]


def test_requeue_resume_and_cancel(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    _walk(store, cid, [S.STARTING, S.RUNNING])
    store.update_round(cid, 1, status="training", updates_done=40)
    # The reconciler requeues a dead driver; the campaign keeps its first start time.
    requeued, _ = store.transition(cid, S.QUEUED, actor="reconciler", reason="driver died")
    assert requeued.reason == "driver died" and requeued.started_at is not None
    _walk(store, cid, [S.STARTING, S.RUNNING])
    failed, _ = store.transition(cid, S.FAILED, actor="driver", reason="diverged")
    assert failed.finished_at is not None and failed.reason == "diverged"
    resumed, _ = store.transition(cid, S.QUEUED, actor="team:a")
    assert resumed.finished_at is None and resumed.reason is None
    _walk(store, cid, [S.STARTING, S.RUNNING, S.CANCELLING, S.CANCELLED])
    rounds = store.rounds(cid)
    assert [r.status for r in rounds] == [
        RoundStatus.CANCELLED,
        RoundStatus.PENDING,
        RoundStatus.PENDING,
    ]
    assert rounds[0].finished_at is not None and rounds[0].updates_done == 40


# -- listing, queue, quotas -----------------------------------------------------------------------
def test_list_pages_and_filters_by_status(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    ids = [_campaign(store, team.id, name=f"c{i}") for i in range(7)]
    for cid in ids[1::2]:  # 3 of 7 start
        store.transition(cid, S.STARTING, actor="scheduler")
    queued = [cid for cid in reversed(ids) if cid not in ids[1::2]]  # newest first
    pages = [
        store.list_campaigns(team_id=team.id, status="queued", limit=3, offset=o) for o in (0, 3)
    ]
    assert [c.id for c in pages[0][0]] == queued[:3]
    assert [c.id for c in pages[1][0]] == queued[3:]
    assert pages[0][1] == pages[1][1] == 4
    active, total = store.list_campaigns(team_id=team.id, status=[S.STARTING, S.RUNNING])
    assert total == 3 and {c.id for c in active} == set(ids[1::2])
    everything, total = store.list_campaigns(team_id=team.id, limit=None)
    assert total == 7 and [c.id for c in everything] == list(reversed(ids))
    assert store.list_campaigns(team_id=team.id, offset=10) == ([], 7)
    with pytest.raises(ValueError, match="limit"):
        store.list_campaigns(team_id=team.id, limit=0)
    with pytest.raises(ValueError, match="allowed"):
        store.list_campaigns(team_id=team.id, status="paused")


def test_queue_orders_by_priority_then_age(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    priorities = [0, 5, 0, 5, 1, 9]
    ids = [_campaign(store, team.id, priority=p) for p in priorities]
    store.transition(ids[5], S.STARTING, actor="scheduler")  # no longer queued
    assert [c.id for c in store.queue()] == [ids[1], ids[3], ids[4], ids[0], ids[2]]
    assert [c.id for c in store.queue(limit=2)] == [ids[1], ids[3]]


def test_gpus_in_use_counts_active_campaigns(store: Store) -> None:
    a = store.create_team("a", gpu_quota=8)
    b = store.create_team("b", gpu_quota=8)
    plan = {
        S.QUEUED: 100.0,
        S.STARTING: 1.0,
        S.RUNNING: 2.0,
        S.CANCELLING: 4.0,
        S.SUCCEEDED: 200.0,
        S.FAILED: 300.0,
        S.CANCELLED: 400.0,
    }
    for status, gpus in plan.items():
        _walk(store, _campaign(store, a.id, gpus=gpus), PATHS[status])
    _walk(store, _campaign(store, b.id, gpus=0.5), PATHS[S.RUNNING])
    assert store.gpus_in_use(a.id) == 7.0
    assert store.gpus_in_use(b.id) == 0.5
    assert store.gpus_in_use() == 7.5
    assert store.gpus_in_use(b.id + 1000) == 0.0


# -- rounds, trials -------------------------------------------------------------------------------
def test_rounds_and_trials_record_progress(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    before = store.get_campaign(cid, team_id=None)
    assert before is not None

    tuning = store.update_round(cid, 1, status=RoundStatus.TUNING)
    assert tuning.started_at is not None and tuning.finished_at is None
    store.upsert_trial(cid, 1, 0, lr=1e-4, status="running")
    store.upsert_trial(cid, 1, 1, lr=3e-4)
    store.upsert_trial(cid, 1, 0, val_loss=0.25, status=TrialStatus.SUCCEEDED)
    store.upsert_trial(cid, 1, 1, status="stopped", val_loss=0.5)
    trials = store.trials(cid, 1)
    assert [(t.index, t.lr, t.val_loss, t.status) for t in trials] == [
        (0, 1e-4, 0.25, TrialStatus.SUCCEEDED),
        (1, 3e-4, 0.5, TrialStatus.STOPPED),
    ]
    assert store.trials(cid, 2) == []

    store.update_round(cid, 1, status="training", lr=1e-4, updates_done=50, loss=0.3)
    done = store.update_round(
        cid, 1, status="succeeded", updates_done=100, fid=9.5, ddim_fid=20.0, wall_seconds=12.0
    )
    assert done.started_at == tuning.started_at and done.finished_at is not None
    assert (done.lr, done.updates_done, done.fid, done.ddim_fid) == (1e-4, 100, 9.5, 20.0)
    assert store.rounds(cid)[0] == done
    after = store.get_campaign(cid, team_id=None)
    assert after is not None and after.updated_at > before.updated_at  # watchers see progress

    with pytest.raises(NotFoundError):
        store.update_round(cid, 9, updates_done=1)
    with pytest.raises(NotFoundError):
        store.upsert_trial(cid, 9, 0, lr=1e-4)
    with pytest.raises(ValueError, match="lr"):
        store.upsert_trial(cid, 2, 0, val_loss=1.0)
    with pytest.raises(ValueError, match="allowed"):
        store.update_round(cid, 1, status="paused")
    with pytest.raises(TypeError, match="teacher_steps"):
        store.update_round(cid, 1, teacher_steps=4)


def test_racing_trial_upserts_make_one_row(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    _race(8, lambda: store.upsert_trial(cid, 2, 0, lr=1e-4, status="running"))
    assert [(t.index, t.status) for t in store.trials(cid, 2)] == [(0, TrialStatus.RUNNING)]


# -- what the control plane adds (compare-and-set, waiting reasons, counts) -----------------------
def test_transition_compare_and_set_leaves_a_moved_campaign_alone(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    _walk(store, cid, [S.STARTING])
    store.update_campaign(cid, submission_id="job-a1")
    # A decision taken on an older read (the campaign was queued): no change, no audit row.
    c, changed = store.transition(cid, S.CANCELLED, actor="x", only_from={S.QUEUED})
    assert (changed, c.status) == (False, S.STARTING)
    c, changed = store.transition(cid, S.RUNNING, actor="driver", only_submission="job-a0")
    assert (changed, c.status) == (False, S.STARTING)
    c, changed = store.transition(
        cid, S.RUNNING, actor="driver", only_from={S.STARTING}, only_submission="job-a1"
    )
    assert (changed, c.status) == (True, S.RUNNING)
    assert [e.to_status for e in store.audit(cid)] == ["queued", "starting", "running"]
    # Of racing failure reports for the same driver, one wins.
    results = _race(
        8,
        lambda: store.transition(
            cid, S.QUEUED, actor="scheduler", only_from={S.RUNNING}, only_submission="job-a1"
        )[1],
    )
    assert results.count(True) == 1
    assert [e.to_status for e in store.audit(cid)][-1] == "queued"


def test_note_waiting_only_touches_queued_campaigns_and_only_on_change(store: Store) -> None:
    team = store.create_team("a", gpu_quota=4)
    cid = _campaign(store, team.id)
    assert store.note_waiting(cid, "waiting for GPUs")
    first = store.get_campaign(cid, team_id=None)
    assert first is not None and first.reason == "waiting for GPUs"
    assert not store.note_waiting(cid, "waiting for GPUs")  # same reason: no write
    again = store.get_campaign(cid, team_id=None)
    assert again is not None and again.updated_at == first.updated_at
    _walk(store, cid, [S.STARTING])
    assert not store.note_waiting(cid, "waiting for quota")  # not queued any more
    c = store.get_campaign(cid, team_id=None)
    assert c is not None and c.reason is None and len(store.audit(cid)) == 2


def test_status_counts_rounds_of_and_quota(store: Store) -> None:
    a, b = store.create_team("a", gpu_quota=4), store.create_team("b", gpu_quota=0)
    ids = [_campaign(store, a.id) for _ in range(3)] + [_campaign(store, b.id)]
    _walk(store, ids[0], PATHS[S.RUNNING])
    _walk(store, ids[1], PATHS[S.CANCELLED])
    counts = store.status_counts()
    assert counts[S.QUEUED] == 2 and counts[S.RUNNING] == 1 and counts[S.CANCELLED] == 1
    assert counts[S.SUCCEEDED] == 0 and set(counts) == set(S)
    assert store.status_counts(team_id=b.id)[S.QUEUED] == 1
    rounds = store.rounds_of([ids[0], ids[3]])
    assert [r.k for r in rounds[ids[0]]] == [1, 2, 3] and len(rounds[ids[3]]) == 3
    assert store.rounds_of([]) == {}
    assert store.set_gpu_quota(b.id, 2.5).gpu_quota == 2.5
    with pytest.raises(ValueError, match="gpu_quota"):
        store.set_gpu_quota(b.id, -1)
    store.ping()
