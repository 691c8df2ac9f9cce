"""Another writer holding the database lock: runs wait for it, then succeed.

Each test proves the wait: it holds the SQLite write lock in another connection, sees the run's
own write blocked on it (a worker thread inside an INSERT/UPDATE/DELETE on that database), checks
the run has not finished, and only then releases the lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Self

import anyio

from d3_item_salvager.config import AppConfig
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.index_expectations import expected_rows, stored_rows

WRITES = ("INSERT", "UPDATE", "DELETE")


class WriteLock:
    """The SQLite write lock of `database`, held in another thread until `release()`."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._release = threading.Event()
        self._acquired = threading.Event()
        self._thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        connection = sqlite3.connect(self._database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        self._acquired.set()
        self._release.wait(60)  # the fault being injected: a writer that keeps the lock
        connection.execute("ROLLBACK")
        connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._acquired.wait(10)
        return self

    def release(self) -> None:
        self._release.set()

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self._thread.join()


def _statement(frame: FrameType) -> Any:
    """The SQL a database call in this frame is executing (SQLAlchemy sync, or aiosqlite)."""
    if frame.f_code.co_name == "do_execute":
        return frame.f_locals.get("statement")
    if frame.f_code.co_filename.endswith(("aiosqlite/core.py", "aiosqlite\\core.py")):
        arguments = getattr(frame.f_locals.get("function"), "args", ())
        return arguments[0] if arguments else None
    return None


def blocked_writers() -> list[str]:
    """Statements that other threads are executing right now and that write."""
    found = []
    for thread_id, frame in sys._current_frames().items():
        if thread_id == threading.get_ident():
            continue
        statement = _statement(frame)
        if isinstance(statement, str) and statement.lstrip().upper().startswith(WRITES):
            found.append(statement)
    return found


async def wait_until_a_write_is_blocked(run: asyncio.Task[Any]) -> None:
    with anyio.fail_after(60):
        while not blocked_writers():
            assert not run.done(), "the run finished while the database was locked"
            await asyncio.sleep(0.01)  # look again: a worker thread is on its way to the write
    assert not run.done()


async def test_sync_waits_for_a_locked_index(
    live_config: AppConfig, fake_maxroll: FakeMaxroll
) -> None:
    """With the index locked by another writer, the sync's write waits for it and completes."""
    database = live_config.database.sqlite_path
    assert database is not None
    async with WorkerRuntime(live_config, run_scheduler=False) as runtime:
        with WriteLock(database) as lock:
            run = asyncio.get_running_loop().create_task(runtime.run_job("scrape_guides"))
            await wait_until_a_write_is_blocked(run)
            lock.release()
            result = await run
    assert result.outcome == "success", result.error
    assert stored_rows(database) == expected_rows(fake_maxroll.site)


async def test_run_waits_for_a_locked_job_store(live_config: AppConfig) -> None:
    """With the job store locked, the run-history write waits and the run is recorded."""
    store = live_config.scheduler.job_store_path
    async with WorkerRuntime(live_config, run_scheduler=False) as runtime:
        with WriteLock(store) as lock:
            run = asyncio.get_running_loop().create_task(runtime.run_job("cleanup_logs"))
            await wait_until_a_write_is_blocked(run)
            lock.release()
            result = await run
    assert result.outcome == "success"
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT outcome FROM job_runs").fetchall() == [("success",)]
