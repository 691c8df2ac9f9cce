"""The scheduled tasks: thin async functions that resolve a service, call it, and report.

The job store keeps only `d3_item_salvager.workers.tasks:<name>` and plain kwargs; services come
from the container of the runtime the task runs in (see binding.py) when it runs, never when it is
scheduled, and inside the run: a run stopped while its service is being created is still
recorded `cancelled`, and a service that cannot be created fails the run. Each task is registered
in jobs.py.
"""

from __future__ import annotations

from datetime import timedelta

from d3_item_salvager.container import resolve
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.services.log_housekeeping import LogHousekeepingService
from d3_item_salvager.workers.binding import current_container
from d3_item_salvager.workers.job_runner import JobRunner, WorkResult
from d3_item_salvager.workers.run_history import utc_now
from d3_item_salvager.workers.runs import RunResult, Trigger

_log = get_logger(__name__)


class _ProgressLog:
    """Logs 'guides done of total' about every tenth of the way, for long runs."""

    def __init__(self) -> None:
        self._last_step = -1

    def __call__(self, done: int, total: int) -> None:
        step = done * 10 // max(total, 1)
        if step != self._last_step or done == total:
            self._last_step = step
            _log.info("progress: %d/%d guides", done, total, extra={"done": done, "total": total})


async def scrape_guides_task(
    force_refresh: bool = False,
    *,
    trigger: str = Trigger.SCHEDULED,
    attempt: int = 0,
    run_id: str | None = None,
) -> RunResult:
    """Sync the index with Maxroll (BuildGuideService.prepare_database)."""
    container = current_container()
    runner: JobRunner = await resolve(container.job_runner)

    async def work() -> WorkResult:
        service: BuildGuideService = await resolve(container.build_guide_service)
        summary = await service.prepare_database(force_refresh, progress=_ProgressLog())
        # The outcome policy lives with the summary (services/sync_summary.py).
        error = summary.failure_reason()
        return WorkResult(summary.to_dict(), error, summary.has_transient_failures)

    return await runner.run("scrape_guides", work, trigger=trigger, attempt=attempt, run_id=run_id)


async def refresh_cache_task(
    *, trigger: str = Trigger.SCHEDULED, attempt: int = 0, run_id: str | None = None
) -> RunResult:
    """Refresh the guide-list and item-catalog caches without writing the index."""
    container = current_container()
    runner: JobRunner = await resolve(container.job_runner)

    async def work() -> WorkResult:
        service: CacheRefreshService = await resolve(container.cache_refresh_service)
        return WorkResult((await service.refresh()).to_dict())

    return await runner.run("refresh_cache", work, trigger=trigger, attempt=attempt, run_id=run_id)


async def cleanup_logs_task(
    *, trigger: str = Trigger.SCHEDULED, attempt: int = 0, run_id: str | None = None
) -> RunResult:
    """Delete old log files and prune old run history."""
    container = current_container()
    runner: JobRunner = await resolve(container.job_runner)
    config = container.config()

    async def work() -> WorkResult:
        service: LogHousekeepingService = await resolve(container.log_housekeeping_service)
        summary = (await service.cleanup()).to_dict()
        retention = timedelta(days=config.scheduler.run_history_retention_days)
        summary["history_rows_pruned"] = await runner.history.prune(utc_now() - retention)
        return WorkResult(summary)

    return await runner.run("cleanup_logs", work, trigger=trigger, attempt=attempt, run_id=run_id)
