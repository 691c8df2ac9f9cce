"""Container: resources open and close cleanly, and containers do not share state."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import anyio
import httpx2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.container import open_container, resolve
from tests.conftest import make_config


async def test_resources_open_and_close_without_warnings(tmp_path: Path) -> None:
    """The client and engine work after init and are closed by shutdown, with no ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with open_container(make_config(tmp_path)) as container:
            client = await resolve(container.http_client)
            engine = await resolve(container.index_engine)
            assert isinstance(client, httpx2.AsyncClient)
            assert isinstance(engine, AsyncEngine)
            assert client.headers["user-agent"].startswith("d3-item-salvager-workers/")
            async with engine.connect() as connection:
                mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
                foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
            assert (mode, foreign_keys) == ("wal", 1)
        assert client.is_closed
        gc.collect()
    assert (tmp_path / "index.sqlite").exists()


async def test_two_containers_do_not_share_state(tmp_path: Path) -> None:
    """Each container builds its own client, engine and thread limiter."""
    async with (
        open_container(make_config(tmp_path / "a")) as first,
        open_container(make_config(tmp_path / "b", scheduler={"max_workers": 2})) as second,
    ):
        assert await resolve(first.http_client) is not await resolve(second.http_client)
        assert await resolve(first.index_engine) is not await resolve(second.index_engine)
        first_limiter: anyio.CapacityLimiter = first.thread_limiter()
        second_limiter: anyio.CapacityLimiter = second.thread_limiter()
        assert (first_limiter.total_tokens, second_limiter.total_tokens) == (5, 2)
