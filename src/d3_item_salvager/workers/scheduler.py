"""The scheduler, the workers' public face: build it, register the jobs, start it.

    scheduler = build_scheduler(config, container)
    register_jobs(scheduler, config, container)
    start_scheduler(scheduler)

`WorkerRuntime` is these three calls plus the container, the lease and metrics. The scheduler is an
APScheduler 3 `AsyncIOScheduler` on a persistent job store; jobs are stored as textual
`module:function` references (from the job registry, jobs.py) with plain kwargs, so the store never
holds a container, client or bound method. Registration is idempotent: stable ids, unchanged jobs
keep their stored next run time, changed ones are rescheduled (with a warning naming the change),
disabled ones are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_SHUTDOWN,
    JobEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from d3_item_salvager.config import AppConfig, JobConfig
from d3_item_salvager.crontab import cron_trigger, describe_cron
from d3_item_salvager.data.dialects import retry_schema_race
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.job_store import (
    engine_options,
    install_connection_settings,
    sync_job_store_url,
)
from d3_item_salvager.workers.jobs import (
    JobRegistry,
    base_job_id,
    is_retry_job_id,
    retry_job_id,
)
from d3_item_salvager.workers.paused_jobs import keep_paused
from d3_item_salvager.workers.runs import Outcome, Trigger
from d3_item_salvager.workers.tasks import (
    STORED_ENTRY,
    Submission,
    cleanup_logs_task,
    refresh_cache_task,
    scrape_guides_task,
    submission_context,
)

if TYPE_CHECKING:
    from d3_item_salvager.workers.container import WorkerContainer

__all__ = [
    "JobStoreScheduler",
    "RegistrationReport",
    "build_scheduler",
    "cleanup_logs_task",
    "close_job_store",
    "refresh_cache_task",
    "register_jobs",
    "scrape_guides_task",
    "start_scheduler",
    "stop_scheduler",
]

_log = get_logger(__name__)


@dataclass
class RegistrationReport:
    """What `register_jobs` changed in the store, by job id."""

    added: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # kept paused (`pause JOB`)
    changes: list[str] = field(default_factory=list)  # one line per difference from the store


# APScheduler 3 ships no type hints, hence the ignore.
class JobStoreScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An AsyncIOScheduler that also knows what `build_scheduler` gave it: its job store's
    engine (for our own tables and for closing it), its runtime's container, and how long a
    graceful stop waits for running jobs."""

    def __init__(
        self,
        *,
        engine: Engine,
        container: WorkerContainer | None,
        grace_seconds: float,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.job_store_engine = engine
        self.container = container
        self.grace_seconds = grace_seconds


def build_scheduler(
    config: AppConfig, container: WorkerContainer | None = None
) -> JobStoreScheduler:
    """A scheduler on the configured job store, with safe job defaults; not started.

    With a container, its jobs run bound to that container (whatever else is open in the process)
    and its events feed that container's run history: missed runs, and runs skipped because the
    previous one was still going. Without one, jobs use the runtime current where they run.
    """
    settings = config.scheduler
    busy_timeout = config.database.busy_timeout_seconds
    url = sync_job_store_url(settings)
    job_store = SQLAlchemyJobStore(url=url, engine_options=engine_options(url, busy_timeout))
    install_connection_settings(job_store.engine, busy_timeout)
    executor = RuntimeExecutor(container) if container is not None else AsyncIOExecutor()
    scheduler = JobStoreScheduler(
        engine=job_store.engine,
        container=container,
        grace_seconds=settings.shutdown_timeout_seconds,
        jobstores={"default": job_store},
        executors={"default": executor},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.misfire_grace_seconds,
        },
        timezone=ZoneInfo(settings.timezone),
    )
    if container is not None:
        scheduler.add_listener(
            _history_listener(container), EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
    return scheduler


# APScheduler 3 ships no type hints, hence the ignore.
class RuntimeExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """AsyncIOExecutor whose runs are submitted in a context bound to one runtime's container
    and stamped with the run's `Submission` (due time, lease term).

    Only the public `submit_job` is overridden: AsyncIOExecutor creates the run's task inside
    it, and a task copies the context it is created in (the pinned APScheduler 3.11 does so).
    """

    def __init__(self, container: WorkerContainer) -> None:
        super().__init__()
        self._container = container

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        from d3_item_salvager.workers.container import resolved

        runner: JobRunner = resolved(self._container.job_runner)
        submission = Submission(run_times[-1], runner.term)
        context = submission_context(self._container, submission)
        context.run(super().submit_job, job, run_times)


def close_job_store(scheduler: AsyncIOScheduler) -> None:
    """Close the connections of a scheduler's job store (built by build_scheduler); idempotent.

    APScheduler closes them only in `shutdown()`, which a scheduler that never started, or
    failed to start, never reaches; its connections would otherwise be left to the garbage
    collector.
    """
    if isinstance(scheduler, JobStoreScheduler) and not scheduler.running:
        scheduler.job_store_engine.dispose()


def start_paused(scheduler: AsyncIOScheduler) -> None:
    """Start the scheduler paused; tolerates another process creating the jobs table meanwhile."""
    retry_schema_race(lambda: scheduler.start(paused=True))


def start_scheduler(scheduler: AsyncIOScheduler, stack: AsyncExitStack | None = None) -> None:
    """Start the scheduler (or resume it) on the running loop and register its graceful stop:
    no new runs, running jobs awaited up to `scheduler.shutdown_timeout_seconds`, then cancelled
    and recorded so (for a scheduler built with a container).

    With an exit stack, the stop runs when the stack closes. Without one, it runs when the
    running loop cancels its remaining tasks (as `asyncio.run` does on the way out). It installs
    no signal handlers: that is the CLI's business, or the host app's.
    """
    if not scheduler.running:
        start_paused(scheduler)
    scheduler.resume()
    if stack is not None:
        stack.push_async_callback(_graceful_stop, scheduler)
        return
    loop = asyncio.get_running_loop()

    async def stop_with_the_loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await _graceful_stop(scheduler)

    guard = loop.create_task(stop_with_the_loop(), name="d3is-scheduler-shutdown")
    _guards.add(guard)
    guard.add_done_callback(_guards.discard)
    scheduler.add_listener(lambda _event: guard.cancel(), EVENT_SCHEDULER_SHUTDOWN)


_guards: set[asyncio.Task[None]] = set()


async def _graceful_stop(scheduler: AsyncIOScheduler) -> None:
    from d3_item_salvager.workers.container import resolved

    runner, grace_seconds = None, 0.0
    if isinstance(scheduler, JobStoreScheduler):
        grace_seconds = scheduler.grace_seconds
        if scheduler.container is not None:
            with contextlib.suppress(RuntimeError):  # its runner never ran anything: no runs
                runner = resolved(scheduler.container.job_runner)
    await stop_scheduler(scheduler, runner, grace_seconds)


def _history_listener(container: WorkerContainer) -> Any:
    from d3_item_salvager.workers.container import resolved

    def listen(event: JobEvent) -> None:
        job_id = base_job_id(event.job_id)
        if job_id not in container.jobs():
            return
        runner: JobRunner = resolved(container.job_runner)
        trigger = Trigger.RETRY if is_retry_job_id(event.job_id) else Trigger.SCHEDULED
        if isinstance(event, JobSubmissionEvent):  # EVENT_JOB_MAX_INSTANCES
            runner.record_not_run(job_id, trigger, Outcome.SKIPPED, event.scheduled_run_times[-1])
        else:
            runner.record_not_run(job_id, trigger, Outcome.MISSED, event.scheduled_run_time)

    return listen


def _job_trigger(config: AppConfig, job: JobConfig) -> BaseTrigger:
    """The job's interval or cron trigger, in the scheduler's timezone, with its jitter."""
    timezone = ZoneInfo(config.scheduler.timezone)
    if job.cron is not None:
        return cron_trigger(job.cron, timezone, job.jitter_seconds)
    jitter = job.jitter_seconds or None
    return IntervalTrigger(minutes=job.interval_minutes, timezone=timezone, jitter=jitter)


def _same_trigger(current: Any, wanted: BaseTrigger) -> bool:
    """Whether the stored trigger fires as the configured one would (same kind, schedule,
    timezone and jitter); any difference reschedules the job."""
    if type(current) is not type(wanted) or current.jitter != wanted.jitter:
        return False
    if str(current.timezone) != str(wanted.timezone):
        return False
    if isinstance(wanted, CronTrigger):
        return describe_cron(current) == describe_cron(wanted)
    return isinstance(wanted, IntervalTrigger) and bool(current.interval == wanted.interval)


def _with_jitter(trigger: Any) -> str:
    jitter = getattr(trigger, "jitter", None)
    return f"{trigger} with jitter {jitter:g}s" if jitter else str(trigger)


def register_jobs(
    scheduler: AsyncIOScheduler, config: AppConfig, container: WorkerContainer | None = None
) -> RegistrationReport:
    """Make the store hold exactly the enabled jobs of the registry, keeping next run times that
    still apply. A scheduler not started yet is started paused first, so it sees the stored jobs.

    The jobs are the container's (its runtime's registry), or the built-in ones without one.
    """
    jobs: JobRegistry = container.jobs() if container is not None else BUILTIN_JOBS
    if not scheduler.running:
        start_paused(scheduler)
    report = RegistrationReport()
    for job_id, job in jobs.settings(config).items():
        _reconcile(scheduler, config, job_id, job, report)
    if isinstance(scheduler, JobStoreScheduler):  # a paused job stays paused, however registered
        report.paused = keep_paused(scheduler, scheduler.job_store_engine)
    for change in report.changes:
        _log.warning("job store differs from this configuration: %s", change)
    _log.info(
        "jobs registered",
        extra={
            "added": report.added,
            "rescheduled": report.rescheduled,
            "unchanged": report.unchanged,
            "removed": report.removed,
            "paused": report.paused,
        },
    )
    return report


def _reconcile(
    scheduler: AsyncIOScheduler,
    config: AppConfig,
    job_id: str,
    job: JobConfig,
    report: RegistrationReport,
) -> None:
    """Bring one job's stored entry in line with its settings; note what changed in `report`."""
    entry = {"job_id": job_id}
    existing = scheduler.get_job(job_id)
    if not job.enabled:
        for stored_id in (job_id, retry_job_id(job_id)):
            if scheduler.get_job(stored_id) is not None:
                scheduler.remove_job(stored_id)
        if existing is not None:
            report.removed.append(job_id)
            report.changes.append(f"{job_id}: disabled, removed from the job store")
        return
    trigger = _job_trigger(config, job)
    if existing is None:
        # A job new to this store (a fresh install, or just enabled) runs at once when so
        # configured, rather than one whole interval later; restarts keep the stored time.
        first_run = (
            {"next_run_time": datetime.now(UTC)} if config.scheduler.run_new_jobs_at_once else {}
        )
        scheduler.add_job(
            STORED_ENTRY, trigger, id=job_id, name=job_id, kwargs=entry, replace_existing=True,
            **first_run,
        )  # fmt: skip
        report.added.append(job_id)
        return
    if (existing.func_ref, existing.kwargs) != (STORED_ENTRY, entry) or not _same_trigger(
        existing.trigger, trigger
    ):
        report.changes.append(
            f"{job_id}: {_with_jitter(existing.trigger)} -> {_with_jitter(trigger)}"
            if existing.func_ref == STORED_ENTRY
            else f"{job_id}: task {existing.func_ref} -> {STORED_ENTRY}"
        )
        scheduler.remove_job(job_id)
        scheduler.add_job(STORED_ENTRY, trigger, id=job_id, name=job_id, kwargs=entry)
        report.rescheduled.append(job_id)
        return
    grace = config.scheduler.misfire_grace_seconds
    if (existing.misfire_grace_time, existing.coalesce, existing.max_instances) != (grace, True, 1):
        report.changes.append(f"{job_id}: misfire grace {existing.misfire_grace_time}s -> {grace}s")
        # modify_job keeps next_run_time; only the run policy changes.
        scheduler.modify_job(job_id, misfire_grace_time=grace, coalesce=True, max_instances=1)
    report.unchanged.append(job_id)


def drop_retries(scheduler: AsyncIOScheduler) -> list[str]:
    """Remove every pending retry run from the store; returns their job ids."""
    dropped = []
    for job in scheduler.get_jobs():
        if is_retry_job_id(job.id):
            scheduler.remove_job(job.id)
            dropped.append(base_job_id(job.id))
    return dropped


class SchedulerRetryPlanner:
    """Schedules one-off retry runs that start before the job's next regular run."""

    def __init__(self, scheduler: AsyncIOScheduler) -> None:
        self._scheduler = scheduler

    def schedule_retry(self, job_id: str, attempt: int, delay_seconds: float) -> datetime | None:
        run_at = datetime.now(UTC) + timedelta(seconds=delay_seconds)
        regular = self._scheduler.get_job(job_id)
        next_regular = regular.next_run_time if regular is not None else None
        if regular is not None and next_regular is None:
            return None  # paused: no run on schedule, retries included
        if next_regular is not None and run_at >= next_regular:
            return None
        self._scheduler.add_job(
            STORED_ENTRY,
            DateTrigger(run_date=run_at),
            id=retry_job_id(job_id),
            name=retry_job_id(job_id),
            kwargs={"job_id": job_id, "trigger": str(Trigger.RETRY), "attempt": attempt},
            replace_existing=True,
        )
        return run_at


async def stop_scheduler(
    scheduler: AsyncIOScheduler, runner: JobRunner | None, grace_seconds: float
) -> None:
    """Graceful stop: no new runs, running jobs awaited up to the grace time, then cancelled."""
    if not scheduler.running:
        close_job_store(scheduler)  # never started: nothing else closes its connections
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
