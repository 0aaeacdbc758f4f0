"""The cluster as the control plane sees it, and who the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CallerDep, ServicesDep
from api.routes.campaigns import ERRORS
from api.schemas import (
    ClusterOut,
    Demand,
    GroupOut,
    MeOut,
    NodeOut,
    PendingOut,
    Problem,
    Usage,
)
from orchestrator.jobs import Demand as Need
from orchestrator.store import ACTIVE, CampaignView

router = APIRouter(prefix="/v1", tags=["cluster"])


@router.get(
    "/cluster",
    response_model=ClusterOut,
    responses={401: ERRORS[401], 503: {"model": Problem, "description": "Ray does not answer."}},
)
def cluster(svc: ServicesDep, who: CallerDep) -> ClusterOut:
    """Nodes and worker groups, CPUs and GPUs (total and in use), what waits for resources, and
    the demand of running and queued campaigns (of every team: counts only)."""
    info = svc.link.cluster()
    active = svc.store.list_campaigns(team_id=None, status=list(ACTIVE), limit=None)[0]
    queued = svc.store.queue()

    def demand(cs: list[CampaignView]) -> Demand:
        return Demand(
            campaigns=len(cs),
            gpus=sum(c.gpus for c in cs),
            cpus=sum(Need.of(c.spec).cpus for c in cs),
        )

    return ClusterOut(
        nodes=[
            NodeOut(
                id=n.id, alive=n.alive, address=n.address, cpus=n.cpus, gpus=n.gpus, group=n.group
            )
            for n in info.nodes
        ],
        groups=[
            GroupOut(name=g.name, nodes=g.nodes, cpus=g.cpus, gpus=g.gpus) for g in info.groups
        ],
        pending=None
        if info.pending is None
        else [
            PendingOut(resources=p.resources, count=p.count, source=p.source) for p in info.pending
        ],
        cpus=Usage(total=info.cpus_total, in_use=max(0.0, info.cpus_total - info.cpus_available)),
        gpus=Usage(total=info.gpus_total, in_use=max(0.0, info.gpus_total - info.gpus_available)),
        running=demand(active),
        queued=demand(queued),
        autoscaler_request=svc.reconciler.requested if svc.reconciler else [],
    )


@router.get("/me", response_model=MeOut, responses={401: ERRORS[401]})
def me(who: CallerDep) -> MeOut:
    return MeOut(
        team=who.team.name if who.team else None,
        admin=who.admin,
        gpu_quota=who.team.gpu_quota if who.team else None,
    )
