"""The scheduled tasks: thin async functions that resolve a service, call it, and report.

The job store keeps only `d3_item_salvager.workers.tasks:<name>` and plain kwargs; services come
from the container when the task runs (dependency-injector wiring), never when it is scheduled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from dependency_injector.wiring import Provide, inject

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.services.log_housekeeping import LogHousekeepingService
from d3_item_salvager.workers.job_runner import JobRunner, RunResult, WorkResult
from d3_item_salvager.workers.run_history import utc_now

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


@inject
async def scrape_guides_task(
    force_refresh: bool = False,
    *,
    trigger: str = "scheduled",
    attempt: int = 0,
    run_id: str | None = None,
    runner: JobRunner = Provide[Container.job_runner],
    service: BuildGuideService = Provide[Container.build_guide_service],
) -> RunResult:
    """Sync the index with Maxroll (BuildGuideService.prepare_database)."""

    async def work() -> WorkResult:
        summary = await service.prepare_database(force_refresh, progress=_ProgressLog())
        error = None
        if summary.failures:
            first = summary.failures[0]
            error = f"{summary.guides_failed} guide(s) failed; first: {first.url}: {first.error}"
        return WorkResult(summary.to_dict(), error, summary.has_transient_failures)

    return await runner.run("scrape_guides", work, trigger=trigger, attempt=attempt, run_id=run_id)


@inject
async def refresh_cache_task(
    *,
    trigger: str = "scheduled",
    attempt: int = 0,
    run_id: str | None = None,
    runner: JobRunner = Provide[Container.job_runner],
    service: CacheRefreshService = Provide[Container.cache_refresh_service],
) -> RunResult:
    """Refresh the guide-list and item-catalog caches without writing the index."""

    async def work() -> WorkResult:
        return WorkResult((await service.refresh()).to_dict())

    return await runner.run("refresh_cache", work, trigger=trigger, attempt=attempt, run_id=run_id)


@inject
async def cleanup_logs_task(
    *,
    trigger: str = "scheduled",
    attempt: int = 0,
    run_id: str | None = None,
    runner: JobRunner = Provide[Container.job_runner],
    service: LogHousekeepingService = Provide[Container.log_housekeeping_service],
    config: AppConfig = Provide[Container.config],
) -> RunResult:
    """Delete old log files and prune old run history."""

    async def work() -> WorkResult:
        summary = (await service.cleanup()).to_dict()
        retention = timedelta(days=config.scheduler.run_history_retention_days)
        summary["history_rows_pruned"] = await runner.history.prune(utc_now() - retention)
        return WorkResult(summary)

    return await runner.run("cleanup_logs", work, trigger=trigger, attempt=attempt, run_id=run_id)


TASKS: dict[str, Callable[..., Awaitable[RunResult]]] = {
    "scrape_guides": scrape_guides_task,
    "refresh_cache": refresh_cache_task,
    "cleanup_logs": cleanup_logs_task,
}
