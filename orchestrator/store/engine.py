"""Engines for the store. SQLite gets WAL (readers never wait for the writer), a busy timeout
(writers queue instead of failing) and BEGIN IMMEDIATE for writing transactions (a deferred
transaction that reads, then writes, fails with "database is locked" when another writer
committed in between, and the busy timeout does not help there). PostgreSQL gets a pool."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

# Execution option that marks a writing transaction (see `writer`).
WRITE_OPTION = "pdistill_write"
BUSY_TIMEOUT_S = 30.0


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_size=10, max_overflow=40, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file::memory:"):
        raise ValueError(
            f"database_url {url!r}: an in-memory SQLite database is one per connection; "
            "give a file, e.g. sqlite:////var/lib/pdistill/pdistill.db"
        )
    # A fresh machine has no ~/.pdistill yet: SQLite creates the file, not its folder.
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        # The API serves many requests at once; SQLite connections are cheap.
        pool_size=10,
        max_overflow=60,
        connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock up front on SQLite."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # The driver's own implicit BEGIN is switched off; `_sqlite_begin` emits the right one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
