"""Schema migrations, run from code: the migration scripts ship inside this package, so a
deployed service needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from orchestrator.store.engine import make_engine, writer

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key: two API processes starting at once migrate one after the other.
_PG_LOCK = 0x70646973  # "pdis"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def migrate_engine(engine: Engine) -> None:
    """Upgrade to head in one transaction that holds the migration lock (BEGIN IMMEDIATE on
    SQLite, an advisory lock on PostgreSQL); DDL is transactional on both."""
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        command.upgrade(alembic_config(connection), "head")


def migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate_engine(engine)
    finally:
        engine.dispose()
