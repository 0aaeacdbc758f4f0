"""Campaigns: submit (JSON or YAML, idempotent with a key), list, read, cancel, resume, history,
logs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import TypeAdapter, ValidationError

from api.auth import Caller, CallerDep, ServicesDep, owned_campaign
from api.errors import InputError
from api.routes.stored import CHECKPOINT_RESPONSES, GRID_RESPONSES, checkpoint, sample_grid
from api.schemas import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    CampaignOut,
    CampaignPage,
    HistoryEntry,
    LossPoint,
    Problem,
    ValidationProblem,
)
from api.services import Services, loss_points, teacher_out
from orchestrator.history import TEACHER_LOSS, TEACHER_START
from orchestrator.jobs import Demand, storage_name
from orchestrator.ray_link import RayUnavailableError
from orchestrator.scheduler import cancel_campaign, resume_campaign
from orchestrator.spec import CampaignSpec, SpecError, parse_spec, plan_rounds
from orchestrator.store import CampaignStatus, CampaignView, ConflictError, TeamView

router = APIRouter(prefix="/v1", tags=["campaigns"])
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
JSON_TYPES = {"application/json", ""}
_PRIORITY = TypeAdapter(int)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, unknown or revoked token."},
    404: {"model": Problem, "description": "No such campaign (or another team's)."},
}
BODY = {"$ref": "#/components/schemas/CampaignSubmission"}
SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": BODY}, "application/yaml": {"schema": BODY}},
    }
}


def _load_body(raw: bytes, content_type: str) -> dict[str, Any]:
    kind = content_type.split(";")[0].strip().lower()
    if kind in YAML_TYPES:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError.one(["body"], f"not valid YAML: {exc}", kind="yaml_invalid") from exc
    elif kind in JSON_TYPES or kind.endswith("+json"):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InputError.one(["body"], f"not valid JSON: {exc}", kind="json_invalid") from exc
    else:
        raise InputError.one(
            ["header", "Content-Type"],
            f"unsupported content type {kind!r}; send application/json or application/yaml",
            content_type,
        )
    if not isinstance(data, dict):
        raise InputError.one(
            ["body"],
            f"a campaign spec is a mapping of fields, got {type(data).__name__}",
            data,
            "dict_type",
        )
    return data


def _validate(data: dict[str, Any], team: TeamView) -> tuple[dict[str, Any], int, CampaignSpec]:
    """(normalized spec, priority, parsed spec); InputError naming each bad field."""
    errors: list[dict[str, Any]] = []
    fields = dict(data)
    priority = 0
    if "priority" in fields:
        raw = fields.pop("priority")
        try:
            priority = _PRIORITY.validate_python(raw, strict=True)
            if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
                raise ValueError
        except (ValidationError, ValueError):
            errors.append(
                {
                    "loc": ["body", "priority"],
                    "msg": f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}",
                    "type": "priority_range",
                    "input": raw,
                }
            )
    try:
        spec = parse_spec(fields)
    except SpecError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            errors.extend(InputError.from_pydantic(cause, ["body"]).errors)
        else:
            errors.append({"loc": ["body"], "msg": str(exc), "type": "spec", "input": None})
        raise InputError(errors) from exc
    if errors:
        raise InputError(errors)
    normalized = spec.model_dump(mode="json")
    gpus = Demand.of(normalized).gpus
    if gpus > team.gpu_quota:
        raise InputError.one(
            ["body", "resources", "gpus_per_worker"],
            f"the campaign needs {gpus:g} GPUs (resources.workers × gpus_per_worker) but team "
            f"{team.name}'s GPU quota is {team.gpu_quota:g}; allowed: at most {team.gpu_quota:g}",
            normalized["resources"]["gpus_per_worker"],
        )
    return normalized, priority, spec


def _refuse_what_never_fits(svc: Services, spec: dict[str, Any]) -> None:
    """On the service's own Ray head, which never grows, a campaign whose round needs more than
    the head has would wait for ever: it is refused instead."""
    if not svc.settings.ray_embedded:
        return  # a cluster may grow (autoscaler, new nodes): the campaign waits, saying why
    try:
        cpus, gpus = svc.link.totals()
    except RayUnavailableError:
        return  # the reconciler says so, and the campaign waits for the head
    if (need := Demand.of(spec).beyond(cpus, gpus)) is None:
        return
    raise InputError.one(
        ["body", "resources", "workers"],
        f"{need} but this service's own Ray head has {cpus:g} CPUs and {gpus:g} GPUs and does "
        "not grow; allowed: a round within it (PDISTILL_EMBEDDED_RAY_CPUS sizes the head, "
        "PDISTILL_RAY_ADDRESS names a cluster)",
        spec["resources"]["workers"],
    )


def _team_for_submit(svc: Services, who: Caller, team: str | None) -> TeamView:
    if who.team is not None:
        if team is not None and team != who.team.name:
            raise InputError.one(
                ["query", "team"], "a team token submits for its own team only", team
            )
        return who.team
    if team is None:
        raise InputError.one(
            ["query", "team"], "the admin token submits for a team: give ?team=NAME", None
        )
    found = svc.store.team_by_name(team)
    if found is None:
        raise InputError.one(["query", "team"], f"no team named {team!r}", team)
    return found


def _out(svc: Services, c: CampaignView) -> CampaignOut:
    return svc.campaign_out(c, svc.store.rounds(c.id))


@router.post(
    "/campaigns",
    status_code=201,
    response_model=CampaignOut,
    openapi_extra=SUBMIT_BODY,
    responses={
        200: {"model": CampaignOut, "description": "Replay: this Idempotency-Key's campaign."},
        409: {"model": Problem, "description": "The Idempotency-Key was used for another spec."},
        422: {"model": ValidationProblem, "description": "Invalid spec: each field named."},
        401: ERRORS[401],
    },
    summary="Submit a campaign",
)
async def submit(
    request: Request,
    response: Response,
    svc: ServicesDep,
    who: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="A retried POST with the same key returns the same campaign.",
        ),
    ] = None,
    team: Annotated[str | None, Query(description="Admin token only: the team.")] = None,
) -> CampaignOut:
    """The body is a campaign spec (see examples/*.yaml) plus an optional `priority`."""
    data = _load_body(await request.body(), request.headers.get("content-type", ""))

    def create() -> tuple[CampaignOut, bool]:
        owner = _team_for_submit(svc, who, team)
        spec, priority, parsed = _validate(data, owner)
        _refuse_what_never_fits(svc, spec)
        c, created = svc.store.create_campaign(
            team_id=owner.id,
            name=spec["name"],
            spec=spec,
            gpus=Demand.of(spec).gpus,
            rounds=[
                (p.round, p.teacher_steps, p.student_steps, p.updates) for p in plan_rounds(parsed)
            ],
            teacher_updates=parsed.teacher.updates,
            eval_samples=parsed.round_eval_samples,
            priority=priority,
            idempotency_key=idempotency_key,
            actor=who.actor,
        )
        if not created and (c.spec != spec or c.priority != priority):
            raise ConflictError(
                f"Idempotency-Key {idempotency_key!r} was already used for campaign {c.id} "
                "with a different spec; use a new key for a new campaign"
            )
        return _out(svc, c), created

    out, created = await run_in_threadpool(create)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/campaigns/{out.id}"
    return out


@router.get(
    "/campaigns",
    response_model=CampaignPage,
    responses={401: ERRORS[401], 422: {"model": ValidationProblem}},
)
def list_campaigns(
    svc: ServicesDep,
    who: CallerDep,
    status: Annotated[
        list[CampaignStatus] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> CampaignPage:
    """The caller's campaigns (the admin's: every team's), newest first."""
    items, total = svc.store.list_campaigns(
        team_id=who.team_id, status=status or None, limit=limit, offset=offset
    )
    rounds = svc.store.rounds_of([c.id for c in items])
    return CampaignPage(
        items=[svc.campaign_out(c, rounds[c.id]) for c in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut, responses=ERRORS)
def get_campaign(campaign_id: str, svc: ServicesDep, who: CallerDep) -> CampaignOut:
    return _out(svc, owned_campaign(svc, who, campaign_id))


@router.get("/campaigns/{campaign_id}/history", response_model=list[HistoryEntry], responses=ERRORS)
def history(campaign_id: str, svc: ServicesDep, who: CallerDep) -> list[HistoryEntry]:
    """What happened to the campaign, oldest first: every status change (who made it and why:
    submitted, started, cancelled, a driver restarted, failed with the reason) and, while it
    ran, each time the teacher's or a round's training started again."""
    c = owned_campaign(svc, who, campaign_id)
    return [
        HistoryEntry(
            at=e.at,
            from_status=None if e.from_status is None else CampaignStatus(e.from_status),
            to_status=CampaignStatus(e.to_status),
            actor=e.actor,
            detail=e.detail,
        )
        for e in svc.store.audit(c.id)
    ]


@router.post(
    "/campaigns/{campaign_id}/cancel",
    response_model=CampaignOut,
    responses={**ERRORS, 409: {"model": Problem, "description": "Already succeeded or failed."}},
)
def cancel(campaign_id: str, svc: ServicesDep, who: CallerDep) -> CampaignOut:
    """Queued: cancelled now. Starting or running: cancelling, its Ray Job is stopped, then
    cancelled (with the round that was running). Cancelling or cancelled: unchanged."""
    c = owned_campaign(svc, who, campaign_id)
    return _out(svc, cancel_campaign(svc.store, svc.link, c, actor=who.actor))


@router.post(
    "/campaigns/{campaign_id}/resume",
    response_model=CampaignOut,
    responses={**ERRORS, 409: {"model": Problem, "description": "Not failed or cancelled."}},
)
def resume(campaign_id: str, svc: ServicesDep, who: CallerDep) -> CampaignOut:
    """Queue a failed or cancelled campaign again; its finished rounds are not run again."""
    c = owned_campaign(svc, who, campaign_id)
    return _out(svc, resume_campaign(svc.store, c, actor=who.actor))


@router.get(
    "/campaigns/{campaign_id}/teacher.safetensors",
    response_class=StreamingResponse,
    responses={**CHECKPOINT_RESPONSES, **ERRORS},
)
def teacher(campaign_id: str, svc: ServicesDep, who: CallerDep) -> StreamingResponse:
    """The campaign's teacher, trained or loaded, which samples in the spec's `steps.start`
    (404 until it is ready): the file `teacher.checkpoint_uri` names, for a client that cannot
    reach the campaign's storage."""
    c = owned_campaign(svc, who, campaign_id)
    t = teacher_out(c, svc.storage(c))
    if t.checkpoint_uri is None:
        raise HTTPException(404, f"the teacher of campaign {c.id} is {t.status}: not ready yet")
    name = f"{storage_name(c.id, c.name)}-teacher-{c.spec['steps']['start']}-step.safetensors"
    return checkpoint(svc, c, t.checkpoint_uri, "its teacher", name)


@router.get(
    "/campaigns/{campaign_id}/teacher/loss",
    response_model=list[LossPoint],
    responses={**ERRORS, 503: {"model": Problem, "description": "MLflow does not answer."}},
)
def teacher_loss(campaign_id: str, svc: ServicesDep, who: CallerDep) -> list[LossPoint]:
    """The teacher's training loss by update, from MLflow (empty for a teacher loaded from a
    checkpoint); after a restart, that of the teacher it went on with."""
    c = owned_campaign(svc, who, campaign_id)
    return loss_points(svc, f"campaign/{storage_name(c.id, c.name)}", TEACHER_LOSS, TEACHER_START)


@router.get(
    "/campaigns/{campaign_id}/teacher/samples.png",
    response_class=Response,
    responses={**GRID_RESPONSES, **ERRORS},
)
def teacher_samples(campaign_id: str, svc: ServicesDep, who: CallerDep) -> Response:
    """The teacher's sample grid: DDIM in the spec's `steps.start`, drawn from the noise every
    evaluation of the campaign starts from (404 until the teacher is evaluated)."""
    return sample_grid(svc, owned_campaign(svc, who, campaign_id), "teacher-eval", "the teacher")


@router.get(
    "/campaigns/{campaign_id}/logs",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        503: {"model": Problem, "description": "The Ray cluster does not answer."},
        **ERRORS,
    },
)
def logs(
    campaign_id: str,
    svc: ServicesDep,
    who: CallerDep,
    lines: Annotated[int, Query(ge=1, le=100_000, description="Last lines to return.")] = 200,
) -> PlainTextResponse:
    """The tail of the campaign driver's log (its current Ray Job)."""
    c = owned_campaign(svc, who, campaign_id)
    if c.submission_id is None:
        raise HTTPException(404, f"campaign {c.id} has not been submitted to Ray yet")
    text = svc.link.jobs.logs(c.submission_id)
    if text is None:
        raise HTTPException(
            404, f"Ray does not know job {c.submission_id} (the Ray head restarted?)"
        )
    tail = "\n".join(text.splitlines()[-lines:])
    return PlainTextResponse(tail + ("\n" if tail else ""))
