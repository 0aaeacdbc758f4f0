"""The HTTP surface against the real app and a real store (SQLite file and PostgreSQL), without
Ray: campaigns stay queued (the reconciler is off), which is what submission, auth, idempotency,
validation, listing, cancel/resume of queued campaigns and the event stream need."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_harness import ADMIN, TINY
from fastapi.testclient import TestClient

from api.app import create_app
from orchestrator.history import TEACHER_LOSS, TEACHER_START, TRAIN_LOSS, TRAIN_START
from orchestrator.jobs import storage_name
from orchestrator.settings import Settings
from orchestrator.store import CampaignStatus, Store
from orchestrator.tracking import Tracker

A = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        admin_token=ADMIN,
        storage_uri=str(tmp_path / "storage"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        ray_address=None,
        ray_dashboard_url=None,
        events_poll_s=0.05,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, reconcile=False)) as c:
        yield c


def team(client: TestClient, name: str, gpu_quota: float = 0) -> dict[str, str]:
    r = client.post("/v1/teams", json={"name": name, "gpu_quota": gpu_quota}, headers=A)
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/teams/{name}/tokens", json={"name": "ci"}, headers=A)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def submit(client: TestClient, headers: dict[str, str], **over: Any) -> dict[str, Any]:
    r = client.post("/v1/campaigns", json={**TINY, **over}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- auth -----------------------------------------------------------------------------------------
def test_every_v1_route_needs_a_known_token(client: TestClient) -> None:
    r = client.get("/v1/campaigns")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/campaigns", headers={"Authorization": "Bearer pd_nope"})
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


def test_me_tells_team_and_admin(client: TestClient) -> None:
    vision = team(client, "vision", gpu_quota=2)
    assert client.get("/v1/me", headers=vision).json() == {
        "team": "vision",
        "admin": False,
        "gpu_quota": 2.0,
    }
    assert client.get("/v1/me", headers=A).json()["admin"] is True


def test_team_b_can_neither_read_list_cancel_nor_resume_team_a(client: TestClient) -> None:
    a, b = team(client, "team-a"), team(client, "team-b")
    mine = submit(client, a)["id"]
    cancelled = submit(client, a)["id"]
    assert client.post(f"/v1/campaigns/{cancelled}/cancel", headers=a).status_code == 200
    for method, path in [
        ("GET", f"/v1/campaigns/{mine}"),
        ("GET", f"/v1/campaigns/{mine}/rounds"),
        ("GET", f"/v1/campaigns/{mine}/rounds/1/trials"),
        ("GET", f"/v1/campaigns/{mine}/rounds/1/loss"),
        ("GET", f"/v1/campaigns/{mine}/rounds/1/samples.png"),
        ("GET", f"/v1/campaigns/{mine}/rounds/1/student.safetensors"),
        ("GET", f"/v1/campaigns/{mine}/teacher.safetensors"),
        ("GET", f"/v1/campaigns/{mine}/teacher/samples.png"),
        ("GET", f"/v1/campaigns/{mine}/teacher/loss"),
        ("GET", f"/v1/campaigns/{mine}/logs"),
        ("GET", f"/v1/campaigns/{mine}/history"),
        ("GET", f"/v1/campaigns/{mine}/events"),
        ("POST", f"/v1/campaigns/{mine}/cancel"),
        ("POST", f"/v1/campaigns/{cancelled}/resume"),
    ]:
        r = client.request(method, path, headers=b)
        # Exactly what a campaign that does not exist answers: existence does not leak.
        ghost_path = path.replace(mine, "c-000000000000").replace(cancelled, "c-000000000000")
        ghost = client.request(method, ghost_path, headers=b)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"].replace(mine, "X").replace(cancelled, "X") == ghost.json()[
            "detail"
        ].replace("c-000000000000", "X"), path
    assert client.get("/v1/campaigns", headers=b).json()["total"] == 0
    # Nothing changed by team B's attempts.
    assert client.get(f"/v1/campaigns/{mine}", headers=a).json()["status"] == "queued"
    assert client.get(f"/v1/campaigns/{cancelled}", headers=a).json()["status"] == "cancelled"
    every = client.get("/v1/campaigns", headers=A).json()
    assert every["total"] == 2 and {c["team"] for c in every["items"]} == {"team-a"}


def test_admin_routes_refuse_team_tokens_and_revoked_tokens_stop_working(
    client: TestClient,
) -> None:
    vision = team(client, "vision")
    r = client.post("/v1/teams", json={"name": "x"}, headers=vision)
    assert r.status_code == 403 and "admin token" in r.json()["detail"]
    assert client.post("/v1/teams", json={"name": "vision"}, headers=A).status_code == 409
    tokens = client.get("/v1/teams/vision/tokens", headers=A).json()
    assert [t["name"] for t in tokens] == ["ci"] and all(t["token"] is None for t in tokens)
    r = client.post(f"/v1/tokens/{tokens[0]['id']}/revoke", headers=A)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.get("/v1/me", headers=vision).status_code == 401


# -- submission -----------------------------------------------------------------------------------
def test_submit_json_and_yaml_then_read_back(client: TestClient) -> None:
    vision = team(client, "vision")
    c = submit(client, vision, priority=5)
    assert c["status"] == "queued" and c["team"] == "vision" and c["priority"] == 5
    assert c["rounds_total"] == 1 and c["progress"] == 0.0 and c["gpus"] == 0.0
    assert set(c["links"]) == {"mlflow", "ray_dashboard"}
    body = yaml.safe_dump({**TINY, "steps": {"start": 4, "target": 1}})
    r = client.post(
        "/v1/campaigns", content=body, headers={**vision, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/campaigns/{r.json()['id']}"
    rounds = client.get(f"/v1/campaigns/{r.json()['id']}/rounds", headers=vision).json()
    assert [(x["k"], x["teacher_steps"], x["student_steps"]) for x in rounds] == [
        (1, 4, 2),
        (2, 2, 1),
    ]
    assert all(x["status"] == "pending" and x["samples_url"] is None for x in rounds)
    assert all(x["student_url"] is None for x in rounds)
    r = client.get(f"/v1/campaigns/{c['id']}/rounds/1/student.safetensors", headers=vision)
    assert r.status_code == 404
    assert r.json()["detail"] == f"round 1 of campaign {c['id']} is pending: no student yet"
    teacher = client.get(f"/v1/campaigns/{c['id']}", headers=vision).json()["teacher"]
    assert teacher["checkpoint_uri"] is None and teacher["checkpoint_url"] is None
    r = client.get(f"/v1/campaigns/{c['id']}/teacher.safetensors", headers=vision)
    assert r.status_code == 404
    assert r.json()["detail"] == f"the teacher of campaign {c['id']} is pending: not ready yet"
    assert client.get(f"/v1/campaigns/{c['id']}", headers=vision).json()["id"] == c["id"]


def test_same_idempotency_key_gives_one_campaign_and_409_for_another_spec(
    client: TestClient, settings: Settings
) -> None:
    vision = team(client, "vision")
    headers = {**vision, "Idempotency-Key": "retry-1"}
    first = client.post("/v1/campaigns", json=TINY, headers=headers)
    again = client.post("/v1/campaigns", json=TINY, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/campaigns", json={**TINY, "seed": 7}, headers=headers)
    assert other.status_code == 409 and "retry-1" in other.json()["detail"]

    # Racing retries (a client that times out and retries at once) still make one campaign.
    results: list[int] = []
    race = {**vision, "Idempotency-Key": "race"}

    def post() -> None:
        results.append(client.post("/v1/campaigns", json=TINY, headers=race).status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] * 5 + [201]
    assert client.get("/v1/campaigns", headers=vision).json()["total"] == 2
    with Store.from_url(settings.database_url) as store:
        campaigns = store.list_campaigns(team_id=None)[0]
        assert sorted(c.idempotency_key or "" for c in campaigns) == ["race", "retry-1"]
        assert all(len(store.audit(c.id)) == 1 for c in campaigns)  # each created once


@pytest.mark.parametrize(
    ("body", "content_type", "field", "words"),
    [
        ({**TINY, "steps": {"start": 6, "target": 1}}, "json", "steps.start", "power of two"),
        ({**TINY, "diffusion": {"output": "eps"}}, "json", "diffusion.output", "'x', 'v'"),
        ({**TINY, "dataset": "builtin:nope"}, "yaml", "dataset", "builtin:digits"),
        ({**TINY, "resources": {"workers": 0}}, "json", "resources.workers", "greater than 0"),
        ({**TINY, "learning_rate": 1}, "json", "learning_rate", "not permitted"),
        ({**TINY, "priority": 5000}, "json", "priority", "-1000 to 1000"),
        ({**TINY, "model": {"preset": "cifar10"}}, "json", "model", "presets that fit them"),
        ({k: v for k, v in TINY.items() if k != "dataset"}, "json", "dataset", "required"),
        ("steps: [1, 2", "yaml", "body", "not valid YAML"),
        ("[1, 2]", "json", "body", "mapping"),
    ],
)
def test_bad_spec_answers_422_naming_the_field(
    client: TestClient, body: Any, content_type: str, field: str, words: str
) -> None:
    vision = team(client, "vision")
    dump = yaml.safe_dump if content_type == "yaml" else json.dumps
    text = body if isinstance(body, str) else dump(body)
    kind = "application/yaml" if content_type == "yaml" else "application/json"
    r = client.post("/v1/campaigns", content=text, headers={**vision, "Content-Type": kind})
    assert r.status_code == 422, r.text
    problems = r.json()["detail"]
    where = [".".join(str(p) for p in e["loc"][1:]) or e["loc"][0] for e in problems]
    assert field in where, problems
    assert words in r.json()["message"], r.json()["message"]
    assert client.get("/v1/campaigns", headers=vision).json()["total"] == 0


def test_unsupported_content_type_is_named(client: TestClient) -> None:
    vision = team(client, "vision")
    r = client.post("/v1/campaigns", content="x", headers={**vision, "Content-Type": "text/csv"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["header", "Content-Type"]
    assert "application/yaml" in r.json()["detail"][0]["msg"]


def test_gpu_campaign_beyond_team_quota_is_refused(client: TestClient) -> None:
    vision = team(client, "vision", gpu_quota=1)
    r = client.post(
        "/v1/campaigns",
        json={**TINY, "resources": {"workers": 2, "gpus_per_worker": 1}},
        headers=vision,
    )
    assert r.status_code == 422
    (problem,) = r.json()["detail"]
    assert problem["loc"] == ["body", "resources", "gpus_per_worker"]
    assert "needs 2 GPUs" in problem["msg"] and "quota is 1" in problem["msg"]
    ok = submit(client, vision, resources={"workers": 1, "gpus_per_worker": 1})
    assert ok["gpus"] == 1.0


def test_admin_submits_for_a_named_team(client: TestClient) -> None:
    team(client, "vision")
    r = client.post("/v1/campaigns", json=TINY, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "team"]
    r = client.post("/v1/campaigns?team=vision", json=TINY, headers=A)
    assert r.status_code == 201 and r.json()["team"] == "vision"


# -- listing, cancel, resume ----------------------------------------------------------------------
def test_list_filters_by_status_and_pages(client: TestClient) -> None:
    vision = team(client, "vision")
    ids = [submit(client, vision)["id"] for _ in range(5)]
    client.post(f"/v1/campaigns/{ids[0]}/cancel", headers=vision)
    page = client.get("/v1/campaigns?limit=2&offset=1", headers=vision).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [c["id"] for c in page["items"]] == ids[::-1][1:3]  # newest first
    queued = client.get("/v1/campaigns?status=queued", headers=vision).json()
    assert queued["total"] == 4 and ids[0] not in {c["id"] for c in queued["items"]}
    both = client.get("/v1/campaigns?status=queued&status=cancelled", headers=vision).json()
    assert both["total"] == 5
    r = client.get("/v1/campaigns?status=sleeping", headers=vision)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status", 0]
    assert "'queued'" in r.json()["detail"][0]["msg"]
    r = client.get("/v1/campaigns?limit=0", headers=vision)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_cancel_and_resume_follow_the_state_machine(client: TestClient, settings: Settings) -> None:
    vision = team(client, "vision")
    cid = submit(client, vision)["id"]
    r = client.post(f"/v1/campaigns/{cid}/resume", headers=vision)
    assert r.status_code == 409 and "only failed or cancelled" in r.json()["detail"]
    r = client.post(f"/v1/campaigns/{cid}/cancel", headers=vision)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["reason"] == "cancelled by team:vision"
    assert client.post(f"/v1/campaigns/{cid}/cancel", headers=vision).json()["status"] == (
        "cancelled"
    )
    r = client.post(f"/v1/campaigns/{cid}/resume", headers=vision)
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["reason"] is None
    with Store.from_url(settings.database_url) as store:
        for status in ("starting", "running", "succeeded"):
            store.transition(cid, status, actor="test")
        trail = [(e.from_status, e.to_status) for e in store.audit(cid)]
    assert trail[:3] == [(None, "queued"), ("queued", "cancelled"), ("cancelled", "queued")]
    history = client.get(f"/v1/campaigns/{cid}/history", headers=vision).json()
    assert [(e["from_status"], e["to_status"], e["actor"], e["detail"]) for e in history[:3]] == [
        (None, "queued", "team:vision", None),
        ("queued", "cancelled", "team:vision", "cancelled by team:vision"),
        ("cancelled", "queued", "team:vision", None),
    ]
    assert [e["to_status"] for e in history[3:]] == ["starting", "running", "succeeded"]
    assert history == sorted(history, key=lambda e: e["at"])
    r = client.post(f"/v1/campaigns/{cid}/cancel", headers=vision)
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]


# -- events, health, metrics ----------------------------------------------------------------------
def _events(client: TestClient, cid: str, headers: dict[str, str]) -> list[tuple[str, Any]]:
    out, event = [], "message"
    with client.stream("GET", f"/v1/campaigns/{cid}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append((event, json.loads(line.split(":", 1)[1])))
    return out


def test_events_stream_follows_changes_and_ends_when_final(
    client: TestClient, settings: Settings
) -> None:
    vision = team(client, "vision")
    cid = submit(client, vision)["id"]
    with Store.from_url(settings.database_url) as store:

        def drive() -> None:
            import time

            time.sleep(0.3)
            store.transition(cid, CampaignStatus.STARTING, actor="test")
            store.transition(cid, CampaignStatus.RUNNING, actor="test")
            time.sleep(0.3)
            store.update_round(cid, 1, status="training", updates_done=4, loss=0.5)
            time.sleep(0.3)
            store.update_round(cid, 1, status="succeeded", updates_done=10, fid=12.5)
            store.transition(cid, CampaignStatus.SUCCEEDED, actor="test")

        worker = threading.Thread(target=drive)
        worker.start()
        events = _events(client, cid, vision)
        worker.join()
    kinds = [e for e, _ in events]
    assert kinds[0] == "campaign" and kinds[-1] == "end" and kinds.count("end") == 1
    statuses = [d["campaign"]["status"] for e, d in events if e == "campaign"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    training = [d for e, d in events if e == "campaign" and d["rounds"][0]["status"] == "training"]
    assert training and training[0]["rounds"][0]["updates_done"] == 4
    last = events[-2][1]
    assert last["rounds"][0]["fid"] == 12.5 and last["campaign"]["progress"] == 1.0
    assert last["rounds"][0]["samples_url"] == f"/v1/campaigns/{cid}/rounds/1/samples.png"


@pytest.mark.parametrize(
    ("path", "key", "metric", "start"),
    [
        ("rounds/1/loss", "/round-1", TRAIN_LOSS, TRAIN_START),
        ("teacher/loss", "", TEACHER_LOSS, TEACHER_START),
    ],
)
def test_a_restarted_loss_curve_is_that_of_the_model_it_holds(
    client: TestClient, settings: Settings, path: str, key: str, metric: str, start: str
) -> None:
    vision = team(client, "vision")
    c = submit(client, vision)
    r = client.get(f"/v1/campaigns/{c['id']}/{path}", headers=vision)
    assert (r.status_code, r.json()) == (200, [])  # nothing logged yet
    tracker = Tracker(settings.mlflow_tracking_uri)
    run = tracker.run(name="run", key=f"campaign/{storage_name(c['id'], c['name'])}{key}")

    def curve() -> list[tuple[int, float]]:
        r = client.get(f"/v1/campaigns/{c['id']}/{path}", headers=vision)
        assert r.status_code == 200
        return [(p["step"], p["loss"]) for p in r.json()]

    # Logged 10…40; lost; went on from what it saved at 20 (its start logged as it started);
    # MLflow keeps both attempts.
    tracker.client.log_metric(run, start, 0, timestamp=999, step=0)
    for when, (step, value) in enumerate([(10, 4), (20, 3), (30, 2), (40, 1)]):
        tracker.client.log_metric(run, metric, value, timestamp=1000 + when, step=step)
    assert curve() == [(10, 4.0), (20, 3.0), (30, 2.0), (40, 1.0)]
    tracker.client.log_metric(run, start, 20, timestamp=1010, step=20)
    assert curve() == [(10, 4.0), (20, 3.0)]
    tracker.client.log_metric(run, metric, 2.5, timestamp=1011, step=30)
    assert curve() == [(10, 4.0), (20, 3.0), (30, 2.5)]


def test_teacher_progress_counts_like_a_round(client: TestClient, settings: Settings) -> None:
    vision = team(client, "vision")
    c = submit(client, vision)  # TINY: a 30-update teacher, one round of 10 updates
    assert c["teacher"] == {
        "source": "train",
        "status": "pending",
        "updates": 30,
        "updates_done": 0,
        "loss": None,
        "finished_at": None,
        "checkpoint_uri": None,
        "checkpoint_url": None,
        "steps": 2,
        "fid": None,
        "samples_url": None,
        "eval_samples": 32,
        "eval_samples_done": 0,
    }
    loaded = submit(client, vision, teacher={"checkpoint": "s3://models/teacher.safetensors"})
    assert (loaded["teacher"]["source"], loaded["teacher"]["updates"]) == ("checkpoint", 0)

    def get(cid: str) -> dict[str, Any]:
        return dict(client.get(f"/v1/campaigns/{cid}", headers=vision).json())

    with Store.from_url(settings.database_url) as store:
        for cid in (c["id"], loaded["id"]):
            store.transition(cid, CampaignStatus.STARTING, actor="test")
            store.transition(cid, CampaignStatus.RUNNING, actor="test")
        store.update_campaign(c["id"], teacher_updates_done=15, teacher_loss=0.5)
        now = get(c["id"])
        assert (now["teacher"]["status"], now["teacher"]["updates_done"]) == ("training", 15)
        assert now["teacher"]["loss"] == 0.5
        assert now["progress"] == 0.25  # half the teacher, no round: 0.5 of 2 parts
        assert get(loaded["id"])["teacher"]["status"] == "loading"
        assert get(loaded["id"])["progress"] == 0.0  # a loaded teacher weighs nothing

        store.update_campaign(
            c["id"], teacher_updates_done=30, teacher_finished_at=datetime.now(UTC)
        )
        store.update_round(c["id"], 1, status="training", updates_done=5)
        now = get(c["id"])
        assert now["teacher"]["status"] == "ready" and now["teacher"]["finished_at"]
        # Where the stage keeps it: a new campaign's teacher.checkpoint may name it.
        folder = Path(settings.storage_uri).resolve() / "campaigns" / f"{c['id']}-api-tiny"
        assert now["teacher"]["checkpoint_uri"] == str(folder / "teacher.safetensors")
        # The same file from the API, streamed from storage once it is there.
        url = now["teacher"]["checkpoint_url"]
        assert url == f"/v1/campaigns/{c['id']}/teacher.safetensors"
        r = client.get(url, headers=vision)
        assert r.status_code == 404
        assert (
            r.json()["detail"]
            == f"its teacher {folder / 'teacher.safetensors'} is missing from storage"
        )
        folder.mkdir(parents=True)
        (folder / "teacher.safetensors").write_bytes(b"weights" * 1000)
        r = client.get(url, headers=vision)
        assert r.status_code == 200 and r.content == b"weights" * 1000
        assert r.headers["content-length"] == "7000"
        name = f"{c['id']}-api-tiny-teacher-2-step.safetensors"  # steps.start: 2
        assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
        assert now["progress"] == 0.725  # (1 + 0.9 × 5/10) / 2
        # Its evaluation draws 32 samples of its student and 32 of DDIM (TINY's 32 samples).
        (rnd,) = client.get(f"/v1/campaigns/{c['id']}/rounds", headers=vision).json()
        assert (rnd["eval_samples"], rnd["eval_samples_done"]) == (64, 0)
        store.update_round(c["id"], 1, status="evaluating", updates_done=10, eval_samples_done=16)
        (rnd,) = client.get(f"/v1/campaigns/{c['id']}/rounds", headers=vision).json()
        assert (rnd["status"], rnd["eval_samples"], rnd["eval_samples_done"]) == (
            "evaluating",
            64,
            16,
        )
        assert get(c["id"])["progress"] == 0.9625  # (1 + 0.9 + 0.1 × 16/64) / 2
        # Its FID at its own 2 steps, once its evaluation is recorded, and the sample grid.
        assert (now["teacher"]["fid"], now["teacher"]["samples_url"]) == (None, None)
        grid_url = f"/v1/campaigns/{c['id']}/teacher/samples.png"
        r = client.get(grid_url, headers=vision)
        assert r.status_code == 404
        assert r.json()["detail"] == f"the teacher of campaign {c['id']} has not been evaluated yet"
        store.update_campaign(c["id"], teacher_eval_samples_done=16)  # its evaluation runs
        assert get(c["id"])["teacher"]["eval_samples_done"] == 16
        store.update_campaign(c["id"], teacher_fid=12.5)
        assert (get(c["id"])["teacher"]["fid"], get(c["id"])["teacher"]["samples_url"]) == (
            12.5,
            grid_url,
        )
        grid = folder / "samples" / "distilled-2.png"
        grid.parent.mkdir()
        grid.write_bytes(b"\x89PNG grid")
        (folder / "stages").mkdir()
        record = {"fid": 12.5, "distilled_grid": str(grid)}
        (folder / "stages" / "teacher-eval.json").write_text(json.dumps(record))
        r = client.get(grid_url, headers=vision)
        assert r.status_code == 200 and r.content == b"\x89PNG grid"
        assert r.headers["content-type"] == "image/png"
        store.transition(loaded["id"], CampaignStatus.FAILED, actor="test", reason="x")
        assert get(loaded["id"])["teacher"]["status"] == "failed"


def test_probes_and_metrics(client: TestClient, settings: Settings) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["store"] == "ok"
    assert "PDISTILL_RAY_ADDRESS" in r.json()["ray"]
    vision = team(client, "vision")
    for _ in range(2):
        submit(client, vision)
    text = client.get("/metrics").text
    assert 'pdistill_campaigns{status="queued"} 2.0' in text
    assert 'pdistill_campaigns{status="running"} 0.0' in text
    assert "pdistill_queue_length 2.0" in text
    assert "pdistill_training_restarts_total 0.0" in text
    cid = submit(client, vision)["id"]
    with Store.from_url(settings.database_url) as store:
        store.transition(cid, "starting", actor="scheduler", submission_id="j")
        store.transition(cid, "running", actor="driver")
        assert store.note(
            cid, "round 1's training started again", actor="driver", only_submission="j"
        )
        store.transition(cid, "queued", actor="scheduler", reason="restarting: its driver died")
    text = client.get("/metrics").text
    assert "pdistill_training_restarts_total 1.0" in text
    assert "pdistill_campaign_requeues_total 1.0" in text
    assert 'route="/v1/campaigns",status="201"' in text
    r = client.get("/v1/cluster", headers=vision)
    assert r.status_code == 503 and "Ray" in r.json()["detail"]
    assert client.get("/nope").json()["detail"] == "no such route: GET /nope (see /docs)"
