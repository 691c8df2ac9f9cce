"""The tasks: one generic entry point that the job store keeps for every job, and the seed's
three task functions.

The job store holds only `d3_item_salvager.workers.tasks:run_stored_job` with plain kwargs
(`job_id`, and `trigger` / `attempt` for a retry run), so it never holds an object of this
process. Each run finds its runtime in the context it runs in (see binding.py): the scheduler of
a runtime submits runs in a context bound to that runtime, and code inside
`async with WorkerRuntime(config)` runs in that one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from d3_item_salvager.workers.binding import Submission, current_container, take_submission
from d3_item_salvager.workers.runs import RunResult, Trigger

STORED_ENTRY = f"{__name__}:run_stored_job"


async def run_job(
    job_id: str,
    *,
    trigger: Trigger | str = Trigger.MANUAL,
    attempt: int = 0,
    run_id: str | None = None,
    submission: Submission | None = None,
    **options: Any,
) -> RunResult:
    """Run a job of the current runtime once, now; `options` reach its work as `ctx.options`."""
    from d3_item_salvager.container import resolve

    container = current_container()
    runner = await resolve(container.job_runner)
    spec = container.jobs().get(job_id)
    result: RunResult = await runner.run(
        spec,
        trigger=Trigger(trigger),
        attempt=attempt,
        run_id=run_id,
        options=options,
        submission=submission,
    )
    return result


async def run_stored_job(
    job_id: str, *, trigger: str = Trigger.SCHEDULED, attempt: int = 0
) -> RunResult | None:
    """What the scheduler calls for every stored job (scheduled and retry runs)."""
    submission = take_submission()
    try:
        return await run_job(job_id, trigger=trigger, attempt=attempt, submission=submission)
    except asyncio.CancelledError:
        # A stop or a lost lease: the runner recorded the run `cancelled` and logged it in one
        # line. Ending quietly keeps APScheduler from logging the cancel as a crash; nothing
        # awaits this task but the runtime's stop.
        return None


async def scrape_guides_task(
    force_refresh: bool = False,
    *,
    trigger: str = Trigger.SCHEDULED,
    attempt: int = 0,
    run_id: str | None = None,
) -> RunResult:
    """Sync the index with Maxroll in the current runtime."""
    return await run_job(
        "scrape_guides",
        trigger=trigger,
        attempt=attempt,
        run_id=run_id,
        force_refresh=force_refresh,
    )


async def refresh_cache_task(
    *, trigger: str = Trigger.SCHEDULED, attempt: int = 0, run_id: str | None = None
) -> RunResult:
    """Refresh the guide-list and item-catalog caches without writing the index."""
    return await run_job("refresh_cache", trigger=trigger, attempt=attempt, run_id=run_id)


async def cleanup_logs_task(
    *, trigger: str = Trigger.SCHEDULED, attempt: int = 0, run_id: str | None = None
) -> RunResult:
    """Delete old log files and prune old run history."""
    return await run_job("cleanup_logs", trigger=trigger, attempt=attempt, run_id=run_id)
