"""build_scheduler and register_jobs over a real SQLite job store."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.container import open_worker_container
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.runs import Outcome, RunTracker, Trigger
from d3_item_salvager.workers.scheduler import (
    build_scheduler,
    register_jobs,
    start_scheduler,
    stop_scheduler,
)
from d3_item_salvager.workers.tasks import STORED_ENTRY
from tests.conftest import make_config, only_jobs

Jobs = dict[str, dict[str, Any]]


def config_with(tmp_path: Path, jobs: Jobs | None = None, **scheduler: Any) -> AppConfig:
    return make_config(tmp_path, scheduler={"jobs": jobs or {}, **scheduler})


@asynccontextmanager
async def started(config: AppConfig) -> AsyncIterator[AsyncIOScheduler]:
    """A paused scheduler on the config's job store, shut down after the block."""
    scheduler = build_scheduler(config)
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        await stop_scheduler(scheduler, None, 0)


def stored(scheduler: AsyncIOScheduler) -> dict[str, Any]:
    return {job.id: job for job in scheduler.get_jobs()}


async def test_register_adds_enabled_jobs_with_ids_refs_and_intervals(tmp_path: Path) -> None:
    """Each enabled job is stored under its config key, as a text reference, at its interval."""
    config = config_with(tmp_path, {"refresh_cache": {"interval_minutes": 0.5}})
    async with started(config) as scheduler:
        report = register_jobs(scheduler, config)
        jobs = stored(scheduler)
    assert sorted(report.added) == sorted(jobs) == sorted(BUILTIN_JOBS.ids)
    for job_id, job in jobs.items():
        # One generic entry point runs any job by id: the store holds text and plain kwargs.
        assert job.func_ref == STORED_ENTRY
        assert isinstance(job.trigger, IntervalTrigger)
        assert (job.kwargs, job.args) == ({"job_id": job_id}, ())
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 300)
    assert jobs["scrape_guides"].trigger.interval == timedelta(minutes=360)
    assert jobs["refresh_cache"].trigger.interval == timedelta(seconds=30)
    assert jobs["cleanup_logs"].trigger.interval == timedelta(days=1)


async def test_disabled_jobs_are_not_added_and_are_removed(tmp_path: Path) -> None:
    """A job disabled in config is dropped from the store at the next registration."""
    async with started(config_with(tmp_path)) as scheduler:
        register_jobs(scheduler, config_with(tmp_path))
    disabled = config_with(tmp_path, {"cleanup_logs": {"enabled": False}})
    async with started(disabled) as scheduler:
        report = register_jobs(scheduler, disabled)
        others = sorted(set(BUILTIN_JOBS.ids) - {"cleanup_logs"})
        assert sorted(stored(scheduler)) == others
    assert report.removed == ["cleanup_logs"]
    assert sorted(report.unchanged) == others


async def test_restart_keeps_next_run_times_and_does_not_duplicate(tmp_path: Path) -> None:
    """Registering again over an existing store changes nothing for unchanged jobs."""
    config = config_with(tmp_path)
    async with started(config) as scheduler:
        register_jobs(scheduler, config)
        before = {job_id: job.next_run_time for job_id, job in stored(scheduler).items()}
    async with started(config) as scheduler:
        report = register_jobs(scheduler, config)
        after = {job_id: job.next_run_time for job_id, job in stored(scheduler).items()}
        assert len(scheduler.get_jobs()) == len(BUILTIN_JOBS)
    assert before == after
    assert sorted(report.unchanged) == sorted(BUILTIN_JOBS.ids)
    assert report.added == report.rescheduled == []


async def test_changed_interval_reschedules_only_that_job(tmp_path: Path) -> None:
    """A new interval gives that job a new next run time; the others keep theirs."""
    async with started(config_with(tmp_path)) as scheduler:
        register_jobs(scheduler, config_with(tmp_path))
        before = {job_id: job.next_run_time for job_id, job in stored(scheduler).items()}
    changed = config_with(tmp_path, {"scrape_guides": {"interval_minutes": 1}})
    async with started(changed) as scheduler:
        report = register_jobs(scheduler, changed)
        jobs = stored(scheduler)
    assert report.rescheduled == ["scrape_guides"]
    assert jobs["scrape_guides"].trigger.interval == timedelta(minutes=1)
    assert jobs["scrape_guides"].next_run_time < before["scrape_guides"]
    assert jobs["refresh_cache"].next_run_time == before["refresh_cache"]


