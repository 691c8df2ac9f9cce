"""The index locked by another writer: at start the program waits; for too long, a retry run."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows, touch_guide
from tests.processes import child_env, run_cli
from tests.reliability.test_locked_database import WriteLock
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
    async with WorkerRuntime(config) as runtime:
        with WriteLock(database):
            result = await tasks.scrape_guides_task()
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is not None
    assert result.outcome == "failed"
    assert result.error is not None
    assert "locked by another writer" in result.error
    assert result.summary is not None
    assert all(failure["transient"] for failure in result.summary["failures"])


async def wait_until_open(pid: int, path: Path, running: asyncio.Future[Any]) -> None:
    """Wait until process `pid` has `path` open (it is then blocked on the lock or about to be)."""
    with anyio.fail_after(60):
        while not any(Path(f.path) == path for f in psutil.Process(pid).open_files()):
            assert not running.done(), "the program ended while the index was locked"
            await asyncio.sleep(0.01)  # look again: the child is still starting


@pytest.mark.slow
async def test_a_lock_held_while_the_program_starts_makes_it_wait(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A new index file locked by another writer: `run` waits for it (no exit 2), then syncs."""
    config = cli_config(tmp_path, fake_maxroll)
    database = tmp_path / "index.sqlite"
    with WriteLock(database) as lock:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "d3_item_salvager.workers",
            "run", "scrape-guides", "--json", "--config", str(config),
            cwd=tmp_path, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        communicating = asyncio.ensure_future(process.communicate())
        # Proof of the wait: the program has the locked file open and is still running.
        await wait_until_open(process.pid, database, communicating)
        lock.release()
        with anyio.fail_after(60):
            out, err = await communicating
    code, stdout, stderr = process.returncode, out.decode(), err.decode()
    assert code == 0, stderr
    assert json.loads(stdout)["outcome"] == "success"
    assert stored_rows(database) == expected_rows(fake_maxroll.site)


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
    with WriteLock(tmp_path / "index.sqlite"):
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
    with WriteLock(tmp_path / "index.sqlite"):
        code, _stdout, stderr = await run_cli(
            "run", "scrape-guides", "--config", str(config), cwd=tmp_path
        )
    assert code == 1, stderr
    assert "locked by another writer" in stderr
