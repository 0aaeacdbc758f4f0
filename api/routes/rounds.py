"""A campaign's rounds: the round table, Tune trials, loss curves (MLflow), sample grids, and
each round's distilled student."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.responses import StreamingResponse

from api.auth import CallerDep, ServicesDep, owned_campaign
from api.routes.campaigns import ERRORS
from api.routes.stored import CHECKPOINT_RESPONSES, GRID_RESPONSES, checkpoint, sample_grid
from api.schemas import LossPoint, Problem, RoundOut, TrialOut
from api.services import Services, loss_points, round_out, trial_out
from orchestrator.history import TRAIN_LOSS, TRAIN_START
from orchestrator.jobs import storage_name
from orchestrator.store import CampaignView, RoundView

router = APIRouter(prefix="/v1/campaigns/{campaign_id}/rounds", tags=["rounds"])
RoundK = Annotated[int, Path(ge=1, le=64, description="1-based round number.")]


def _round(svc: Services, c: CampaignView, k: int) -> RoundView:
    for r in svc.store.rounds(c.id):
        if r.k == k:
            return r
    raise HTTPException(404, f"campaign {c.id} has no round {k} (it has 1..{c.rounds_total})")


@router.get("", response_model=list[RoundOut], responses=ERRORS)
def rounds(campaign_id: str, svc: ServicesDep, who: CallerDep) -> list[RoundOut]:
    """One row per halving round: steps, status, LR, loss, FIDs (distilled and DDIM), times."""
    c = owned_campaign(svc, who, campaign_id)
    return [round_out(r) for r in svc.store.rounds(c.id)]


@router.get("/{k}/trials", response_model=list[TrialOut], responses=ERRORS)
def trials(campaign_id: str, k: RoundK, svc: ServicesDep, who: CallerDep) -> list[TrialOut]:
    """The LR search of round k (empty when the spec's tune is off): LR vs held-out loss."""
    c = owned_campaign(svc, who, campaign_id)
    _round(svc, c, k)
    return [trial_out(t) for t in svc.store.trials(c.id, k)]


@router.get(
    "/{k}/loss",
    response_model=list[LossPoint],
    responses={**ERRORS, 503: {"model": Problem, "description": "MLflow does not answer."}},
)
def loss(campaign_id: str, k: RoundK, svc: ServicesDep, who: CallerDep) -> list[LossPoint]:
    """The training loss of round k by update, from MLflow (`train/loss` of the round run).
    After a restart, what the updates it went back over logged before is left out: the curve
    is that of the model the round holds now."""
    c = owned_campaign(svc, who, campaign_id)
    _round(svc, c, k)
    return loss_points(
        svc, f"campaign/{storage_name(c.id, c.name)}/round-{k}", TRAIN_LOSS, TRAIN_START
    )


@router.get("/{k}/samples.png", response_class=Response, responses={**GRID_RESPONSES, **ERRORS})
def samples(campaign_id: str, k: RoundK, svc: ServicesDep, who: CallerDep) -> Response:
    """The distilled student's sample grid of round k (404 until the round is evaluated)."""
    c = owned_campaign(svc, who, campaign_id)
    _round(svc, c, k)
    return sample_grid(svc, c, f"round-{k}-eval", f"round {k}")


@router.get(
    "/{k}/student.safetensors",
    response_class=StreamingResponse,
    responses={**CHECKPOINT_RESPONSES, **ERRORS},
)
def student(campaign_id: str, k: RoundK, svc: ServicesDep, who: CallerDep) -> StreamingResponse:
    """The distilled student of round k, which samples in the round's `student_steps` (404
    until the round is trained). `workers.checkpoint.load_unet` reads it: the safetensors
    header holds the U-Net, the diffusion parameterization and the spec."""
    c = owned_campaign(svc, who, campaign_id)
    r = _round(svc, c, k)
    record = svc.stage_record(c, f"round-{k}-train")
    if record is None:
        raise HTTPException(404, f"round {k} of campaign {c.id} is {r.status}: no student yet")
    name = f"{storage_name(c.id, c.name)}-round-{k}-{r.student_steps}-step.safetensors"
    return checkpoint(svc, c, str(record["uri"]), f"round {k}'s student", name)
