"""The store's domain errors; `api/` turns them into HTTP answers (404, 409, ...)."""

from __future__ import annotations

from collections.abc import Iterable


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """No such team, token, campaign or round."""


class ConflictError(StoreError):
    """A unique name is already taken (a team's name)."""


class TransitionError(StoreError, ValueError):
    """A campaign status change the state machine does not allow."""

    def __init__(
        self, campaign_id: str, from_status: str, to_status: str, allowed: Iterable[str]
    ) -> None:
        self.campaign_id, self.from_status, self.to_status = campaign_id, from_status, to_status
        self.allowed = sorted(allowed)
        shown = ", ".join(self.allowed) or "nothing (final)"
        super().__init__(
            f"campaign {campaign_id} cannot go from {from_status} to {to_status}; "
            f"from {from_status} it may go to: {shown}"
        )
