"""What the parts of `Store` share: the engine, one transaction per call, input checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from orchestrator.store.engine import writer
from orchestrator.store.models import CampaignStatus, RoundStatus, TrialStatus

E = TypeVar("E", CampaignStatus, RoundStatus, TrialStatus)


def coerce_status(cls: type[E], value: E | str) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = [m.value for m in cls]
        raise ValueError(f"unknown {cls.__name__} {value!r}; allowed: {allowed}") from None


def check_fields(kind: str, fields: dict[str, Any], allowed: frozenset[str]) -> None:
    bad = sorted(set(fields) - allowed)
    if bad:
        raise TypeError(f"cannot set {kind} fields {bad}; allowed: {sorted(allowed)}")


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise unless the database answers (readiness probes)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A transaction that will write: on SQLite it takes the write lock at BEGIN."""
        with Session(self._writer) as session, session.begin():
            yield session
