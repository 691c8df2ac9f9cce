"""The index locked by another writer: at start the program waits; for too long, a retry run."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.index_expectations import touch_guide
from tests.processes import run_cli
from tests.workers.test_cli import cli_config


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another connection holds the SQLite write lock for the whole block."""
    acquired, release = threading.Event(), threading.Event()

    def hold() -> None:
        with closing(sqlite3.connect(database, isolation_level=None)) as connection:
            connection.execute("BEGIN IMMEDIATE")
            acquired.set()
            release.wait(120)  # released by the test; the cap only guards a crashed test
            connection.execute("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    assert acquired.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


async def test_index_locked_past_the_busy_timeout_is_a_transient_failure(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Every write times out on the lock: the run fails as transient and a retry is scheduled."""
    config = make_config(
        tmp_path, maxroll=fake_maxroll.config_values(), database={"busy_timeout_seconds": 0.1}
    )
    database = config.database.sqlite_path
    assert database is not None
    async with WorkerRuntime(config) as runtime:
        with write_lock_held(database):
            result = await tasks.scrape_guides_task()
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is not None
    assert result.outcome == "failed"
    assert result.error is not None
    assert "locked by another writer" in result.error
    assert result.summary is not None
    assert all(failure["transient"] for failure in result.summary["failures"])


def cli_config_with_busy_timeout(tmp_path: Path, fake: FakeMaxroll, seconds: float) -> Path:
    config = cli_config(tmp_path, fake)
    text = config.read_text(encoding="utf-8")
    assert "[database]\n" in text
    config.write_text(
        text.replace("[database]\n", f"[database]\nbusy_timeout_seconds = {seconds}\n"),
        encoding="utf-8",
    )
    return config


@pytest.mark.slow
async def test_a_lock_held_while_a_current_index_opens_is_not_a_configuration_error(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Opening a current index does not write, so the start goes through; the sync's writes then
    time out on the lock: exit 1 (transient failure), never exit 2."""
    config = cli_config_with_busy_timeout(tmp_path, fake_maxroll, 0.1)
    code, _stdout, stderr = await run_cli(
        "run", "scrape-guides", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, stderr
    touch_guide(fake_maxroll.site.guides[0])
    with write_lock_held(tmp_path / "index.sqlite"):
        code, stdout, stderr = await run_cli(
            "run", "scrape-guides", "--json", "--config", str(config), cwd=tmp_path
        )
    assert code == 1, stderr
    result = json.loads(stdout)
    assert result["outcome"] == "failed"
    assert "locked by another writer" in result["error"]


@pytest.mark.slow
async def test_a_new_index_locked_past_the_busy_timeout_exits_1_not_2(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A new index that cannot be created in time is a busy database, not a bad configuration."""
    config = cli_config_with_busy_timeout(tmp_path, fake_maxroll, 0.1)
    with write_lock_held(tmp_path / "index.sqlite"):
        code, _stdout, stderr = await run_cli(
            "run", "scrape-guides", "--config", str(config), cwd=tmp_path
        )
    assert code == 1, stderr
    assert "locked by another writer" in stderr
