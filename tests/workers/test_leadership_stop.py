"""Stopping a standby whose take-over of the lease is still running: if the take-over succeeds,
the stop gives the lease back, so another standby need not wait a whole lease period for it.
These are stores led through their lease row (PostgreSQL, a SQLite store named by URL); a SQLite
store named by path is led through a lock the kernel drops (test_leader_lock.py).

The take-over is held up by a blocker until the runtime's stop waits for it (the log line
"waiting for job-store writes still running"), then let through: it takes the lease after the
stop began.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from d3_item_salvager.config import AppConfig
from d3_item_salvager.workers.background import WAITING_FOR_WRITES
from d3_item_salvager.workers.job_store import RunHistory, metadata
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.postgres_server import PostgresDatabase
from tests.workers.job_store_sql import job_store
from tests.workers.test_leadership import (
    _Seen,
    scrape_only,
    wait_for_a_statement_waiting_for_a_lock,
)

WAITING_FOR_THE_STATEMENT = WAITING_FOR_WRITES


def lease_holders(config: AppConfig) -> list[str]:
    with job_store(config) as connection:
        return [
            row.holder for row in connection.execute(text("SELECT holder FROM scheduler_lease"))
        ]


async def exit_while_blocked(stack: AsyncExitStack, seen: _Seen) -> asyncio.Task[None]:
    """Start the runtime's exit; return once its stop waits for the lease statement (or the
    exit ended without waiting: then the test's assertions tell what went wrong)."""
    exiting = asyncio.create_task(stack.aclose())
    waiting = asyncio.create_task(seen.event.wait())
    await asyncio.wait({exiting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    return exiting


async def test_a_take_over_that_succeeds_during_the_stop_is_given_back_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A standby's take-over waits for a table lock; the runtime stops meanwhile, then the lock
    is let go and the take-over succeeds: after the exit, the lease is not left held by the
    stopped runtime."""
    config = scrape_only(tmp_path, {"job_store_url": postgres.psycopg_url})
    engine = create_engine(postgres.psycopg_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as connection:  # another host leads, for an hour more
            connection.execute(
                text(
                    "INSERT INTO scheduler_lease VALUES ('scheduler', 'otherhost:1:live', "
                    "extract(epoch from now()), extract(epoch from now()) + 3600)"
                )
            )
    finally:
        engine.dispose()
    seen = _Seen(WAITING_FOR_THE_STATEMENT)
    logger = logging.getLogger("d3_item_salvager")
    logger.addHandler(seen)
    stack = AsyncExitStack()
    stack.enter_context(caplog.at_level(logging.INFO, logger="d3_item_salvager"))
    try:
        runtime = await stack.enter_async_context(WorkerRuntime(config))
        assert runtime.lease is not None
        ours = runtime.lease.holder
        assert not runtime.is_leader
        with postgres.connect() as blocker, anyio.fail_after(30):
            with blocker.transaction():
                # The table lock holds up the standby's next UPDATE before it reads the row, so
                # it then finds the lease this transaction lets run out, and takes it.
                blocker.execute("LOCK TABLE scheduler_lease IN SHARE MODE")
                blocker.execute("UPDATE scheduler_lease SET expires_at = 0")
                await anyio.to_thread.run_sync(wait_for_a_statement_waiting_for_a_lock, postgres)
                exiting = await exit_while_blocked(stack, seen)
            await exiting
        assert seen.event.is_set()
        assert ours not in lease_holders(config)
    finally:
        logger.removeHandler(seen)
        await stack.aclose()


async def test_a_standby_that_took_nothing_writes_nothing_on_stop(
    tmp_path: Path, lease_store_settings: dict[str, Any]
) -> None:
    """The give-back is for a take-over that succeeded: a standby that never took the lease
    does not run the release (a write, which on SQLite waits for the store's write lock)."""
    config = scrape_only(tmp_path, lease_store_settings)
    async with WorkerRuntime(config) as first:
        second = WorkerRuntime(config)
        await second.__aenter__()
        try:
            assert (first.is_leader, second.is_leader) == (True, False)
            assert second.leadership is not None
            await second.leadership.round()  # one more attempt, refused
            releases: list[str] = []
            release = second.leadership.lease.release

            async def recorded() -> None:
                releases.append("release")
                await release()

            second.leadership.lease.release = recorded  # type: ignore[method-assign]
        finally:
            await second.__aexit__(None, None, None)
        assert releases == []
        assert first.is_leader


async def test_a_take_over_not_followed_by_leading_is_given_back_on_stop(
    tmp_path: Path, lease_store_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease was taken, but leading failed right after (the store busy as the new leader
    closed abandoned runs): the runtime does not lead, and its stop gives the lease back."""

    async def busy(_history: RunHistory) -> int:
        raise OperationalError("UPDATE job_runs", {}, Exception("database is locked"))

    monkeypatch.setattr(RunHistory, "mark_abandoned", busy)
    config = scrape_only(tmp_path, lease_store_settings)
    async with WorkerRuntime(config) as runtime:
        assert runtime.lease is not None
        ours = runtime.lease.holder
        assert not runtime.is_leader
        assert lease_holders(config) == [ours]
    assert lease_holders(config) == []


async def test_a_leader_that_stepped_down_after_an_error_gives_the_lease_back_on_stop(
    tmp_path: Path, lease_store_settings: dict[str, Any]
) -> None:
    """A bug in lease handling makes the leader step down, but nothing said the lease was lost:
    it is still held in the store, and the stop gives it back rather than leaving a standby to
    wait a whole lease period."""
    config = scrape_only(tmp_path, lease_store_settings)
    async with WorkerRuntime(config) as runtime:
        leadership = runtime.leadership
        assert leadership is not None
        assert runtime.lease is not None
        ours = runtime.lease.holder

        async def broken() -> bool:
            raise KeyError("a bug in lease handling")

        leadership.lease.renew = broken  # type: ignore[method-assign]
        await leadership.round()
        assert not runtime.is_leader
        assert lease_holders(config) == [ours]
    assert lease_holders(config) == []
