"""Reading a file of a campaign's storage for a route, by the URI a stage record names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException, Response
from fastapi.responses import StreamingResponse

from api.schemas import Problem
from api.services import Services
from orchestrator.storage import Storage
from orchestrator.store import CampaignView

T = TypeVar("T")


def stored(
    svc: Services, c: CampaignView, uri: str, what: str, read: Callable[[Storage, str], T | None]
) -> T:
    """`read(storage, path)` of the file a stage record names as `uri`; 404 when it is missing
    or lies outside the campaign's storage (a record never points the API elsewhere)."""
    storage = svc.storage(c)
    prefix = storage.root_uri.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise HTTPException(404, f"{what} {uri} is outside the campaign storage")
    found = read(storage, uri.removeprefix(prefix))
    if found is None:
        raise HTTPException(404, f"{what} {uri} is missing from storage")
    return found


# The OpenAPI responses of a route that answers a sample grid (`sample_grid`).
GRID_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    503: {"model": Problem, "description": "Campaign storage does not answer."},
}


def sample_grid(svc: Services, c: CampaignView, stage: str, what: str) -> Response:
    """The PNG grid of the samples that evaluation `stage` drew (404 until it is recorded)."""
    record = svc.stage_record(c, stage)
    if record is None or not record.get("distilled_grid"):
        raise HTTPException(404, f"{what} of campaign {c.id} has not been evaluated yet")
    grid = str(record["distilled_grid"])
    data = stored(svc, c, grid, f"{what}'s sample grid", Storage.read_bytes)
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


# The OpenAPI responses of a route that streams a safetensors checkpoint (`checkpoint`).
CHECKPOINT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The weights; the config (U-Net, parameterization, spec) is in the "
        "safetensors header.",
    },
    503: {"model": Problem, "description": "Campaign storage does not answer."},
}


def checkpoint(svc: Services, c: CampaignView, uri: str, what: str, name: str) -> StreamingResponse:
    """The checkpoint at `uri`, streamed from storage as the attachment `name`."""
    size, chunks = stored(svc, c, uri, what, Storage.read_chunks)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
