"""Teams and their bearer tokens. Only a token's sha256 is stored: the plaintext is shown once."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orchestrator.store.base import StoreBase
from orchestrator.store.errors import ConflictError, NotFoundError
from orchestrator.store.models import Team, Token, utcnow
from orchestrator.store.views import TeamView, TokenView, view

TOKEN_PREFIX = "pd_"
# Characters of a token kept in clear to tell tokens apart ("pd_" + 5 of the secret's 43).
_SHOWN = 8


def hash_token(plaintext: str) -> str:
    # A token carries 256 random bits: a fast hash cannot be brute-forced and allows an
    # indexed lookup (a slow password hash would need a scan per request).
    return hashlib.sha256(plaintext.encode()).hexdigest()


class Accounts(StoreBase):
    def create_team(self, name: str, *, gpu_quota: float) -> TeamView:
        if gpu_quota < 0:
            raise ValueError(f"gpu_quota must be >= 0 (got {gpu_quota})")
        try:
            with self._writing() as s:
                team = Team(name=name, gpu_quota=gpu_quota)
                s.add(team)
                s.flush()
                return view(TeamView, team)
        except IntegrityError:
            raise ConflictError(f"a team named {name!r} already exists") from None

    def get_team(self, team_id: int) -> TeamView | None:
        with self._reading() as s:
            team = s.get(Team, team_id)
            return None if team is None else view(TeamView, team)

    def team_by_name(self, name: str) -> TeamView | None:
        with self._reading() as s:
            team = s.scalars(select(Team).where(Team.name == name)).one_or_none()
            return None if team is None else view(TeamView, team)

    def set_gpu_quota(self, team_id: int, gpu_quota: float) -> TeamView:
        if gpu_quota < 0:
            raise ValueError(f"gpu_quota must be >= 0 (got {gpu_quota})")
        with self._writing() as s:
            team = s.get(Team, team_id)
            if team is None:
                raise NotFoundError(f"no team with id {team_id}")
            team.gpu_quota = gpu_quota
            s.flush()
            return view(TeamView, team)

    def list_teams(self) -> list[TeamView]:
        with self._reading() as s:
            return [view(TeamView, t) for t in s.scalars(select(Team).order_by(Team.name))]

    def create_token(self, team_id: int, name: str) -> tuple[str, TokenView]:
        """A new bearer token for the team: the plaintext is returned once and only its sha256
        is stored."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._writing() as s:
            if s.get(Team, team_id) is None:
                raise NotFoundError(f"no team with id {team_id}")
            token = Token(
                team_id=team_id,
                name=name,
                token_hash=hash_token(plaintext),
                prefix=plaintext[:_SHOWN],
            )
            s.add(token)
            s.flush()
            return plaintext, view(TokenView, token)

    def team_for_token(self, plaintext: str) -> TeamView | None:
        """The team a live token belongs to; None for an unknown or revoked token."""
        query = (
            select(Team)
            .join(Token, Token.team_id == Team.id)
            .where(Token.token_hash == hash_token(plaintext), Token.revoked_at.is_(None))
        )
        with self._reading() as s:
            team = s.scalars(query).one_or_none()
            return None if team is None else view(TeamView, team)

    def list_tokens(self, team_id: int) -> list[TokenView]:
        query = select(Token).where(Token.team_id == team_id).order_by(Token.id)
        with self._reading() as s:
            return [view(TokenView, t) for t in s.scalars(query)]

    def revoke_token(self, token_id: int) -> TokenView:
        """Revoke a token (again is harmless: the first revocation time is kept)."""
        with self._writing() as s:
            token = s.get(Token, token_id)
            if token is None:
                raise NotFoundError(f"no token with id {token_id}")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
            return view(TokenView, token)
