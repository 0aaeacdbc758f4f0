"""Bearer tokens: a team's token (stored hashed; `Store.team_for_token`) scopes every route to
that team; the admin token (settings.admin_token) sees every team and manages teams and tokens.
Another team's campaign answers 404, exactly like a campaign that does not exist."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from orchestrator.store import CampaignView, TeamView

bearer = HTTPBearer(
    auto_error=False,
    description="A team token (`pdistill token create --team NAME`) or the admin token.",
)


@dataclasses.dataclass(frozen=True)
class Caller:
    team: TeamView | None  # None: the admin
    admin: bool

    @property
    def team_id(self) -> int | None:
        """The store's scope for this caller: None (every team) for the admin."""
        return None if self.team is None else self.team.id

    @property
    def actor(self) -> str:
        return "admin" if self.team is None else f"team:{self.team.name}"


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


ServicesDep = Annotated[Services, Depends(services)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def caller(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None:
        raise _unauthorized("missing bearer token: send the header 'Authorization: Bearer TOKEN'")
    token = credentials.credentials
    admin = svc.settings.admin_token
    if admin is not None and secrets.compare_digest(
        token.encode(), admin.get_secret_value().encode()
    ):
        return Caller(team=None, admin=True)
    team = svc.store.team_for_token(token)
    if team is None:
        raise _unauthorized("unknown or revoked token")
    return Caller(team=team, admin=False)


CallerDep = Annotated[Caller, Depends(caller)]


def require_admin(who: CallerDep) -> Caller:
    if not who.admin:
        raise HTTPException(403, "this needs the admin token (PDISTILL_ADMIN_TOKEN)")
    return who


AdminDep = Annotated[Caller, Depends(require_admin)]


def owned_campaign(svc: Services, who: Caller, campaign_id: str) -> CampaignView:
    """The caller's campaign, or 404 (also when it belongs to another team)."""
    c = svc.store.get_campaign(campaign_id, team_id=who.team_id)
    if c is None:
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    return c
