"""Another writer holding the database lock for a while: runs wait, then succeed."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from d3_item_salvager.config import AppConfig
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.index_expectations import expected_rows, stored_rows

LOCK_SECONDS = 2.0


def hold_write_lock(database: Path, released: threading.Event) -> threading.Thread:
    """Take the SQLite write lock in another connection and keep it for LOCK_SECONDS."""
    acquired = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        acquired.set()
        released.wait(LOCK_SECONDS)  # the fault being injected: a writer that holds the lock
        connection.execute("ROLLBACK")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert acquired.wait(10)
    return thread


async def test_sync_waits_for_a_locked_index(
    live_config: AppConfig, fake_maxroll: FakeMaxroll
) -> None:
    """With the index locked by another writer, the sync waits for it and completes."""
    database = live_config.database.sqlite_path
    assert database is not None
    async with WorkerRuntime(live_config, run_scheduler=False):
        holder = hold_write_lock(database, threading.Event())
        try:
            result = await tasks.scrape_guides_task(trigger="manual")
        finally:
            holder.join()
    assert result.outcome == "success", result.error
    assert stored_rows(database) == expected_rows(fake_maxroll.site)


async def test_run_waits_for_a_locked_job_store(live_config: AppConfig) -> None:
    """With the job store locked, the run-history writes wait and the run is recorded."""
    store = live_config.scheduler.job_store_path
    async with WorkerRuntime(live_config, run_scheduler=False):
        holder = hold_write_lock(store, threading.Event())
        try:
            result = await tasks.cleanup_logs_task(trigger="manual")
        finally:
            holder.join()
    assert result.outcome == "success"
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT outcome FROM job_runs").fetchall() == [("success",)]
