"""Which runtime's container a task uses: the one bound to the running context.

APScheduler stores only `module:function` references and plain kwargs, so a task finds its services
at run time. Each runtime binds its own container: its scheduler submits every run in a context
bound to it, stamped with the run's `Submission` (see scheduler.RuntimeExecutor), and entering the
runtime binds it in the host's context, so
`await tasks.scrape_guides_task(trigger="manual")` inside `async with WorkerRuntime(config)` runs in
that runtime. Nothing is process-wide: two runtimes in one process never see each other's
container, and closing one leaves the other bound where it was.
"""

from __future__ import annotations

import contextvars
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

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