async def test_builder_honours_custom_settings(tmp_path: Path) -> None:
    """Timezone, misfire grace and the job-store path (folder created) come from config."""
    store = tmp_path / "deep" / "folder" / "jobs.sqlite"
    config = config_with(
        tmp_path, timezone="Europe/Berlin", misfire_grace_seconds=42, job_store_path=store
    )
    async with started(config) as scheduler:
        register_jobs(scheduler, config)
        assert str(scheduler.timezone) == "Europe/Berlin"
        job = scheduler.get_job("scrape_guides")
        assert job.misfire_grace_time == 42
        assert str(job.trigger.timezone) == "Europe/Berlin"
    assert store.exists()


async def test_changed_grace_is_applied_without_rescheduling(tmp_path: Path) -> None:
    """A new misfire grace updates the stored job but keeps its next run time."""
    async with started(config_with(tmp_path)) as scheduler:
        register_jobs(scheduler, config_with(tmp_path))
        before = scheduler.get_job("cleanup_logs").next_run_time
    changed = config_with(tmp_path, misfire_grace_seconds=7)
    async with started(changed) as scheduler:
        register_jobs(scheduler, changed)
        job = scheduler.get_job("cleanup_logs")
        assert job.misfire_grace_time == 7
        assert job.next_run_time == before


async def test_new_jobs_run_at_once_when_configured(tmp_path: Path) -> None:
    """With run_new_jobs_at_once, a job new to the store is due now; a restart keeps its time."""
    config = config_with(tmp_path, run_new_jobs_at_once=True)
    before = datetime.now(UTC)
    async with started(config) as scheduler:
        register_jobs(scheduler, config)
        due = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    assert all(before <= moment <= datetime.now(UTC) for moment in due.values())
    async with started(config) as scheduler:
        register_jobs(scheduler, config)
        again = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    assert again == due


def only_cleanup(tmp_path: Path, interval_minutes: float) -> AppConfig:
    return config_with(
        tmp_path,
        only_jobs(cleanup_logs={"interval_minutes": interval_minutes}),
    )


async def test_seed_api_build_register_start_runs_jobs_in_that_container(tmp_path: Path) -> None:
    """build_scheduler(config, container), register_jobs(...), start_scheduler(...): the jobs run
    through that container, and the exit stack stops the scheduler."""
    config = only_cleanup(tmp_path, 1 / 60)
    async with open_worker_container(config) as container:
        runner: JobRunner = await resolve(container.job_runner)
        tracker = RunTracker(runner.events)
        async with AsyncExitStack() as stack:
            scheduler = build_scheduler(config, container)
            report = register_jobs(scheduler, config, container)
            start_scheduler(scheduler, stack)
            assert scheduler.state == STATE_RUNNING
            with anyio.fail_after(30):
                runs = await tracker.wait_for_runs("cleanup_logs", 2)
        assert not scheduler.running
    assert report.added == ["cleanup_logs"]
    assert all(run.trigger is Trigger.SCHEDULED for run in runs)
    assert {run.outcome for run in runs} <= {Outcome.SUCCESS, Outcome.SKIPPED}


def test_start_scheduler_without_a_stack_stops_with_the_loop(tmp_path: Path) -> None:
    """Without an exit stack the scheduler is shut down when `asyncio.run` ends; no signal
    handler is installed."""
    config = only_cleanup(tmp_path, 60)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    async def main() -> AsyncIOScheduler:
        scheduler = build_scheduler(config)
        register_jobs(scheduler, config)
        start_scheduler(scheduler)
        assert scheduler.state == STATE_RUNNING
        return scheduler

    scheduler = asyncio.run(main())
    assert not scheduler.running
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_seed_tasks_are_exported_by_the_scheduler_module() -> None:
    """The seed's three tasks are part of workers.scheduler's public face."""
    from d3_item_salvager.workers import scheduler, tasks

    for name in ("scrape_guides_task", "refresh_cache_task", "cleanup_logs_task"):
        assert getattr(scheduler, name) is getattr(tasks, name)
        assert name in scheduler.__all__


async def test_registering_a_different_configuration_warns_about_each_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A leader whose config differs from what the store holds names every difference."""
    async with started(config_with(tmp_path)) as scheduler:
        register_jobs(scheduler, config_with(tmp_path))
    changed = config_with(
        tmp_path,
        {"scrape_guides": {"interval_minutes": 30}, "cleanup_logs": {"enabled": False}},
        misfire_grace_seconds=7,
    )
    with caplog.at_level(logging.WARNING):
        async with started(changed) as scheduler:
            report = register_jobs(scheduler, changed)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The interval, the disabled job, and the misfire grace of each other job.
    assert len(report.changes) == 2 + len(BUILTIN_JOBS) - 2
    assert all(any(change in line for line in warnings) for change in report.changes)
    assert any(
        "scrape_guides: interval[6:00:00]" in line and "0:30:00" in line for line in warnings
    )
    assert any("cleanup_logs: disabled" in line for line in warnings)
    assert any("refresh_cache: misfire grace 300s -> 7s" in line for line in warnings)
