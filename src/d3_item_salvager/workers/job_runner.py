"""The wrapper around every job run: run id, log lines, timeout, history row, error class, retry.

APScheduler 3 has no timeouts and no retries, so they live here. Every task goes through
`JobRunner.run`, whether the scheduler, a retry or an operator (`run JOB`) started it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from d3_item_salvager.config import AppConfig, JobConfig
from d3_item_salvager.errors import (
    D3ItemSalvagerError,
    JobRunningElsewhereError,
    TransientFetchError,
    error_text,
)
from d3_item_salvager.logging_setup import get_logger, log_context
from d3_item_salvager.workers.background import BackgroundTasks
from d3_item_salvager.workers.job_store import CLAIM_MARGIN_SECONDS, Claim, RunHistory, utc_now
from d3_item_salvager.workers.jobs import (
    JobContext,
    JobFailedError,
    JobRegistry,
    JobSpec,
    WorkSummary,
)
from d3_item_salvager.workers.runs import (
    Outcome,
    RetryScheduled,
    RunEvents,
    RunFinished,
    RunResult,
    RunStarted,
    Trigger,
)
from d3_item_salvager.workers.tasks import Submission

if TYPE_CHECKING:
    from d3_item_salvager.workers.container import WorkerContainer

_log = get_logger(__name__)

CANCELLED_WHILE_STOPPING = "cancelled while stopping"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _WorkOutcome:
    """What a job's work ended with: its summary, and a failure (if any)."""

    summary: dict[str, Any] | None
    error: str | None = None
    transient: bool = False


def _summary_dict(value: WorkSummary) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return value.to_dict()


async def _perform(spec: JobSpec, ctx: JobContext) -> _WorkOutcome:
    """Call the job's work and read what it returned or raised as the run's outcome."""
    try:
        value = await spec.work(ctx)
    except JobFailedError as exc:
        return _WorkOutcome(_summary_dict(exc.summary) or None, exc.reason, exc.transient)
    # A result may say some of its problems were transient (a sync with guides that timed out):
    # the run succeeded, and a retry run still follows.
    transient = bool(getattr(value, "has_transient_failures", False))
    return _WorkOutcome(_summary_dict(value), None, transient)


class RetryPlanner(Protocol):
    """Schedules a one-off retry run (the scheduler implements it)."""

    def schedule_retry(self, job_id: str, attempt: int, delay_seconds: float) -> datetime | None:
        """Schedule it and return when, or None when it would not end before the next run."""


