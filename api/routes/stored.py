"""Reading a file of a campaign's storage for a route, by the URI a stage record names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException
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
