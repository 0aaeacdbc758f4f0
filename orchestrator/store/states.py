"""The campaign state machine, written out as data so the API, the docs and the tests read the
same table."""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.store.errors import TransitionError
from orchestrator.store.models import CampaignStatus as S

# from -> the statuses it may go to. Anything else raises TransitionError.
ALLOWED: Mapping[S, frozenset[S]] = {
    S.QUEUED: frozenset({S.STARTING, S.CANCELLED}),
    # -> queued: the reconciler requeues a campaign whose driver died (or never came up).
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.CANCELLING, S.QUEUED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLING, S.QUEUED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    # -> queued: resume; finished rounds are skipped by the driver.
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}

# Campaigns in these statuses hold (or are about to hold) their GPUs: they count against quotas.
ACTIVE: frozenset[S] = frozenset({S.STARTING, S.RUNNING, S.CANCELLING})
FINAL: frozenset[S] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})


def check_transition(campaign_id: str, from_status: S, to_status: S) -> None:
    allowed = ALLOWED[from_status]
    if to_status not in allowed:
        raise TransitionError(campaign_id, from_status.value, to_status.value, allowed)
