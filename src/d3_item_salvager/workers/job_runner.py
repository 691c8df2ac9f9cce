"""The wrapper around every job run: run id, log lines, timeout, history row, error class, retry.

APScheduler 3 has no timeouts and no retries, so they live here. Every task goes through
`JobRunner.run`, whether the scheduler, a retry or an operator (`run JOB`) started it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio

from d3_item_salvager.config import AppConfig, JobConfig
from d3_item_salvager.errors import D3ItemSalvagerError, TransientFetchError
from d3_item_salvager.logging_setup import get_logger, log_context
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.run_history import RunHistory, utc_now

_log = get_logger(__name__)

RETRY_SUFFIX = ":retry"


@dataclass(frozen=True, slots=True)
class WorkResult:
    """What a job's work reports: its summary, and a failure it ended with (if any)."""

    summary: dict[str, Any]
    error: str | None = None
    transient: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended, as recorded in `job_runs`."""

    run_id: str
    job_id: str
    trigger: str
    outcome: str
    error: str | None
    summary: dict[str, Any] | None
    duration_seconds: float
    attempt: int = 0

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "error": self.error,
            "duration_seconds": self.duration_seconds,
            "attempt": self.attempt,
            "summary": self.summary,
        }


class RetryPlanner(Protocol):
    """Schedules a one-off retry run (the scheduler implements it)."""

    def schedule_retry(self, job_id: str, attempt: int, delay_seconds: float) -> datetime | None:
        """Schedule it and return when, or None when it would not end before the next run."""


@dataclass
class _Waiters:
    finished: list[RunResult] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class JobRunner:
    """Runs job bodies with the same bookkeeping; one instance per process."""

    def __init__(
        self, history: RunHistory, config: AppConfig, metrics: WorkerMetrics | None = None
    ) -> None:
        self.history = history
        self._config = config
        self._metrics = metrics
        self.retry_planner: RetryPlanner | None = None
        self._submitted: dict[str, deque[datetime]] = defaultdict(deque)
        self._busy: set[str] = set()
        self._running: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._waiters = _Waiters()

    # Hooks for the scheduler's event listeners (called on the loop, synchronously)

    def note_submitted(self, job_id: str, run_times: list[datetime]) -> None:
        """Remember when a run was due, for the run that is about to start."""
        if run_times:
            self._submitted[job_id].append(run_times[-1])

    def record_not_run(self, job_id: str, trigger: str, outcome: str, due: datetime | None) -> None:
        """Record a missed or skipped run (from a sync listener: the write runs in a task)."""
        _log.warning("run %s", outcome, extra={"job_id": job_id, "scheduled_for": str(due)})
        task = asyncio.get_running_loop().create_task(
            self._record_not_run(job_id, trigger, outcome, due)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record_not_run(
        self, job_id: str, trigger: str, outcome: str, due: datetime | None
    ) -> None:
        run_id = uuid.uuid4().hex[:12]
        await self.history.record(run_id, job_id, trigger, outcome, due)
        await self._announce(RunResult(run_id, job_id, trigger, outcome, None, None, 0.0))

    # Running

    def job_config(self, job_id: str) -> JobConfig:
        return self._config.scheduler.jobs.by_id()[job_id]

    async def run(
        self,
        job_id: str,
        work: Callable[[], Awaitable[WorkResult]],
        *,
        trigger: str = "scheduled",
        attempt: int = 0,
    ) -> RunResult:
        """Run `work` once with a run id, timeout, log lines, history row and error handling."""
        run_id = uuid.uuid4().hex[:12]
        due = self._pop_due(job_id) if trigger != "manual" else None
        if job_id in self._busy:
            # Another run of the same job (e.g. a retry meeting the regular run) is in progress.
            await self.history.record(run_id, job_id, trigger, "skipped", due, "already running")
            result = RunResult(run_id, job_id, trigger, "skipped", "already running", None, 0.0)
            await self._announce(result)
            return result
        self._busy.add(job_id)
        current = asyncio.current_task()
        if current is not None:
            self._running.add(current)
        try:
            with log_context(job_id=job_id, run_id=run_id):
                return await self._run_recorded(run_id, job_id, work, trigger, attempt, due)
        finally:
            self._busy.discard(job_id)
            if current is not None:
                self._running.discard(current)

    async def _run_recorded(
        self,
        run_id: str,
        job_id: str,
        work: Callable[[], Awaitable[WorkResult]],
        trigger: str,
        attempt: int,
        due: datetime | None,
    ) -> RunResult:
        job = self.job_config(job_id)
        _log.info("run started", extra={"trigger": trigger, "attempt": attempt})
        # Shielded: a stop arriving while the row is being written (in a thread that finishes
        # anyway) must still record the run cancelled, not leave it "running" for ever.
        recording = asyncio.ensure_future(self.history.start(run_id, job_id, trigger, due, attempt))
        try:
            started = await asyncio.shield(recording)
        except asyncio.CancelledError:
            started = await recording
            await self._finish(
                RunResult(
                    run_id, job_id, trigger, "cancelled", "cancelled while stopping", None, 0.0,
                    attempt,
                )
            )  # fmt: skip
            raise
        outcome, error, summary, transient = "failed", None, None, False
        try:
            with anyio.fail_after(job.timeout_minutes * 60):
                result = await work()
            summary, error, transient = result.summary, result.error, result.transient
            outcome = "success" if error is None else "failed"
        except TimeoutError:
            outcome, transient = "timeout", True
            error = f"the run took longer than its {job.timeout_minutes:g}-minute timeout"
        except TransientFetchError as exc:
            error, transient = str(exc), True
        except D3ItemSalvagerError as exc:
            error = str(exc)
        except anyio.get_cancelled_exc_class():
            outcome, error = "cancelled", "cancelled while stopping"
            raise
        except Exception as exc:  # noqa: BLE001 - logged with its traceback below
            # An unexpected error is a bug: keep the traceback in the log, and the process alive.
            _log.exception("run crashed")
            error = f"{type(exc).__name__}: {exc}"
        finally:
            duration = round((utc_now() - started).total_seconds(), 3)
            result_record = RunResult(
                run_id, job_id, trigger, outcome, error, summary, duration, attempt
            )
            await self._finish(result_record)
        if transient and trigger != "manual":
            self._plan_retry(job_id, job, attempt)
        return result_record

    async def _finish(self, result: RunResult) -> None:
        """Write the outcome even while the run is being cancelled.

        The write runs in its own task behind asyncio.shield: a cancelled run (even one
        cancelled twice) still leaves its row, and `stop` waits for the write.
        """
        self._log_outcome(result)

        async def write() -> None:
            await self.history.finish(result.run_id, result.outcome, result.error, result.summary)
            await self._announce(result)

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    def _log_outcome(self, result: RunResult) -> None:
        figures = {
            key: value
            for key, value in (result.summary or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        extra = {"outcome": result.outcome, "duration_seconds": result.duration_seconds, **figures}
        if result.outcome == "success":
            _log.info("run finished", extra=extra)
        else:
            _log.error("run %s: %s", result.outcome, result.error, extra=extra)

    def _plan_retry(self, job_id: str, job: JobConfig, attempt: int) -> None:
        if self.retry_planner is None or attempt >= job.max_retries:
            return
        delay = job.retry_backoff_seconds * (2**attempt)
        when = self.retry_planner.schedule_retry(job_id, attempt + 1, delay)
        if when is None:
            _log.warning("no retry: it would not end before the next regular run")
        else:
            _log.info(
                "retry scheduled", extra={"retry_at": when.isoformat(), "attempt": attempt + 1}
            )

    def _pop_due(self, job_id: str) -> datetime | None:
        queue = self._submitted.get(job_id)
        return queue.popleft() if queue else None

    # Waiting (shutdown and tests)

    async def _announce(self, result: RunResult) -> None:
        if self._metrics is not None:
            self._metrics.run_finished(result, time.time())
        async with self._waiters.changed:
            self._waiters.finished.append(result)
            self._waiters.changed.notify_all()

    def finished_runs(self, job_id: str | None = None) -> list[RunResult]:
        """Runs this process finished (or recorded as not run), oldest first."""
        return [r for r in self._waiters.finished if job_id is None or r.job_id == job_id]

    async def wait_for(self, done: Callable[[list[RunResult]], bool]) -> list[RunResult]:
        """Wait until `done(finished runs)` holds (wrap in a timeout); returns the runs."""
        async with self._waiters.changed:
            await self._waiters.changed.wait_for(lambda: done(self.finished_runs()))
        return self.finished_runs()

    async def wait_for_runs(self, job_id: str, count: int) -> list[RunResult]:
        """Wait until this process has finished `count` runs of `job_id` (wrap in a timeout)."""
        await self.wait_for(lambda runs: sum(r.job_id == job_id for r in runs) >= count)
        return self.finished_runs(job_id)

    @property
    def running(self) -> int:
        return len(self._running)

    async def stop(self, grace_seconds: float) -> None:
        """Wait up to `grace_seconds` for running jobs, then cancel them (recorded `cancelled`)."""
        running = set(self._running)
        if running:
            _log.info(
                "waiting for running jobs", extra={"jobs": len(running), "grace": grace_seconds}
            )
            _done, pending = await asyncio.wait(running, timeout=grace_seconds)
            for task in pending:
                if not task.cancelling():
                    task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        if self._background:
            await asyncio.wait(set(self._background), timeout=10)


def retry_job_id(job_id: str) -> str:
    return job_id + RETRY_SUFFIX


def base_job_id(scheduler_job_id: str) -> str:
    return scheduler_job_id.removesuffix(RETRY_SUFFIX)
