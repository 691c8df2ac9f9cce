"""The index database engine (SQLite or PostgreSQL): one per process, schema ensured on open."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from d3_item_salvager.config import DatabaseConfig
from d3_item_salvager.data.dialects import create_sqlite_engine
from d3_item_salvager.data.schema import ensure_schema


async def index_engine_resource(config: DatabaseConfig) -> AsyncIterator[AsyncEngine]:
    """Container resource: one engine per process, schema ensured, disposed on shutdown."""
    if config.url.startswith("sqlite"):
        path = config.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_sqlite_engine(config.url, busy_timeout_seconds=config.busy_timeout_seconds)
    else:
        engine = create_async_engine(config.url, pool_pre_ping=True)
    try:
        await ensure_schema(engine)
        yield engine
    finally:
        await engine.dispose()
