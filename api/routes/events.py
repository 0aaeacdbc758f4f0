"""Live updates of one campaign as server-sent events.

The server polls the store (every settings.events_poll_s) and sends an `campaign` event, whose
data is a `CampaignEvent` (the campaign and its rounds), whenever either changed; the first
event comes at once. After the event that shows a final status it sends `end` and closes; also
when the server begins to stop (`end` with the reason "the server is stopping"), so a shutdown
need not wait for, or cut off, the streams that browsers and `pdistill watch` hold open.
Comments (`: keep-alive`) keep idle proxies from closing the stream. Authenticated like every
route (`Authorization: Bearer`), so a browser reads it with fetch() and a streaming body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.auth import Caller, CallerDep, ServicesDep, owned_campaign
from api.routes.campaigns import ERRORS
from api.schemas import CampaignEvent
from api.services import Services, round_out
from orchestrator.store import FINAL

router = APIRouter(prefix="/v1", tags=["campaigns"])
KEEP_ALIVE_S = 15.0


def _snapshot(svc: Services, who: Caller, campaign_id: str) -> tuple[str, bool] | None:
    c = svc.store.get_campaign(campaign_id, team_id=who.team_id)
    if c is None:
        return None
    rounds = svc.store.rounds(c.id)
    event = CampaignEvent(
        campaign=svc.campaign_out(c, rounds), rounds=[round_out(r) for r in rounds]
    )
    return event.model_dump_json(), c.status in FINAL


async def _stream(svc: Services, who: Caller, campaign_id: str) -> AsyncIterator[str]:
    poll = svc.settings.events_poll_s
    last, seq, quiet = None, 0, 0.0
    while True:
        snap = await run_in_threadpool(_snapshot, svc, who, campaign_id)
        if snap is None:
            yield f'event: end\ndata: {{"reason": "campaign {campaign_id} is gone"}}\n\n'
            return
        data, final = snap
        if data != last:
            seq += 1
            yield f"id: {seq}\nevent: campaign\ndata: {data}\n\n"
            last, quiet = data, 0.0
        elif quiet >= KEEP_ALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        if final:
            yield 'event: end\ndata: {"reason": "final"}\n\n'
            return
        if svc.stopping.is_set():
            yield 'event: end\ndata: {"reason": "the server is stopping"}\n\n'
            return
        await asyncio.sleep(poll)
        quiet += poll


@router.get(
    "/campaigns/{campaign_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `campaign` events whose data is a "
            "CampaignEvent (#/components/schemas/CampaignEvent), then one `end` event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **ERRORS,
    },
)
def events(campaign_id: str, svc: ServicesDep, who: CallerDep) -> StreamingResponse:
    owned_campaign(svc, who, campaign_id)  # 404 before the stream starts
    return StreamingResponse(
        _stream(svc, who, campaign_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
