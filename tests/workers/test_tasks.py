"""Tasks through the runtime: outcomes, history rows, retries, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from dependency_injector import providers

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.errors import (
    ConfigError,
    JobRunningElsewhereError,
    ParseError,
    TransientFetchError,
)
from d3_item_salvager.services.build_guides import SyncSummary
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.job_store import Claim, RunHistory
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.workers.fakes import FakeSyncService, summary_with_failure


def job_runs(config: AppConfig) -> list[dict[str, Any]]:
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM job_runs ORDER BY started_at, rowid")
        return [dict(row) for row in rows]


def scrape_config(tmp_path: Path, **job: Any) -> AppConfig:
    return make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={"jobs": {"scrape_guides": job}},
    )


def with_fake(runtime: WorkerRuntime, fake: FakeSyncService) -> WorkerRuntime:
    runtime.container.build_guide_service.override(providers.Object(fake))
    return runtime


async def test_manual_run_records_success_with_summary(tmp_path: Path) -> None:
    """A manual run calls the service with its flag and leaves one complete history row."""
    config = scrape_config(tmp_path)
    fake = FakeSyncService(SyncSummary(guides_seen=3, guides_processed=3))
    async with with_fake(WorkerRuntime(config, run_scheduler=False), fake):
        result = await tasks.scrape_guides_task(True, trigger="manual")
    assert fake.calls == [True]
    assert (result.outcome, result.trigger, result.error) == ("success", "manual", None)
    [row] = job_runs(config)
    assert (row["job_id"], row["trigger"], row["outcome"]) == ("scrape_guides", "manual", "success")
    assert row["run_id"] == result.run_id
    assert row["scheduled_for"] is None
    assert row["finished_at"] >= row["started_at"]
    assert json.loads(row["summary"])["guides_processed"] == 3


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (ParseError("guide page x", "no planners"), "cannot read guide page x: no planners"),
        (ConfigError("maxroll.bearer_token is not set"), "maxroll.bearer_token is not set"),
        (KeyError("bug"), "KeyError: 'bug'"),
        (summary_with_failure(transient=False), "1 of 1 guides failed (more than half); first"),
    ],
)
async def test_permanent_failures_are_recorded_and_not_retried(
    tmp_path: Path, behaviour: Any, error: str
) -> None:
    """Permanent errors (and bugs) give outcome failed, the error text, and no retry job."""
    config = scrape_config(tmp_path)
    async with with_fake(WorkerRuntime(config), FakeSyncService(behaviour)) as runtime:
        result = await tasks.scrape_guides_task()
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is None
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.startswith(error)
    assert job_runs(config)[-1]["error"].startswith(error)


async def test_transient_failure_is_retried_by_a_one_off_run(tmp_path: Path) -> None:
    """A transient failure schedules a retry run that the scheduler executes, then succeeds."""
    config = scrape_config(tmp_path, retry_backoff_seconds=0.05, max_retries=2)
    fake = FakeSyncService(TransientFetchError("http://x/search", "HTTP 503"), SyncSummary())
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        first = await tasks.scrape_guides_task()
        with anyio.fail_after(10):
            runs = await runtime.wait_for_runs("scrape_guides", 2)
    assert first.outcome == "failed"
    assert [(r.trigger, r.outcome, r.attempt) for r in runs] == [
        ("scheduled", "failed", 0),
        ("retry", "success", 1),
    ]
    rows = job_runs(config)
    assert [(r["trigger"], r["outcome"]) for r in rows] == [
        ("scheduled", "failed"),
        ("retry", "success"),
    ]
    assert rows[1]["scheduled_for"] is not None


async def test_retries_stop_at_the_configured_count(tmp_path: Path) -> None:
    """After max_retries retry runs no further one is scheduled."""
    config = scrape_config(tmp_path, retry_backoff_seconds=0.02, max_retries=1)
    fake = FakeSyncService(*[summary_with_failure(transient=True)] * 3)
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        await tasks.scrape_guides_task()
        with anyio.fail_after(10):
            await runtime.wait_for_runs("scrape_guides", 2)
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is None
    assert [r["trigger"] for r in job_runs(config)] == ["scheduled", "retry"]
    assert len(fake.calls) == 2


async def test_retry_that_would_overlap_the_next_run_is_not_scheduled(tmp_path: Path) -> None:
    """A retry due after the next regular run is dropped."""
    config = scrape_config(tmp_path, retry_backoff_seconds=3600, interval_minutes=1)
    fake = FakeSyncService(TransientFetchError("http://x", "timed out"))
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        await tasks.scrape_guides_task()
        assert runtime.scheduler is not None
        assert runtime.scheduler.get_job("scrape_guides:retry") is None


async def test_run_over_its_timeout_is_recorded_as_timeout(tmp_path: Path) -> None:
    """A run longer than timeout_minutes is cancelled and recorded as timeout."""
    config = scrape_config(tmp_path, timeout_minutes=0.002, max_retries=0)
    async with with_fake(WorkerRuntime(config, run_scheduler=False), FakeSyncService("block")):
        result = await tasks.scrape_guides_task(trigger="manual")
    assert result.outcome == "timeout"
    assert job_runs(config)[0]["outcome"] == "timeout"


async def test_stop_cancels_a_run_past_the_shutdown_timeout(tmp_path: Path) -> None:
    """Leaving the runtime waits shutdown_timeout_seconds, then cancels and records it."""
    config = make_config(
        tmp_path, maxroll={"bearer_token": "t"}, scheduler={"shutdown_timeout_seconds": 0.1}
    )
    fake = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config), fake):
        running = asyncio.get_running_loop().create_task(tasks.scrape_guides_task())
        with anyio.fail_after(5):
            await fake.started.wait()
    with pytest.raises(asyncio.CancelledError):
        await running
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")


async def test_second_run_of_a_busy_job_is_skipped(tmp_path: Path) -> None:
    """A run that meets another run of the same job in the same runtime is recorded skipped,
    by the job's claim as across processes: a retry is skipped, a manual run also refused."""
    config = scrape_config(tmp_path)
    fake = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config, run_scheduler=False), fake) as runtime:
        first = asyncio.get_running_loop().create_task(tasks.scrape_guides_task(trigger="manual"))
        with anyio.fail_after(5):
            await fake.started.wait()
        second = await tasks.scrape_guides_task(trigger="retry")
        with pytest.raises(JobRunningElsewhereError):
            await tasks.scrape_guides_task(trigger="manual")
        first.cancel()
        worker = runtime.runner.history.worker
    assert (second.outcome, second.error) == ("skipped", f"running now in {worker}")
    assert sorted(r["outcome"] for r in job_runs(config)) == ["cancelled", "skipped", "skipped"]
    assert len(fake.calls) == 1


