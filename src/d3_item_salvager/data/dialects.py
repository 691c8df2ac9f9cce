"""Database helpers shared by the index and the job store, for SQLite and PostgreSQL.

SQLite engines with their pragmas, inserts that ignore conflicts, and tolerance of the race when
several processes create the same tables at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

T = TypeVar("T")


WAL_SWITCH_RETRY_SECONDS = 0.05


def sqlite_pragmas(busy_timeout_seconds: float) -> Any:
    """A connect-event listener that sets the pragmas every SQLite connection needs."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers (status, other tools) work while a sync writes; the busy timeout
            # makes a writer wait for a lock instead of failing at once.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
            switch_to_wal(cursor, busy_timeout_seconds, _sleeper(dbapi_connection))
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return on_connect


def switch_to_wal(cursor: Any, busy_timeout_seconds: float, sleep: Callable[[float], Any]) -> None:
    """Run `PRAGMA journal_mode = WAL`, waiting up to the busy timeout for another writer.

    On a new file (still in rollback-journal mode) the switch writes the header: it reads, then
    upgrades to a write lock, and SQLite answers "database is locked" at once, without its busy
    handler, when another connection holds the write lock meanwhile, e.g. a second process
    switching the same new file. So the wait is done here. Once the file is in WAL mode (it
    persists) the pragma only reads and never meets this.

    Raises:
        sqlite3.OperationalError: still locked after the busy timeout, or any other failure.
    """
    deadline = time.monotonic() + busy_timeout_seconds
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        sleep(WAL_SWITCH_RETRY_SECONDS)


def _sleeper(dbapi_connection: Any) -> Callable[[float], Any]:
    """How the connect event waits: on the event loop for an asyncio driver, else in its thread."""
    if isinstance(dbapi_connection, AdaptedConnection):
        # The listener runs on the event loop (in SQLAlchemy's greenlet): never block it.
        return lambda seconds: dbapi_connection.run_async(lambda _driver: asyncio.sleep(seconds))
    return time.sleep


def lost_schema_race(error: DBAPIError) -> bool:
    """True when another process created the same table or row first (retrying is safe)."""
    text = str(error.orig).lower()
    return any(
        marker in text
        for marker in ("already exists", "unique constraint failed", "duplicate key value")
    )


def retry_schema_race(action: Callable[[], T], attempts: int = 5) -> T:
    """Run a synchronous schema-creating `action`, again if another process won the race."""
    for attempt in range(attempts):
        try:
            return action()
        except DBAPIError as exc:
            if attempt == attempts - 1 or not lost_schema_race(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def insert_ignoring_conflicts(table: Table, dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for SQLite or PostgreSQL."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def create_sqlite_engine(url: str, *, busy_timeout_seconds: float) -> AsyncEngine:
    """An AsyncEngine on an aiosqlite URL, with the pragmas every connection needs."""
    engine = create_async_engine(
        url,
        connect_args={"timeout": busy_timeout_seconds},
        pool_pre_ping=False,
    )
    event.listen(engine.sync_engine, "connect", sqlite_pragmas(busy_timeout_seconds))
    return engine
