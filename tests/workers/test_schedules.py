"""Cron schedules and jitter: configuration, registration, reconciliation, runs, status, health."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from d3_item_salvager.config import AppConfig, load_config
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.scheduler import (
    SchedulerRetryPlanner,
    build_scheduler,
    register_jobs,
    stop_scheduler,
)
from tests.conftest import make_config, only_jobs
from tests.processes import run_cli, write_config


def cleanup_only(tmp_path: Path, cleanup: dict[str, Any], **scheduler: Any) -> AppConfig:
    """Only cleanup_logs enabled (a cheap job), scheduled as `cleanup` says."""
    return make_config(
        tmp_path,
        scheduler={
            "jobs": only_jobs(cleanup_logs=cleanup),
            **scheduler,
        },
    )


@asynccontextmanager
async def registered(config: AppConfig) -> AsyncIterator[AsyncIOScheduler]:
    """A paused scheduler with the config's jobs registered, shut down after the block."""
    scheduler = build_scheduler(config)
    scheduler.start(paused=True)
    try:
        register_jobs(scheduler, config)
        yield scheduler
    finally:
        await stop_scheduler(scheduler, None, 0)


def next_daily(now: datetime, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    """The next hour:minute in `zone` after `now`, worked out without APScheduler."""
    local = now.astimezone(zone)
    day = local.date()
    while True:
        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        if candidate > local:
            return candidate
        day += timedelta(days=1)


# Configuration


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "scheduler.jobs.cleanup_logs.cron = '61 * * * *': minute field",
        ),
        (
            {"cron": "17 4 * * *", "interval_minutes": 60},
            (
                "scheduler.jobs.cleanup_logs.cron = '17 4 * * *': a job has interval_minutes or "
                "cron, not both (interval_minutes = 60"
            ),
        ),
        ({"cron": "0 4 13 * 5"}, "restrict either the day of the month or the weekday"),
        ({"jitter_seconds": -1}, "scheduler.jobs.cleanup_logs.jitter_seconds = -1"),
    ],
)
def test_bad_schedule_settings_name_the_setting_and_value(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    """A bad cron expression, cron beside an interval, or negative jitter: one line naming it."""
    with pytest.raises(ConfigError) as caught:
        cleanup_only(tmp_path, section)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cron_and_jitter_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`D3IS_SCHEDULER__JOBS__<ID>__CRON` and `__JITTER_SECONDS` set the job's schedule."""
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__SCRAPE_GUIDES__CRON", "17 4 * * *")
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__SCRAPE_GUIDES__JITTER_SECONDS", "90")
    section = load_config().scheduler.jobs.by_id()["scrape_guides"]
    assert (section.cron, section.jitter_seconds, section.interval_minutes) == (
        "17 4 * * *",
        90,
        None,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"D3IS_SCHEDULER__JOBS__CLEANUP_LOGS__CRON": "61 * * * *"},
            "scheduler.jobs.cleanup_logs.cron = '61 * * * *'",
        ),
        (
            {
                "D3IS_SCHEDULER__JOBS__CLEANUP_LOGS__CRON": "17 4 * * *",
                "D3IS_SCHEDULER__JOBS__CLEANUP_LOGS__INTERVAL_MINUTES": "60",
            },
            "not both (interval_minutes = 60",
        ),
    ],
)
async def test_bad_cron_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """The CLI refuses a bad cron setting with exit 2 and one line, no traceback."""
    code, stdout, stderr = await run_cli("run-scheduler", cwd=tmp_path, env=env)
    assert code == 2
    assert message in stderr
    assert stderr.strip().count("\n") == 0
    assert stdout == ""


# Registration and reconciliation


async def test_cron_job_is_stored_with_its_next_fire_time_in_the_timezone(tmp_path: Path) -> None:
    """A cron job's next run time is the expression's next match in scheduler.timezone; it has
    the run policy of every job (coalesce, one instance, the misfire grace)."""
    zone = ZoneInfo("Pacific/Auckland")
    config = cleanup_only(tmp_path, {"cron": "17 4 * * *"}, timezone=zone.key)
    before = datetime.now(UTC)
    async with registered(config) as scheduler:
        job = scheduler.get_job("cleanup_logs")
    assert isinstance(job.trigger, CronTrigger)
    assert job.next_run_time == next_daily(before, 4, 17, zone)
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 300)


async def test_jitter_delays_the_stored_fire_time_by_at_most_its_seconds(tmp_path: Path) -> None:
    """With jitter, the stored next run time lies within jitter seconds after the fire time."""
    config = cleanup_only(tmp_path, {"cron": "17 4 * * *", "jitter_seconds": 600})
    before = datetime.now(UTC)
    async with registered(config) as scheduler:
        job = scheduler.get_job("cleanup_logs")
    fire = next_daily(before, 4, 17, ZoneInfo("UTC"))
    assert job.trigger.jitter == 600
    assert fire <= job.next_run_time <= fire + timedelta(seconds=600)


