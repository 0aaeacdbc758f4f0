"""Teams and their tokens (admin token only). `pdistill token create` does the same directly
against the store, for the first token of a fresh installation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from api.auth import AdminDep, ServicesDep
from api.schemas import Problem, TeamCreate, TeamOut, TokenCreate, TokenOut
from api.services import Services
from orchestrator.store import TeamView, TokenView

router = APIRouter(prefix="/v1", tags=["admin"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, unknown or revoked token."},
    403: {"model": Problem, "description": "Not the admin token."},
}


def _team(svc: Services, name: str) -> TeamView:
    team = svc.store.team_by_name(name)
    if team is None:
        raise HTTPException(404, f"no team named {name!r}")
    return team


def _token(t: TokenView, team: str, plaintext: str | None = None) -> TokenOut:
    return TokenOut(
        id=t.id,
        team=team,
        name=t.name,
        prefix=t.prefix,
        created_at=t.created_at,
        revoked_at=t.revoked_at,
        token=plaintext,
    )


@router.post(
    "/teams",
    status_code=201,
    response_model=TeamOut,
    responses={**ERRORS, 409: {"model": Problem, "description": "The name is taken."}},
)
def create_team(body: TeamCreate, svc: ServicesDep, _: AdminDep) -> TeamOut:
    t = svc.store.create_team(body.name, gpu_quota=body.gpu_quota)
    return TeamOut(name=t.name, gpu_quota=t.gpu_quota, created_at=t.created_at)


@router.get("/teams", response_model=list[TeamOut], responses=ERRORS)
def list_teams(svc: ServicesDep, _: AdminDep) -> list[TeamOut]:
    return [
        TeamOut(name=t.name, gpu_quota=t.gpu_quota, created_at=t.created_at)
        for t in svc.store.list_teams()
    ]


@router.post(
    "/teams/{team}/tokens",
    status_code=201,
    response_model=TokenOut,
    responses={**ERRORS, 404: {"model": Problem, "description": "No such team."}},
)
def create_token(team: str, body: TokenCreate, svc: ServicesDep, _: AdminDep) -> TokenOut:
    """A new token for the team; the answer is the only place the token is ever shown."""
    t = _team(svc, team)
    plaintext, token = svc.store.create_token(t.id, body.name)
    return _token(token, t.name, plaintext)


@router.get(
    "/teams/{team}/tokens",
    response_model=list[TokenOut],
    responses={**ERRORS, 404: {"model": Problem, "description": "No such team."}},
)
def list_tokens(team: str, svc: ServicesDep, _: AdminDep) -> list[TokenOut]:
    t = _team(svc, team)
    return [_token(k, t.name) for k in svc.store.list_tokens(t.id)]


@router.post(
    "/tokens/{token_id}/revoke",
    response_model=TokenOut,
    responses={**ERRORS, 404: {"model": Problem, "description": "No such token."}},
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], svc: ServicesDep, _: AdminDep
) -> TokenOut:
    token = svc.store.revoke_token(token_id)
    return _token(token, svc.team_name(token.team_id))
