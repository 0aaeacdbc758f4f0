"""`Store`: the control plane's state (teams, tokens, campaigns, rounds, trials, audit log) behind
typed methods. Every method is one transaction and returns frozen views, so the API, the
campaign driver and the reconciler share one Store without holding sessions."""

from __future__ import annotations

from orchestrator.store.accounts import Accounts
from orchestrator.store.campaigns import Campaigns
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import migrate_engine
from orchestrator.store.progress import Progress


class Store(Accounts, Campaigns, Progress):
    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> Store:
        """`sqlite:///path.db` or `postgresql+psycopg://user@host/db`; upgrades the schema to
        head unless `migrate=False` (then the schema must already be there)."""
        engine = make_engine(url)
        if migrate:
            try:
                migrate_engine(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
