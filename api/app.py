"""The control plane's HTTP API: `create_app(settings)`.

The lifespan opens the store (migrating it to head), makes the Ray link (connected lazily by the
reconciler, so the API serves while Ray is away) and starts the reconciler thread
(orchestrator/scheduler.py) unless settings.reconcile is off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from api import dashboard, errors
from api.metrics import LatencyMiddleware, Metrics
from api.routes import admin, campaigns, cluster, events, health, rounds
from api.schemas import CampaignEvent, CampaignSubmission
from api.services import Services
from orchestrator.ray_link import RayLink
from orchestrator.scheduler import Reconciler
from orchestrator.settings import Settings
from orchestrator.store import Store

log = logging.getLogger(__name__)
DESCRIPTION = """Progressive distillation campaigns as a service.

Every `/v1` route needs `Authorization: Bearer TOKEN`: a team token (`pdistill token create
--team NAME`) sees and acts on that team's campaigns only (another team's campaign answers 404);
the admin token (PDISTILL_ADMIN_TOKEN) sees every team and manages teams and tokens. Errors are
`{"detail": "..."}`; invalid input (422) names each field in `detail[].loc`.
"""


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the submission body (read by hand: it may be JSON or YAML) and
    the event data of the campaign stream."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        # The submission body, and the data of each server-sent event (the stream itself is
        # documented as text/event-stream, so FastAPI would not list its model).
        for model in (CampaignSubmission, CampaignEvent):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        _errors_as_json(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _errors_as_json(schema: dict[str, Any]) -> None:
    """Error answers are JSON on every route (FastAPI documents them under the route's own
    media type: text/plain, image/png, text/event-stream), and every 422 has the shape that
    `api/errors.py` sends (FastAPI's default omits `message` and `input`)."""
    problem = {"$ref": "#/components/schemas/ValidationProblem"}
    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            for code, response in op.get("responses", {}).items():
                content = response.get("content")
                if code == "422":
                    response["content"] = {"application/json": {"schema": problem}}
                elif code[0] in "45" and content and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _open_mlflow(svc: Services) -> None:
    """Create a SQLite MLflow DB here, once, before any campaign driver starts, so drivers never
    wait for its first build (tens of seconds) or spend it in a job that may be cancelled. (The
    build itself is safe anywhere: `Tracker` builds a new DB aside under a lock and renames it.)
    A tracking server has built its own DB; if this fails the API still serves and drivers try
    again."""
    if not svc.settings.mlflow_tracking_uri.startswith("sqlite:"):
        return
    try:
        svc.tracker()
    except Exception as exc:  # MLflow raises many kinds; the API must start anyway
        log.warning("MLflow at %s: %s", svc.settings.mlflow_tracking_uri, exc)


def create_app(settings: Settings, *, reconcile: bool | None = None) -> FastAPI:
    """`reconcile` overrides settings.reconcile (tests of the HTTP surface alone pass False).
    The server that runs it sets `app.state.stopping` when it begins to stop (`run_api`)."""
    reconcile = settings.reconcile if reconcile is None else reconcile
    stopping = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(Store.from_url, settings.database_url)
        link = RayLink(settings)
        svc = Services(settings=settings, store=store, link=link, stopping=stopping)
        app.state.services = svc
        app.state.metrics = Metrics(store)
        stop = threading.Event()
        thread = None
        if reconcile:
            await run_in_threadpool(_open_mlflow, svc)
            svc.reconciler = Reconciler(store, settings, link)
            thread = threading.Thread(
                target=svc.reconciler.run, args=(stop,), name="pdistill-reconciler", daemon=True
            )
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                await run_in_threadpool(thread.join, 30.0)
            link.close()
            store.close()

    app = FastAPI(
        title="pdistill",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.stopping = stopping
    errors.install(app)
    app.add_middleware(LatencyMiddleware)
    for module in (campaigns, rounds, events, cluster, admin, health):
        app.include_router(module.router)
    dashboard.mount_dashboard(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
