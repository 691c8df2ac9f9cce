"""The executor that runs scheduled jobs in their runtime's context.

It replaces APScheduler's AsyncIOExecutor for coroutine jobs: each run is an asyncio task whose
context binds the runtime's container (so tasks resolve services from the right runtime), and a run
cancelled by a graceful stop or a lost lease ends quietly (the runner has already logged it in one
line) instead of with APScheduler's ERROR traceback.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.util import iscoroutinefunction_partial

from d3_item_salvager.workers.binding import bound_context

if TYPE_CHECKING:
    from apscheduler.job import Job

    from d3_item_salvager.workers.container import WorkerContainer


# APScheduler 3 ships no type hints, hence the ignore.
class BoundExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """Runs coroutine jobs on the loop, in a context bound to `container` (when given)."""

    def __init__(self, container: WorkerContainer | None = None) -> None:
        super().__init__()
        self._container = container

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        if not iscoroutinefunction_partial(job.func):
            super()._do_submit_job(job, run_times)
            return
        context = bound_context(self._container) if self._container is not None else None
        task = self._eventloop.create_task(self._run(job, run_times), context=context)

        def done(finished: asyncio.Task[list[JobExecutionEvent]]) -> None:
            self._pending_futures.discard(finished)
            if finished.cancelled():
                self._run_job_success(job.id, [])
            else:
                self._run_job_success(job.id, finished.result())

        task.add_done_callback(done)
        self._pending_futures.add(task)

    def submitted_runs(self) -> set[asyncio.Task[Any]]:
        """The run tasks handed to the loop and not yet done (started or not)."""
        return {task for task in self._pending_futures if isinstance(task, asyncio.Task)}

    async def _run(self, job: Job, run_times: list[datetime]) -> list[JobExecutionEvent]:
        logger = logging.getLogger(self._logger.name)
        events = []
        for run_time in run_times:
            grace = job.misfire_grace_time
            if grace is not None and datetime.now(UTC) - run_time > timedelta(seconds=grace):
                events.append(
                    JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time)
                )
                continue
            try:
                value: Any = await job.func(*job.args, **job.kwargs)
            except asyncio.CancelledError:
                logger.info('Job "%s" was cancelled', job.id)
                return events
            except Exception as exc:
                logger.exception('Job "%s" raised an exception', job.id)
                events.append(
                    JobExecutionEvent(
                        EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc
                    )
                )
            else:
                events.append(
                    JobExecutionEvent(
                        EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=value
                    )
                )
        return events