async def test_refresh_cache_task_fills_caches_not_the_index(live_config: AppConfig) -> None:
    """refresh-cache reads the guide list and item data, and writes no index row."""
    async with WorkerRuntime(live_config, run_scheduler=False):
        result = await tasks.refresh_cache_task(trigger="manual")
    assert result.outcome == "success"
    assert result.summary is not None
    assert result.summary["guides"] == 5
    assert (live_config.cache.dir / "guide_list.json").exists()
    database = live_config.database.sqlite_path
    assert database is not None
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM guides").fetchone() == (0,)


async def test_cleanup_task_prunes_old_history(tmp_path: Path) -> None:
    """cleanup-logs deletes finished history rows older than the retention."""
    config = make_config(tmp_path, scheduler={"run_history_retention_days": 1})
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    async with WorkerRuntime(config, run_scheduler=False):
        with sqlite3.connect(config.scheduler.job_store_path) as connection:
            connection.execute(
                "INSERT INTO job_runs (run_id, job_id, trigger, started_at, finished_at, outcome,"
                " attempt, worker) VALUES ('old', 'scrape_guides', 'manual', ?, ?, 'success', 0, 'w')",
                (old, old),
            )
        result = await tasks.cleanup_logs_task(trigger="manual")
    assert result.summary is not None
    assert result.summary["history_rows_pruned"] == 1
    assert [r["run_id"] for r in job_runs(config)] == [result.run_id]


async def test_unfinished_runs_of_a_dead_scheduler_become_abandoned(tmp_path: Path) -> None:
    """Taking the lease closes runs another (dead) scheduler left open."""
    config = make_config(tmp_path)
    async with WorkerRuntime(config, run_scheduler=False):
        pass
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        connection.execute(
            "INSERT INTO job_runs (run_id, job_id, trigger, started_at, attempt, worker)"
            " VALUES ('lost', 'scrape_guides', 'scheduled', 1767225600.0, 0,"
            " 'otherhost:1:dead')"
        )
    async with WorkerRuntime(config) as runtime:
        assert runtime.is_leader
    [row] = job_runs(config)
    assert (row["outcome"], row["finished_at"] is not None) == ("abandoned", True)


class GatedStartHistory(RunHistory):
    """A run history whose run begins (claim, start row) only once the test opens the gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def begin(self, *args: Any) -> Claim | None:
        self.entered.set()
        await self.gate.wait()
        return await super().begin(*args)


async def test_stop_while_the_start_row_is_written_records_the_run_cancelled(
    tmp_path: Path,
) -> None:
    """A run cancelled before its claim and start row are written still ends `cancelled`, not
    `running`, and gives its claim back."""
    config = make_config(
        tmp_path, maxroll={"bearer_token": "t"}, scheduler={"shutdown_timeout_seconds": 0}
    )
    runtime = WorkerRuntime(config)
    history = runtime.container.run_history
    history.override(
        providers.Singleton(
            GatedStartHistory, runtime.container.job_store_engine, runtime.container.worker_id
        )
    )
    async with with_fake(runtime, FakeSyncService()):
        gated: GatedStartHistory = await resolve(history)
        running = asyncio.get_running_loop().create_task(tasks.scrape_guides_task())
        with anyio.fail_after(5):
            await gated.entered.wait()
        running.cancel()
        gated.gate.set()
        with pytest.raises(asyncio.CancelledError), anyio.fail_after(5):
            await running
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        assert connection.execute("SELECT * FROM job_claims").fetchall() == []
