"""The APScheduler 3 `AsyncIOScheduler` on a persistent SQLite job store.

Jobs are stored as textual `module:function` references with plain kwargs, so the store never
holds a container, client or bound method. Registration is idempotent: stable ids, unchanged jobs
keep their stored next run time, changed ones are rescheduled, disabled ones are removed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_SHUTDOWN,
    JobEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from d3_item_salvager.config import AppConfig
from d3_item_salvager.data.dialects import retry_schema_race
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers.job_runner import JobRunner, base_job_id, retry_job_id
from d3_item_salvager.workers.job_store_db import (
    engine_options,
    install_sqlite_pragmas,
    sync_job_store_url,
)

_log = get_logger(__name__)

TASKS_MODULE = "d3_item_salvager.workers.tasks"
JOB_FUNCTIONS = {
    "scrape_guides": f"{TASKS_MODULE}:scrape_guides_task",
    "refresh_cache": f"{TASKS_MODULE}:refresh_cache_task",
    "cleanup_logs": f"{TASKS_MODULE}:cleanup_logs_task",
}


@dataclass
class RegistrationReport:
    """What `register_jobs` changed in the store, by job id."""

    added: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def build_scheduler(config: AppConfig, runner: JobRunner | None = None) -> AsyncIOScheduler:
    """A scheduler on the configured job store, with safe job defaults; not started.

    With a runner, the scheduler's events feed the run history: due times of submitted runs,
    missed runs and runs skipped because the previous one was still going.
    """
    settings = config.scheduler
    url = sync_job_store_url(settings)
    job_store = SQLAlchemyJobStore(url=url, engine_options=engine_options(url))
    install_sqlite_pragmas(job_store.engine)
    scheduler = AsyncIOScheduler(
        jobstores={"default": job_store},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.misfire_grace_seconds,
        },
        timezone=ZoneInfo(settings.timezone),
    )
    if runner is not None:
        scheduler.add_listener(
            _history_listener(runner),
            EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )
    return scheduler


def start_paused(scheduler: AsyncIOScheduler) -> None:
    """Start the scheduler paused; tolerates another process creating the jobs table meanwhile."""
    retry_schema_race(lambda: scheduler.start(paused=True))


def _history_listener(runner: JobRunner) -> Any:
    def listen(event: JobEvent) -> None:
        job_id = base_job_id(event.job_id)
        if job_id not in JOB_FUNCTIONS:
            return
        trigger = "retry" if event.job_id != job_id else "scheduled"
        if isinstance(event, JobSubmissionEvent) and event.code == EVENT_JOB_SUBMITTED:
            runner.note_submitted(job_id, list(event.scheduled_run_times))
        elif isinstance(event, JobSubmissionEvent):  # EVENT_JOB_MAX_INSTANCES
            runner.record_not_run(job_id, trigger, "skipped", event.scheduled_run_times[-1])
        else:
            runner.record_not_run(job_id, trigger, "missed", event.scheduled_run_time)

    return listen


def _interval_trigger(config: AppConfig, minutes: float) -> IntervalTrigger:
    return IntervalTrigger(minutes=minutes, timezone=ZoneInfo(config.scheduler.timezone))


def _same_trigger(current: Any, wanted: IntervalTrigger) -> bool:
    return (
        isinstance(current, IntervalTrigger)
        and current.interval == wanted.interval
        and str(current.timezone) == str(wanted.timezone)
    )


def register_jobs(scheduler: AsyncIOScheduler, config: AppConfig) -> RegistrationReport:
    """Make the store hold exactly the enabled jobs, keeping next run times that still apply.

    Call it on a started (possibly paused) scheduler, so it sees the jobs already stored.
    """
    report = RegistrationReport()
    grace = config.scheduler.misfire_grace_seconds
    for job_id, job in config.scheduler.jobs.by_id().items():
        existing = scheduler.get_job(job_id)
        if not job.enabled:
            for stored_id in (job_id, retry_job_id(job_id)):
                if scheduler.get_job(stored_id) is not None:
                    scheduler.remove_job(stored_id)
            if existing is not None:
                report.removed.append(job_id)
            continue
        trigger = _interval_trigger(config, job.interval_minutes)
        if existing is None:
            # A job new to this store (a fresh install, or just enabled) runs at once when so
            # configured, rather than one whole interval later; restarts keep the stored time.
            first_run = (
                {"next_run_time": datetime.now(UTC)}
                if config.scheduler.run_new_jobs_at_once
                else {}
            )
            scheduler.add_job(
                JOB_FUNCTIONS[job_id],
                trigger,
                id=job_id,
                name=job_id,
                replace_existing=True,
                **first_run,
            )
            report.added.append(job_id)
        elif existing.func_ref != JOB_FUNCTIONS[job_id] or not _same_trigger(
            existing.trigger, trigger
        ):
            scheduler.remove_job(job_id)
            scheduler.add_job(JOB_FUNCTIONS[job_id], trigger, id=job_id, name=job_id)
            report.rescheduled.append(job_id)
        else:
            if (existing.misfire_grace_time, existing.coalesce, existing.max_instances) != (
                grace,
                True,
                1,
            ):
                # modify_job keeps next_run_time; only the run policy changes.
                scheduler.modify_job(
                    job_id, misfire_grace_time=grace, coalesce=True, max_instances=1
                )
            report.unchanged.append(job_id)
    _log.info(
        "jobs registered",
        extra={
            "added": report.added,
            "rescheduled": report.rescheduled,
            "unchanged": report.unchanged,
            "removed": report.removed,
        },
    )
    return report


class SchedulerRetryPlanner:
    """Schedules one-off retry runs that start before the job's next regular run."""

    def __init__(self, scheduler: AsyncIOScheduler, config: AppConfig) -> None:
        self._scheduler = scheduler
        self._config = config

    def schedule_retry(self, job_id: str, attempt: int, delay_seconds: float) -> datetime | None:
        run_at = datetime.now(UTC) + timedelta(seconds=delay_seconds)
        regular = self._scheduler.get_job(job_id)
        next_regular = regular.next_run_time if regular is not None else None
        if next_regular is not None and run_at >= next_regular:
            return None
        self._scheduler.add_job(
            JOB_FUNCTIONS[job_id],
            DateTrigger(run_date=run_at),
            id=retry_job_id(job_id),
            name=retry_job_id(job_id),
            kwargs={"trigger": "retry", "attempt": attempt},
            replace_existing=True,
        )
        return run_at


async def stop_scheduler(
    scheduler: AsyncIOScheduler, runner: JobRunner | None, grace_seconds: float
) -> None:
    """Graceful stop: no new runs, running jobs awaited up to the grace time, then cancelled."""
    if not scheduler.running:
        return
    scheduler.pause()
    if runner is not None:
        await runner.stop(grace_seconds)
    stopped = asyncio.Event()

    def on_shutdown(_event: SchedulerEvent) -> None:
        stopped.set()

    scheduler.add_listener(on_shutdown, EVENT_SCHEDULER_SHUTDOWN)
    # AsyncIOScheduler.shutdown only queues the work on the loop; wait until it has happened.
    scheduler.shutdown(wait=False)
    with anyio.fail_after(10):
        await stopped.wait()
