"""Database helpers shared by the index and the job store, for SQLite and PostgreSQL.

SQLite engines with their pragmas, inserts that ignore conflicts, and tolerance of the race when
several processes create the same tables at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

T = TypeVar("T")


def sqlite_pragmas(busy_timeout_seconds: float) -> Any:
    """A connect-event listener that sets the pragmas every SQLite connection needs."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (status, other tools) work while a sync writes; the busy timeout makes
        # a writer wait for a lock instead of failing at once.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return on_connect


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