class JobRunner:
    """Runs job bodies with the same bookkeeping; one instance per runtime.

    It publishes a `RunStarted` event when a run's work starts, a `RunFinished` event for every
    run it finishes or records as not run, and a
    `RetryScheduled` event for every retry it schedules; it keeps no list of finished runs.
    """

    def __init__(
        self,
        history: RunHistory,
        config: AppConfig,
        events: RunEvents,
        jobs: JobRegistry,
        container: WorkerContainer,
        background: BackgroundTasks,
    ) -> None:
        self.history = history
        self.background = background
        self.container = container
        self.events = events
        self.jobs = jobs
        self._config = config
        # Plans retry runs on this runtime's scheduler (set with it), while leading only.
        self.retry_planner: RetryPlanner | None = None
        self._stopping = False  # set by `stop`: a process on its way out plans nothing new
        # The lease term this runtime leads in (leadership.py counts them through `lead`); None
        # while nothing leads here (one-off use): then every run may start.
        self.term: int | None = None
        self._leading = False
        self._standby_reason = ""
        self._running: dict[asyncio.Task[Any], Trigger] = {}  # task running a job -> trigger
        self._cancel_reasons: dict[asyncio.Task[Any], str] = {}

    # Leadership and the scheduler's event listeners call these on the loop, synchronously.

    def lead(self) -> None:
        """This runtime holds the lease from now on (a new term): scheduled and retry runs
        submitted from now on may start."""
        self.term = (self.term or 0) + 1
        self._leading = True

    def stand_by(self, reason: str) -> int:
        """This runtime does not hold the lease (any more): cancel its running scheduled and
        retry runs with `reason` (as cancel_scheduled_runs), and record one that starts later
        `cancelled` with `reason` instead of running it; also one submitted while leading that
        had not started yet, even if this runtime leads again by then. Manual runs go on."""
        if self.term is None:
            self.term = 0
        self._leading = False
        self._standby_reason = reason
        return self.cancel_scheduled_runs(reason)

    def _why_not_start(self, submission: Submission | None) -> str | None:
        """Why a scheduled or retry run must not start now, or None when it may: only while
        leading, in the term it was submitted in (unknown for a run started by hand)."""
        if self.term is None:
            return None
        if not self._leading or (submission is not None and submission.term != self.term):
            return self._standby_reason
        return None

    def record_not_run(
        self, job_id: str, trigger: Trigger, outcome: Outcome, due: datetime | None
    ) -> None:
        """Record a missed or skipped run (from a sync listener: the write runs in a task)."""
        _log.warning("run %s", outcome, extra={"job_id": job_id, "scheduled_for": str(due)})
        self.background.write_soon(self._record_not_run(job_id, trigger, outcome, due))

    async def _record_not_run(
        self,
        job_id: str,
        trigger: Trigger,
        outcome: Outcome,
        due: datetime | None,
        error: str | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        run_id = run_id or uuid.uuid4().hex[:12]
        await self.history.record(run_id, job_id, trigger, outcome, due, error)
        result = RunResult(run_id, job_id, trigger, outcome, error, None, 0.0)
        self.events.publish(RunFinished(result))
        return result

    async def _not_started(
        self,
        job_id: str,
        trigger: Trigger,
        outcome: Outcome,
        due: datetime | None,
        error: str,
        run_id: str,
    ) -> RunResult:
        """Record a run that does not start (one finished row, RunFinished published)."""
        return await self.background.durable(
            self._record_not_run(job_id, trigger, outcome, due, error, run_id)
        )

    # Running

    async def run(
        self,
        spec: JobSpec,
        *,
        trigger: Trigger | str = Trigger.SCHEDULED,
        attempt: int = 0,
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        submission: Submission | None = None,
    ) -> RunResult:
        """Run the job's work once with a run id, timeout, log lines, history row and error
        handling; `options` reach the work as `ctx.options`.

        `run_id` lets a caller name the run before it starts (a host app answering at once);
        `submission` says when a scheduled or retry run was due, and in which lease term.
        A run is two job-store transactions: `begin` claims its job and writes the start row,
        `end` writes the outcome and gives the claim back. While a run of the job holds the
        claim in another process (or runtime), a scheduled or retry run is recorded `skipped`
        and a manual run raises JobRunningElsewhereError (recorded `skipped` too). Before that,
        a scheduled or retry run starting while this runtime does not lead, or submitted before
        it last lost the lease, is recorded `cancelled` (see `stand_by`).
        """
        trigger = Trigger(trigger)
        job_id = spec.id
        run_id = run_id or uuid.uuid4().hex[:12]
        manual = trigger is Trigger.MANUAL
        due = submission.due if submission is not None and not manual else None
        if not manual and (why := self._why_not_start(submission)) is not None:
            # Submitted before the lease was lost (or started by hand as `scheduled` on a
            # standby): the leader runs the job, this runtime does not start it.
            _log.warning("run not started: %s", why, extra={"job_id": job_id, "run_id": run_id})
            return await self._not_started(job_id, trigger, Outcome.CANCELLED, due, why, run_id)
        current = asyncio.current_task()
        if current is not None:
            self._running[current] = trigger
        try:
            with log_context(job_id=job_id, run_id=run_id):
                job = spec.settings(self._config)
                not_started = await self._begin(run_id, job_id, trigger, attempt, due, job)
                if not_started is not None:
                    return not_started
                result, transient = await self._run_started(
                    run_id, spec, dict(options or {}), trigger, attempt, job
                )
        finally:
            if current is not None:
                self._running.pop(current, None)
                self._cancel_reasons.pop(current, None)
        # Only now, with the claim given back: a retry due at
        # once (a short backoff) would otherwise find this run still going and be skipped.
        if transient and trigger is not Trigger.MANUAL:
            with log_context(job_id=job_id, run_id=run_id):
                self._plan_retry(job_id, attempt)
        return result

    def _cancel_reason(self) -> str:
        current = asyncio.current_task()
        reason = self._cancel_reasons.get(current) if current else None
        return reason or CANCELLED_WHILE_STOPPING

    async def _begin(
        self,
        run_id: str,
        job_id: str,
        trigger: Trigger,
        attempt: int,
        due: datetime | None,
        job: JobConfig,
    ) -> RunResult | None:
        """Claim the job and write the start row (one transaction): None when the run starts,
        else how it ended."""
        assert job.timeout_minutes is not None  # filled from the spec
        claim_seconds = job.timeout_minutes * 60 + CLAIM_MARGIN_SECONDS
        begin = self.background.write_soon(
            self.history.begin(run_id, job_id, trigger, due, attempt, claim_seconds)
        )
        try:
            held = await self.background.durable(begin)
        except anyio.get_cancelled_exc_class():
            error = self._cancel_reason()
            _log.warning("run cancelled before it started: %s", error)
            # All in one task: an anyio cancel scope cancels every later await of this one.
            await self.background.durable(
                self._cancelled_while_beginning(begin, job_id, trigger, attempt, due, error, run_id)
            )
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the transaction
            # Without its claim and start row the run does not start: it could run twice
            # across processes, or not be accounted for. Nothing of it was written.
            error = (
                f"the run history could not be written (job claim and start row): {error_text(exc)}"
            )
            failed = RunResult(run_id, job_id, trigger, Outcome.FAILED, error, None, 0.0, attempt)
            self._report(failed)
            return failed
        if held is None:
            return None
        # Another run holds the job (in another process, or this runtime's own: a retry meeting
        # the regular run): the claim is the one answer to "is this job running anywhere".
        error = f"running now in {held.holder}"
        _log.warning("run skipped: %s", error)
        skipped = await self._not_started(job_id, trigger, Outcome.SKIPPED, due, error, run_id)
        if trigger is Trigger.MANUAL:
            # Recorded in the shared history all the same (a host app's other workers answer
            # for this run id), and raised: whoever asked for it must hear it did not run.
            raise JobRunningElsewhereError(job_id, held.holder, held.run_id)
        return skipped

    async def _cancelled_while_beginning(
        self,
        begin: asyncio.Task[Claim | None],
        job_id: str,
        trigger: Trigger,
        attempt: int,
        due: datetime | None,
        error: str,
        run_id: str,
    ) -> None:
        """Once `begin` is done: end a run it started (its claim given back), else record the
        run `cancelled`."""
        await asyncio.wait({begin})
        if not begin.cancelled() and begin.exception() is None and begin.result() is None:
            cancelled = RunResult(run_id, job_id, trigger, Outcome.CANCELLED, error, None, 0.0)
            await self._end(replace(cancelled, attempt=attempt))
            return
        try:
            await self._record_not_run(job_id, trigger, Outcome.CANCELLED, due, error, run_id)
        except Exception as exc:  # noqa: BLE001 - any failure of the history write
            _log.error("could not record the cancelled run", extra={"error": error_text(exc)})

    async def _run_started(
        self,
        run_id: str,
        spec: JobSpec,
        options: dict[str, Any],
        trigger: Trigger,
        attempt: int,
        job: JobConfig,
    ) -> tuple[RunResult, bool]:
        """Do the work of a run that began, then end it, whatever happens meanwhile."""
        job_id = spec.id
        assert job.timeout_minutes is not None  # filled from the spec
        log = get_logger(f"d3_item_salvager.jobs.{job_id}")
        ctx = JobContext(job_id, run_id, trigger, attempt, self.container, log, options)
        _log.info("run started", extra={"trigger": str(trigger), "attempt": attempt})
        started = utc_now()
        outcome, error, summary, transient = Outcome.FAILED, None, None, False
        try:
            self.events.publish(RunStarted(job_id, run_id, trigger))
            with anyio.fail_after(job.timeout_minutes * 60):
                result = await _perform(spec, ctx)
            summary, error, transient = result.summary, result.error, result.transient
            outcome = Outcome.SUCCESS if error is None else Outcome.FAILED
        except TimeoutError:
            outcome, transient = Outcome.TIMEOUT, True
            error = f"the run took longer than its {job.timeout_minutes:g}-minute timeout"
        except TransientFetchError as exc:
            error, transient = str(exc), True
        except D3ItemSalvagerError as exc:
            error = str(exc)
        except anyio.get_cancelled_exc_class():
            outcome, error = Outcome.CANCELLED, self._cancel_reason()
            raise
        except Exception as exc:  # noqa: BLE001 - logged with its traceback below
            # An unexpected error is a bug: keep the traceback in the log, and the process alive.
            _log.exception("run crashed")
            error = f"{type(exc).__name__}: {error_text(exc)}"
        finally:
            duration = round((utc_now() - started).total_seconds(), 3)
            ended = RunResult(run_id, job_id, trigger, outcome, error, summary, duration, attempt)
            ended = await self.background.durable(self._end(ended))
        return ended, transient

    async def _end(self, result: RunResult) -> RunResult:
        """Write the outcome and give the claim back (one transaction); returns the run as
        reported. When the history cannot be written, the run is reported failed with that
        error (never a silent success), its row stays open until it is marked abandoned, and
        the claim is given back on its own."""
        reported = result
        try:
            if not await self.history.end(
                result.run_id, result.job_id, result.outcome, result.error, result.summary
            ):
                _log.warning("the job's claim was taken over before the run ended")
        except Exception as exc:  # noqa: BLE001 - any failure of the transaction
            _log.error(
                "could not record the run's outcome; its job_runs row stays open until "
                "a scheduler marks it abandoned",
                extra={"error": error_text(exc)},
            )
            reported = replace(
                result,
                outcome=Outcome.FAILED,
                error=f"the run history could not be written: {error_text(exc)}"
                + (f" (the run itself: {result.outcome}; {result.error})"),
            )
            try:
                await self.history.release(result.job_id, result.run_id)
            except Exception as again:  # noqa: BLE001 - any failure of the transaction
                _log.error(
                    "could not release the job's claim; another process takes it over once "
                    "this one has ended, or when it expires",
                    extra={"error": error_text(again)},
                )
        self._report(reported)
        return reported

    def _report(self, result: RunResult) -> None:
        self._log_outcome(result)
        self.events.publish(RunFinished(result))

    def _log_outcome(self, result: RunResult) -> None:
        figures = {
            key: value
            for key, value in (result.summary or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        extra = {
            "outcome": str(result.outcome),
            "duration_seconds": result.duration_seconds,
            **figures,
        }
        if result.outcome is Outcome.SUCCESS:
            _log.info("run finished", extra=extra)
        elif result.outcome is Outcome.CANCELLED:
            # Cancelling is the stop (or the lost lease) working as designed: one line, no alarm.
            _log.warning("run cancelled: %s", result.error, extra=extra)
        else:
            _log.error("run %s: %s", result.outcome, result.error, extra=extra)

    def _plan_retry(self, job_id: str, attempt: int) -> None:
        job = self.jobs.get(job_id).settings(self._config)
        if self._stopping:
            _log.warning("no retry: this process is stopping; the job runs at its next time")
            return
        if self.retry_planner is None or not self._leading or attempt >= job.max_retries:
            # Retries belong to the leader, as scheduled runs do.
            return
        delay = job.retry_backoff_seconds * (2**attempt)
        when = self.retry_planner.schedule_retry(job_id, attempt + 1, delay)
        if when is None:
            _log.warning(
                "no retry: the job is paused, or the retry would not start before its next run"
            )
            return
        _log.info("retry scheduled", extra={"retry_at": when.isoformat(), "attempt": attempt + 1})
        self.events.publish(RetryScheduled(job_id, attempt + 1, when))

    # Stopping

    @property
    def running(self) -> int:
        return len(self._running)

    def cancel_scheduled_runs(self, reason: str) -> int:
        """Cancel every running scheduled or retry run now, recorded `cancelled` with `reason`.

        Manual runs belong to whoever started them, not to the lease holder: they keep going.
        """
        tasks = [task for task, trigger in self._running.items() if trigger is not Trigger.MANUAL]
        for task in tasks:
            self._cancel_reasons.setdefault(task, reason)
            task.cancel()
        return len(tasks)

    async def stop(self, grace_seconds: float) -> None:
        """Wait up to `grace_seconds` for running jobs, then cancel them (recorded `cancelled`).

        Call it once nothing submits runs any more (the scheduler paused).
        """
        self._stopping = True
        # A run the scheduler submitted just before has its task created but not started: one
        # pass of the loop lets it reach `run` (which registers it before its first await), so
        # it is waited for too instead of claiming its job after the stop.
        await asyncio.sleep(0)
        running = set(self._running)
        if running:
            _log.info(
                "waiting for running jobs", extra={"jobs": len(running), "grace": grace_seconds}
            )
            try:
                _done, pending = await asyncio.wait(running, timeout=grace_seconds)
            except asyncio.CancelledError:
                # Stopped again meanwhile: cut the runs short now rather than leave them going,
                # so each still records its end (the runtime's task group waits for that).
                for task in running:
                    if not task.cancelling():
                        task.cancel()
                raise
            for task in pending:
                if not task.cancelling():
                    task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
