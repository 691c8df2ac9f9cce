"""Runs missed while the process was down: coalesced into one within the grace, else missed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

from d3_item_salvager.config import AppConfig
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.scheduler import build_scheduler, register_jobs, stop_scheduler
from tests.conftest import make_config, only_jobs


def config_for(tmp_path: Path, interval_minutes: float) -> AppConfig:
    return make_config(
        tmp_path,
        scheduler={
            "misfire_grace_seconds": 300,
            "jobs": only_jobs(cleanup_logs={"interval_minutes": interval_minutes}),
        },
    )


async def store_with_due_time(config: AppConfig, due: datetime) -> None:
    """Leave a job store whose cleanup job was due at `due` (as if the process had been down)."""
    scheduler = build_scheduler(config)
    scheduler.start(paused=True)
    register_jobs(scheduler, config)
    scheduler.modify_job("cleanup_logs", next_run_time=due)
    await stop_scheduler(scheduler, None, 0)


def outcomes(config: AppConfig) -> list[tuple[str, str, str]]:
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        return list(connection.execute("SELECT job_id, trigger, outcome FROM job_runs"))


async def test_runs_missed_within_the_grace_are_coalesced_into_one(tmp_path: Path) -> None:
    """Five missed one-minute runs, the last within the grace time, give exactly one run."""
    config = config_for(tmp_path, interval_minutes=1)
    await store_with_due_time(config, datetime.now(UTC) - timedelta(minutes=4, seconds=30))
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(20):
            [run] = await runtime.wait_for_runs("cleanup_logs", 1)
        assert runtime.scheduler is not None
        next_run = runtime.scheduler.get_job("cleanup_logs").next_run_time
    assert (run.trigger, run.outcome) == ("scheduled", "success")
    assert outcomes(config) == [("cleanup_logs", "scheduled", "success")]
    assert next_run > datetime.now(UTC)


async def test_run_missed_beyond_the_grace_is_recorded_as_missed(tmp_path: Path) -> None:
    """A daily run due two hours ago is not run late; it is recorded as missed."""
    config = config_for(tmp_path, interval_minutes=1440)
    await store_with_due_time(config, datetime.now(UTC) - timedelta(hours=2))
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(20):
            [run] = await runtime.wait_for_runs("cleanup_logs", 1)
    assert run.outcome == "missed"
    assert outcomes(config) == [("cleanup_logs", "scheduled", "missed")]
