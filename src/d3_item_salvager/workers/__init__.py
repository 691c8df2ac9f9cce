"""The background-jobs application: tasks, scheduler, runtime and CLI.

`WorkerRuntime` is imported on first use, so `python -m d3_item_salvager.workers --help` does not
pay for SQLAlchemy, httpx and APScheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from d3_item_salvager.workers.jobs import JobContext, JobFailedError, JobSpec

if TYPE_CHECKING:
    from d3_item_salvager.workers.runtime import WorkerRuntime

__all__ = ["JobContext", "JobFailedError", "JobSpec", "WorkerRuntime"]


def __getattr__(name: str) -> Any:
    if name == "WorkerRuntime":
        from d3_item_salvager.workers.runtime import WorkerRuntime

        return WorkerRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
