"""Probes and metrics (open: no token)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import ServicesDep
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])
PROBE_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up (liveness)."""
    return Health(status="ok")


def _store_ok(svc: ServicesDep) -> str:
    try:
        svc.store.ping()
    except Exception as exc:
        return f"unreachable: {exc}"
    return "ok"


def _ray_ok(svc: ServicesDep) -> str:
    return "ok" if svc.link.connect() else f"unreachable: {svc.link.error}"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(svc: ServicesDep) -> JSONResponse:
    """Ready when the store and the Ray cluster (GCS and Jobs API) answer."""

    async def probe(fn: object) -> str:
        try:
            return await asyncio.wait_for(
                run_in_threadpool(fn, svc),  # type: ignore[arg-type]
                PROBE_TIMEOUT_S,
            )
        except TimeoutError:
            return f"unreachable: no answer within {PROBE_TIMEOUT_S:g} s"

    store, ray = await asyncio.gather(probe(_store_ok), probe(_ray_ok))
    ready = store == "ok" and ray == "ok"
    body = Readiness(ready=ready, store=store, ray=ray)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