async def test_interval_jobs_take_jitter_too(tmp_path: Path) -> None:
    """An interval job's trigger carries the configured jitter."""
    config = cleanup_only(tmp_path, {"interval_minutes": 60, "jitter_seconds": 30})
    async with registered(config) as scheduler:
        trigger = scheduler.get_job("cleanup_logs").trigger
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.jitter == 30


async def test_switching_between_interval_and_cron_reschedules_once_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Interval -> cron -> interval: each switch is logged and rescheduled, never duplicated."""
    interval = cleanup_only(tmp_path, {"interval_minutes": 60})
    cron = cleanup_only(tmp_path, {"cron": "17 4 * * *"})
    async with registered(interval):
        pass
    with caplog.at_level(logging.WARNING):
        async with registered(cron) as scheduler:
            jobs = scheduler.get_jobs()
    [job] = jobs
    assert isinstance(job.trigger, CronTrigger)
    assert job.next_run_time == next_daily(datetime.now(UTC), 4, 17, ZoneInfo("UTC"))
    assert any(
        "cleanup_logs: interval[1:00:00] -> cron[" in record.getMessage()
        for record in caplog.records
    )
    async with registered(interval) as scheduler:
        [job] = scheduler.get_jobs()
    assert isinstance(job.trigger, IntervalTrigger)


@pytest.mark.parametrize(
    ("changed", "rescheduled"),
    [
        ({"cron": "17 4 * * *"}, []),
        ({"cron": "18 4 * * *"}, ["cleanup_logs"]),
        ({"cron": "17 4 * * *", "jitter_seconds": 5}, ["cleanup_logs"]),
    ],
)
async def test_a_cron_job_is_rescheduled_only_when_its_schedule_changed(
    tmp_path: Path, changed: dict[str, Any], rescheduled: list[str]
) -> None:
    """The same expression keeps the stored next run time; another expression or jitter does not."""
    original = cleanup_only(tmp_path, {"cron": "17 4 * * *"})
    async with registered(original) as scheduler:
        before = scheduler.get_job("cleanup_logs").next_run_time
    again = cleanup_only(tmp_path, changed)
    scheduler = build_scheduler(again)
    scheduler.start(paused=True)
    try:
        report = register_jobs(scheduler, again)
        after = scheduler.get_job("cleanup_logs").next_run_time
        assert len(scheduler.get_jobs()) == 1
    finally:
        await stop_scheduler(scheduler, None, 0)
    assert report.rescheduled == rescheduled
    if not rescheduled:
        assert after == before


async def test_a_timezone_change_reschedules_a_cron_job(tmp_path: Path) -> None:
    """The same expression in another timezone is another schedule."""
    async with registered(cleanup_only(tmp_path, {"cron": "17 4 * * *"})):
        pass
    moved = cleanup_only(tmp_path, {"cron": "17 4 * * *"}, timezone="America/New_York")
    scheduler = build_scheduler(moved)
    scheduler.start(paused=True)
    try:
        report = register_jobs(scheduler, moved)
        job = scheduler.get_job("cleanup_logs")
    finally:
        await stop_scheduler(scheduler, None, 0)
    assert report.rescheduled == ["cleanup_logs"]
    assert job.next_run_time == next_daily(datetime.now(UTC), 4, 17, ZoneInfo("America/New_York"))


# Runs: misfires, coalescing and retries work as for interval jobs


async def store_with_due_time(config: AppConfig, due: datetime) -> None:
    """Leave a job store whose cleanup job was due at `due` (as if the process had been down)."""
    async with registered(config) as scheduler:
        scheduler.modify_job("cleanup_logs", next_run_time=due)


async def test_cron_runs_missed_within_the_grace_are_coalesced_into_one(tmp_path: Path) -> None:
    """Four missed every-minute fires give one run (burst mode too); the next fire is the next
    whole minute, not an older one missed."""
    config = cleanup_only(tmp_path, {"cron": "* * * * *"}, misfire_grace_seconds=300)
    await store_with_due_time(config, datetime.now(UTC) - timedelta(minutes=4, seconds=30))
    async with WorkerRuntime(config, burst=True) as runtime:
        started = datetime.now(UTC)
        [run] = await runtime.run_due_jobs()
        assert runtime.scheduler is not None
        following = runtime.scheduler.get_job("cleanup_logs").next_run_time
    assert (run.trigger, run.outcome) == ("scheduled", "success")
    assert following > started
    assert (following.second, following.microsecond) == (0, 0)


async def test_cron_run_missed_beyond_the_grace_is_recorded_as_missed(tmp_path: Path) -> None:
    """A daily cron run due two hours ago is not run late: it is recorded as missed."""
    config = cleanup_only(tmp_path, {"cron": "0 4 * * *"}, misfire_grace_seconds=300)
    await store_with_due_time(config, datetime.now(UTC) - timedelta(hours=2))
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(20):
            [run] = await runtime.wait_for_runs("cleanup_logs", 1)
    assert run.outcome == "missed"


async def test_a_cron_jobs_retry_must_start_before_its_next_fire_time(tmp_path: Path) -> None:
    """A retry that would start after the next cron fire is not scheduled; one before it is."""
    minute = (datetime.now(UTC).minute + 30) % 60  # next fire 29 to 31 minutes away
    config = cleanup_only(tmp_path, {"cron": f"{minute} * * * *"})
    async with registered(config) as scheduler:
        planner = SchedulerRetryPlanner(scheduler)
        fire = scheduler.get_job("cleanup_logs").next_run_time
        assert planner.schedule_retry("cleanup_logs", 1, 45 * 60) is None
        when = planner.schedule_retry("cleanup_logs", 1, 60)
        retry = scheduler.get_job("cleanup_logs:retry")
    assert fire.minute == minute
    assert when is not None
    assert when < fire
    assert retry is not None
    assert retry.next_run_time == when


# Status and health


def toml_for(config: AppConfig, path: Path) -> Path:
    """A TOML file for CLI subprocesses with the settings that matter here."""
    jobs = {
        job_id: section.model_dump(exclude_none=True, exclude_defaults=True)
        for job_id, section in config.scheduler.jobs.by_id().items()
    }
    return write_config(
        path,
        {
            "database": {"url": config.database.url},
            "logging": {"dir": str(config.logging.dir)},
            "cache": {"dir": str(config.cache.dir)},
            "scheduler": {
                "job_store_path": str(config.scheduler.job_store_path),
                "timezone": config.scheduler.timezone,
                "jobs": {job_id: section or {"enabled": True} for job_id, section in jobs.items()},
            },
        },
    )


async def status_json(config: AppConfig, tmp_path: Path) -> dict[str, Any]:
    code, stdout, stderr = await run_cli(
        "status", "--json", "--config", str(toml_for(config, tmp_path / "w.toml")), cwd=tmp_path
    )
    assert code == 0, stderr
    report: dict[str, Any] = json.loads(stdout)
    return report


async def test_status_shows_the_expression_jitter_and_next_fire_time(tmp_path: Path) -> None:
    """`status --json` gives the cron expression, the jitter and the stored fire time; the
    table shows the schedule as stored."""
    config = cleanup_only(
        tmp_path, {"cron": "17 4 * * 0", "jitter_seconds": 30}, timezone="Europe/Berlin"
    )
    async with registered(config) as scheduler:
        stored = scheduler.get_job("cleanup_logs").next_run_time
    jobs = {job["job_id"]: job for job in (await status_json(config, tmp_path))["jobs"]}
    cleanup = jobs["cleanup_logs"]
    assert cleanup["cron"] == "17 4 * * 0"
    assert cleanup["jitter_seconds"] == 30
    assert cleanup["trigger"] == "cron 17 4 * * sun (Europe/Berlin), jitter 30 s"
    assert datetime.fromisoformat(cleanup["next_run_time"]) == stored
    assert stored.astimezone(ZoneInfo("Europe/Berlin")).weekday() == 6  # a Sunday
    assert cleanup["paused"] is False
    code, stdout, _ = await run_cli("status", "--config", str(tmp_path / "w.toml"), cwd=tmp_path)
    assert code == 0
    assert "cron 17 4 * * sun ~30 s" in stdout  # the table drops the configured timezone


async def test_status_before_registration_describes_the_configured_cron(tmp_path: Path) -> None:
    """With nothing stored yet, status describes the schedule the configuration asks for."""
    config = cleanup_only(tmp_path, {"cron": "*/10 * * * *"})
    code, _, stderr = await run_cli(
        "run", "cleanup-logs", "--config", str(toml_for(config, tmp_path / "w.toml")), cwd=tmp_path
    )
    assert code == 0, stderr
    jobs = {job["job_id"]: job for job in (await status_json(config, tmp_path))["jobs"]}
    assert jobs["cleanup_logs"]["trigger"] == "cron */10 * * * * (UTC)"
    assert jobs["cleanup_logs"]["next_run_time"] is None


@pytest.mark.parametrize(("late_minutes", "healthy"), [(5, True), (20, False)])
async def test_a_cron_job_is_overdue_past_its_fire_time_plus_the_margin(
    tmp_path: Path, late_minutes: int, healthy: bool
) -> None:
    """`status --check` calls a cron job overdue once its fire time is more than
    health.overdue_margin_minutes (15) past."""
    config = cleanup_only(tmp_path, {"cron": "0 4 * * *"})
    toml = toml_for(config, tmp_path / "w.toml")
    due = datetime.now(UTC) - timedelta(minutes=late_minutes)
    async with WorkerRuntime(config, burst=True) as runtime:  # holds a live lease
        assert runtime.scheduler is not None
        runtime.scheduler.modify_job("cleanup_logs", next_run_time=due)
        code, stdout, _ = await run_cli("status", "--check", "--config", str(toml), cwd=tmp_path)
    assert code == (0 if healthy else 1), stdout
    assert ("overdue" in stdout) is not healthy
