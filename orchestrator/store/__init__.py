"""The control plane's state store (SQLAlchemy 2, SQLite or PostgreSQL, Alembic migrations).

Used by the API (routes, auth, queue, reconciler) and by the campaign driver inside its Ray Job;
it imports neither: only SQLAlchemy and Alembic.
"""

from orchestrator.store.errors import ConflictError, NotFoundError, StoreError, TransitionError
from orchestrator.store.migrate import migrate
from orchestrator.store.models import CampaignStatus, RoundStatus, TrialStatus
from orchestrator.store.repo import Store
from orchestrator.store.states import ACTIVE, ALLOWED, FINAL
from orchestrator.store.views import (
    AuditView,
    CampaignView,
    RoundView,
    TeamView,
    TokenView,
    TrialView,
)

__all__ = [
    "ACTIVE",
    "ALLOWED",
    "FINAL",
    "AuditView",
    "CampaignStatus",
    "CampaignView",
    "ConflictError",
    "NotFoundError",
    "RoundStatus",
    "RoundView",
    "Store",
    "StoreError",
    "TeamView",
    "TokenView",
    "TransitionError",
    "TrialStatus",
    "TrialView",
    "migrate",
]
