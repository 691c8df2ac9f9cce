"""The index locked by another writer: at start the program waits; for too long, a retry run."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import run_cli
from tests.reliability.test_locked_database import hold_write_lock
from tests.workers.test_cli import cli_config


async def test_index_locked_past_the_busy_timeout_is_a_transient_failure(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Every write times out on the lock: the run fails as transient and a retry is scheduled."""
    config = make_config(
        tmp_path, maxroll=fake_maxroll.config_values(), database={"busy_timeout_seconds": 0.1}
    )
    database = config.database.sqlite_path
    assert database is not None
    release = threading.Event()
    async with WorkerRuntime(config) as runtime:
        holder = hold_write_lock(database, release)
        try:
            result = await tasks.scrape_guides_task()
        finally:
            release.set()
            holder.join()
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is not None
    assert result.outcome == "failed"
    assert result.error is not None
    assert "locked by another writer" in result.error
    assert result.summary is not None
    assert all(failure["transient"] for failure in result.summary["failures"])


@pytest.mark.slow
async def test_a_lock_held_while_the_program_starts_makes_it_wait(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A new index file locked by another writer: `run` waits for it (no exit 2), then syncs."""
    config = cli_config(tmp_path, fake_maxroll)
    database = tmp_path / "index.sqlite"
    holder = hold_write_lock(database, threading.Event())  # released after LOCK_SECONDS
    try:
        code, stdout, stderr = await run_cli(
            "run", "scrape-guides", "--json", "--config", str(config), cwd=tmp_path
        )
    finally:
        holder.join()
    assert code == 0, stderr
    assert json.loads(stdout)["outcome"] == "success"
    assert stored_rows(database) == expected_rows(fake_maxroll.site)
