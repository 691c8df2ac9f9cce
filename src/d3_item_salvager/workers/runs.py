"""What a job run is and how the rest of the process hears about it.

The runner publishes one event per finished run (and per scheduled retry); metrics, the runtime's
waiters and tests subscribe. Nothing here keeps a list that grows with the number of runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)


class Outcome(StrEnum):
    """How a run ended; stored as text in `job_runs.outcome`."""

    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MISSED = "missed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


class Trigger(StrEnum):
    """What started a run; stored as text in `job_runs.trigger`."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended, as recorded in `job_runs`."""

    run_id: str
    job_id: str
    trigger: Trigger
    outcome: Outcome
    error: str | None
    summary: dict[str, Any] | None
    duration_seconds: float
    attempt: int = 0

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "trigger": str(self.trigger),
            "outcome": str(self.outcome),
            "error": self.error,
            "duration_seconds": self.duration_seconds,
            "attempt": self.attempt,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run got its job's claim and its history row: its work starts now."""

    job_id: str
    run_id: str
    trigger: Trigger


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run ended (or was recorded as missed or skipped)."""

    result: RunResult


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A one-off retry run was scheduled after a transient failure."""

    job_id: str
    attempt: int
    run_at: datetime


RunEvent = RunStarted | RunFinished | RetryScheduled
Listener = Callable[[RunEvent], None]


class RunEvents:
    """Publish/subscribe for run events; listeners are called synchronously, on the loop."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` for every event from now on; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish(self, event: RunEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not lose the run
                _log.exception("run event listener failed")


RECENT_RUNS = 100
_CLOSED = "the runtime has closed: no more runs will finish"


class RunTracker:
    """Counts finished runs per job and keeps the most recent ones, so callers can wait on them.

    Memory is bounded: a counter per job id and the last `keep` results. After `close()` the
    counts and results stay readable; a wait that is not already satisfied raises at once (no
    run can finish any more), and so do waits still pending when it closes.
    """

    def __init__(self, events: RunEvents, keep: int = RECENT_RUNS) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[RunResult] = deque(maxlen=keep)
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._unsubscribe = events.subscribe(self._on_event)
        self.closed = False

    def _on_event(self, event: RunEvent) -> None:
        if not isinstance(event, RunFinished):
            return
        self.counts[event.result.job_id] += 1
        self.recent.append(event.result)
        for done, future in self._waiters:
            if not future.done() and done():
                future.set_result(None)

    async def _wait(self, done: Callable[[], bool]) -> None:
        if done():
            return
        if self.closed:
            raise RuntimeError(_CLOSED)
        waiter = (done, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        finally:
            self._waiters.remove(waiter)

    def runs(self, job_id: str | None = None) -> list[RunResult]:
        """The most recent finished runs (at most `keep`), oldest first."""
        return [r for r in self.recent if job_id is None or r.job_id == job_id]

    async def wait_for(self, done: Callable[[list[RunResult]], bool]) -> list[RunResult]:
        """Wait until `done(recent runs)` holds (wrap it in a timeout); returns the recent runs."""
        await self._wait(lambda: done(self.runs()))
        return self.runs()

    async def wait_for_runs(self, job_id: str, count: int) -> list[RunResult]:
        """Wait until `count` runs of `job_id` have finished since the tracker started.

        Returns that job's recent runs (the last `keep` at most), oldest first.
        """
        await self._wait(lambda: self.counts[job_id] >= count)
        return self.runs(job_id)

    def close(self) -> None:
        """Stop counting; what was counted stays readable, and pending waits raise."""
        self.closed = True
        self._unsubscribe()
        for _done, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError(_CLOSED))
