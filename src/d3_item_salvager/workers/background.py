"""The runtime's task group: every task a runtime runs in the background, and how they end.

Two kinds of task. Services (the leadership loop, the loop-lag probe) run until the runtime
stops them. Writes (a run's history rows and claim, a lease statement; also closing the
metrics server) must finish even when whoever awaits them is cancelled: a run cancelled by a
stop still leaves its row, and a lease taken while the round that asked was cancelled is still
seen. `durable` is the one place that
shields a write from cancellation; closing the group waits for the writes, within a bound.

Not asyncio.TaskGroup or an anyio task group: both cancel every sibling, and the host's own code
inside `async with WorkerRuntime(...)`, when one task fails, and both wait without bound on exit.
An embedded runtime must do neither: a failed write is an error its caller handles, and a
database that stopped answering must not hold the host's shutdown up for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from d3_item_salvager.errors import error_text
from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)

T = TypeVar("T")

# How long closing waits for the writes still running: bounded, so a database that stopped
# answering cannot hold the shutdown up for good.
SETTLE_SECONDS = 10.0
# Beyond the busy timeout, after which every job-store statement waiting for a lock gives up
# (SQLite's busy timeout, PostgreSQL's lock_timeout): time to roll back and return its connection.
SETTLE_MARGIN_SECONDS = 5.0
WAITING_FOR_WRITES = "waiting for job-store writes still running"


def _log_unseen_failure(write: asyncio.Task[Any]) -> None:
    if not write.cancelled() and (exc := write.exception()) is not None:
        _log.error(
            "a job-store write failed after its caller was cancelled",
            extra={"error": error_text(exc)},
        )


class BackgroundTasks:
    """One runtime's background tasks: its services and the writes that must finish."""

    def __init__(self, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.settle_seconds = settle_seconds  # how long `settle` and `close` wait by default
        self._services: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Task[Any]] = set()

    def start_service(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` until `close` (or `stop_service`) cancels it; a crash is logged."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._services.add(task)
        task.add_done_callback(self._service_done)
        return task

    def _service_done(self, task: asyncio.Task[Any]) -> None:
        self._services.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error(
                "background service ended with an error",
                extra={"service": task.get_name(), "error": error_text(exc)},
            )

    async def stop_service(self, task: asyncio.Task[None]) -> None:
        """Cancel one service and wait until it has ended."""
        task.cancel()
        await asyncio.wait({task})

    async def durable(self, write: Coroutine[Any, Any, T] | asyncio.Task[T]) -> T:
        """Await `write` (or a task `write_soon` started), run in a task of its own that
        cancelling the caller does not stop: the one place a write is shielded.

        The write's own error reaches the caller; a caller cancelled meanwhile is cancelled at
        once, and the write goes on (`settle` and `close` wait for it; its failure is logged).
        """
        task = write if isinstance(write, asyncio.Task) else self.write_soon(write)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_unseen_failure)  # nobody is left to hear of a failure
            raise

    def write_soon(self, write: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start `write` without waiting for it (from synchronous code: a scheduler listener)."""
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return task

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too: whoever awaited it may have been cancelled

    @property
    def pending_writes(self) -> int:
        return len(self._writes)

    @classmethod
    def for_busy_timeout(cls, busy_timeout_seconds: float) -> BackgroundTasks:
        """A group whose close outwaits a statement waiting for a lock: a write given up before
        its statement did would leave its connection open after the engine is disposed."""
        return cls(busy_timeout_seconds + SETTLE_MARGIN_SECONDS)

    async def settle(self, limit_seconds: float | None = None) -> bool:
        """Wait until no write is running (one may start another), within `limit_seconds`; True
        when none is left. Writes still running after that are given up: cancelled (their
        threads, if in one, run on: nothing more can be done), logged, and not waited for again.
        """
        limit_seconds = self.settle_seconds if limit_seconds is None else limit_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_seconds
        if self._writes:
            _log.info(WAITING_FOR_WRITES)
        while self._writes:
            left = deadline - loop.time()
            if left <= 0:
                _log.warning(
                    "a job-store write is still running after %gs; its connection may stay open",
                    limit_seconds,
                )
                given_up, self._writes = self._writes, set()
                for task in given_up:
                    task.cancel()
                return False
            await asyncio.wait(set(self._writes), timeout=left)
        return True

    async def close(self, limit_seconds: float | None = None) -> None:
        """Stop the services, then let the writes finish within `limit_seconds` (see `settle`)."""
        services = set(self._services)
        for task in services:
            task.cancel()
        if services:
            await asyncio.wait(services)
        await self.settle(limit_seconds)
