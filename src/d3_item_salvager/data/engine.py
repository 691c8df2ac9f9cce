"""The index database engine: SQLite in WAL mode with a busy timeout and foreign keys on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from d3_item_salvager.config import DatabaseConfig
from d3_item_salvager.data.schema import ensure_schema


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


def create_sqlite_engine(url: str, *, busy_timeout_seconds: float) -> AsyncEngine:
    """An AsyncEngine on an aiosqlite URL, with the pragmas every connection needs."""
    engine = create_async_engine(
        url,
        connect_args={"timeout": busy_timeout_seconds},
        pool_pre_ping=False,
    )
    event.listen(engine.sync_engine, "connect", sqlite_pragmas(busy_timeout_seconds))
    return engine


async def index_engine_resource(config: DatabaseConfig) -> AsyncIterator[AsyncEngine]:
    """Container resource: one engine per process, schema ensured, disposed on shutdown."""
    path = config.sqlite_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_sqlite_engine(config.url, busy_timeout_seconds=config.busy_timeout_seconds)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()
