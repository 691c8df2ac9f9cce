"""How a stored job reaches its runtime: the one entry point the job store keeps for every job,
the context that says which runtime runs it, and the seed's three task functions.

The job store holds only `d3_item_salvager.workers.tasks:run_stored_job` with plain kwargs
(`job_id`, and `trigger` / `attempt` for a retry run), so it never holds an object of this
process. Each run finds its services at run time in the container bound to the context it runs
in. Each runtime binds its own: its scheduler submits every run in a context bound to it, stamped
with the run's `Submission` (see scheduler.RuntimeExecutor), and entering the runtime binds it in
the host's context, so `await tasks.scrape_guides_task(trigger="manual")` inside
`async with WorkerRuntime(config)` runs in that runtime. Nothing is process-wide: two runtimes in
one process never see each other's container, and closing one leaves the other bound where it
was.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from d3_item_salvager.workers.runs import RunResult, Trigger

if TYPE_CHECKING:
    from d3_item_salvager.workers.container import WorkerContainer

_current: ContextVar[WorkerContainer | None] = ContextVar("d3is_worker_container", default=None)
_open: set[int] = set()  # ids of the containers of runtimes that are open now


@dataclass(frozen=True, slots=True)
class Submission:
    """A scheduled or retry run as the scheduler submitted it: when it was due, and in which
    lease term of its runtime (a run submitted before the lease was lost must not start)."""

    due: datetime
    term: int | None


_submission: ContextVar[Submission | None] = ContextVar("d3is_submission", default=None)


def current_container() -> WorkerContainer:
    """The container of the runtime this code runs in."""
    container = _current.get()
    if container is None:
        raise RuntimeError(
            "no open WorkerRuntime here: call tasks inside `async with WorkerRuntime(config)`, "
            "or use `await runtime.run_job(job_id)`"
        )
    return container


def bind(container: WorkerContainer) -> Token[WorkerContainer | None]:
    """Mark the container open and make it current in this context."""
    _open.add(id(container))
    return _current.set(container)


@contextmanager
def bound(container: WorkerContainer) -> Iterator[None]:
    """The container open and current in this context for the block (`bind`, then `unbind`)."""
    token = bind(container)
    try:
        yield
    finally:
        unbind(container, token)


def unbind(container: WorkerContainer, token: Token[WorkerContainer | None]) -> None:
    """Mark the container closed; if it is current here, fall back to the one bound before it
    (when that one is still open)."""
    _open.discard(id(container))
    if _current.get() is not container:
        return  # another runtime entered after this one is current here: leave it
    previous = token.old_value
    if previous is Token.MISSING or previous is None or id(previous) not in _open:
        _current.set(None)
    else:
        _current.set(previous)


def submission_context(container: WorkerContainer, submission: Submission) -> contextvars.Context:
    """A copy of the current context in which `container` is current and `submission` is the
    run about to be created (for the scheduler's executor)."""
    context = contextvars.copy_context()
    context.run(_current.set, container)
    context.run(_submission.set, submission)
    return context


def take_submission() -> Submission | None:
    """The submission this task was created for, cleared so that runs it starts by hand (and
    tasks it creates) do not inherit it."""
    submission = _submission.get()
    _submission.set(None)
    return submission


def use(container: WorkerContainer) -> Token[WorkerContainer | None]:
    """Make an open container current for a block (reset the returned token after it)."""
    return _current.set(container)


def reset(token: Token[WorkerContainer | None]) -> None:
    _current.reset(token)


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
