"""Open an existing index for reading only: never create, migrate or write it.

Players' commands use this. A missing SQLite file is an error (opening it the usual way would
create an empty one), and SQLite connections are opened read-only (`mode=ro`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from d3_item_salvager.config import DatabaseConfig
from d3_item_salvager.errors import IndexDatabaseError

INDEX_TABLES = ("guides", "builds", "items", "item_usages")
SYNC_HINT = "run a sync first: python -m d3_item_salvager.workers run scrape-guides"


def _read_only_engine(config: DatabaseConfig) -> AsyncEngine:
    if not config.url.startswith("sqlite"):
        return create_async_engine(config.url, pool_pre_ping=True)
    path = config.sqlite_path
    if path is None:
        raise IndexDatabaseError("an in-memory index holds nothing to read; set database.url")
    if not path.is_file():
        raise IndexDatabaseError(f"no index database at {path}; {SYNC_HINT}")
    engine = create_async_engine(
        f"sqlite+aiosqlite:///file:{path.resolve()}?mode=ro&uri=true",
        connect_args={"timeout": config.busy_timeout_seconds},
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Only the wait for a writer's lock: the writers' pragmas (WAL) would write.
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_seconds * 1000)}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)
    return engine


@asynccontextmanager
async def read_only_index(config: DatabaseConfig) -> AsyncIterator[AsyncEngine]:
    """An engine on an existing, synced index; disposed on exit.

    Raises:
        IndexDatabaseError: no index there, it cannot be opened, or it has no index tables yet.
    """
    engine = _read_only_engine(config)
    try:
        try:
            async with engine.connect() as connection:
                names = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
        except DBAPIError as exc:
            raise IndexDatabaseError(f"cannot open the index database: {exc.orig}") from None
        except OSError as exc:  # a server that cannot be reached (PostgreSQL)
            raise IndexDatabaseError(f"cannot reach the index database: {exc}") from None
        missing = [name for name in INDEX_TABLES if name not in names]
        if missing:
            raise IndexDatabaseError(
                f"the index database has no {', '.join(missing)} table yet; {SYNC_HINT}"
            )
        yield engine
    finally:
        await engine.dispose()
