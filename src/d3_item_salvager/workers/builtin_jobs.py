"""The three built-in jobs: sync the index, refresh the caches, clean up logs and history.

Each is one `JobSpec` and one `work(ctx)` function that resolves its service from the runtime's
container when it runs (never when it is scheduled: a run stopped while its service is being
created is still recorded `cancelled`, and a service that cannot be created fails the run).
Services are imported inside the work functions so the CLI's `--help` does not load them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from d3_item_salvager.workers.jobs import JobContext, JobFailedError, JobRegistry, JobSpec

if TYPE_CHECKING:
    import logging


class _ProgressLog:
    """Logs 'guides done of total' about every tenth of the way, for long runs."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._last_step = -1

    def __call__(self, done: int, total: int) -> None:
        step = done * 10 // max(total, 1)
        if step != self._last_step or done == total:
            self._last_step = step
            self._log.info(
                "progress: %d/%d guides", done, total, extra={"done": done, "total": total}
            )


async def scrape_guides(ctx: JobContext) -> Any:
    """Sync the index with Maxroll (BuildGuideService.prepare_database)."""
    from d3_item_salvager.container import resolve

    service = await resolve(ctx.container.build_guide_service)
    force_refresh = bool(ctx.options.get("force_refresh", False))
    summary = await service.prepare_database(force_refresh, progress=_ProgressLog(ctx.log))
    # The outcome policy lives with the summary (services/sync_summary.py). A success whose
    # problems include transient ones still asks for a retry run (has_transient_failures).
    if (reason := summary.failure_reason()) is not None:
        raise JobFailedError(reason, summary=summary, transient=summary.has_transient_failures)
    return summary


async def refresh_cache(ctx: JobContext) -> Any:
    """Refresh the guide-list and item-catalog caches without writing the index."""
    from d3_item_salvager.container import resolve

    service = await resolve(ctx.container.cache_refresh_service)
    return await service.refresh()


async def cleanup_logs(ctx: JobContext) -> dict[str, Any]:
    """Delete old log files and prune old run history."""
    from d3_item_salvager.container import resolve
    from d3_item_salvager.workers.job_store import utc_now

    service = await resolve(ctx.container.log_housekeeping_service)
    history = await resolve(ctx.container.run_history)
    summary: dict[str, Any] = (await service.cleanup()).to_dict()
    retention = timedelta(days=ctx.config.scheduler.run_history_retention_days)
    summary["history_rows_pruned"] = await history.prune(utc_now() - retention)
    return summary


BUILTIN_JOBS = JobRegistry(
    [
        JobSpec(
            "scrape_guides",
            scrape_guides,
            interval_minutes=360,
            timeout_minutes=120,
            needs_token=True,
        ),
        JobSpec(
            "refresh_cache",
            refresh_cache,
            interval_minutes=60,
            timeout_minutes=30,
            needs_token=True,
        ),
        JobSpec("cleanup_logs", cleanup_logs, interval_minutes=1440, timeout_minutes=10),
    ]
)
