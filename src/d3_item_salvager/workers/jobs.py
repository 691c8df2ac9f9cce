"""Jobs: what a job is (`JobSpec`), what its work is handed (`JobContext`), and a runtime's set of
them (`JobRegistry`).

A job is data plus one async function, `work(ctx)`. Everything that lists jobs (the scheduler's
stored entries, `run JOB`, the `[scheduler.jobs.<id>]` sections, `status`, the metrics, the tests)
reads the registry of the runtime at hand: the built-in jobs (builtin_jobs.py) plus whatever the
host app passes as `WorkerRuntime(config, extra_jobs=[...])`. Nothing here is process-wide.

This module stays cheap to import (no pydantic, SQLAlchemy or httpx): the CLI's `--help` reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from d3_item_salvager.errors import ConfigError, D3ItemSalvagerError

if TYPE_CHECKING:
    import logging

    from d3_item_salvager.config import AppConfig, JobConfig
    from d3_item_salvager.workers.container import WorkerContainer
    from d3_item_salvager.workers.runs import Trigger

RETRY_SUFFIX = ":retry"


class SupportsToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


# What `work` may return: its summary as a mapping, an object with `to_dict()`, or None (empty).
WorkSummary = Mapping[str, Any] | SupportsToDict | None
Work = Callable[["JobContext"], Awaitable[WorkSummary]]


class JobFailedError(D3ItemSalvagerError):
    """Raised by a job's work to end its run `failed` with a reason and, optionally, a summary.

    `transient=True` says trying again soon may succeed: a scheduled run then gets a retry run
    (within the job's `max_retries`). `TransientFetchError` from the Maxroll client counts as
    transient too; any other exception is a failure (an unexpected one is logged as a bug).
    """

    def __init__(
        self, reason: str, *, summary: WorkSummary = None, transient: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.summary = summary
        self.transient = transient


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job's work gets: the runtime's container, the run's identity, a logger and the
    options of a manual run (`runtime.run_job("scrape_guides", force_refresh=True)`)."""

    job_id: str
    run_id: str
    trigger: Trigger
    attempt: int
    container: WorkerContainer
    log: logging.Logger
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> AppConfig:
        config: AppConfig = self.container.config()
        return config


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: a stable id, its work, and the defaults its `[scheduler.jobs.<id>]` section may
    override. `needs_token`: the job calls Maxroll's search, so an enabled one needs the bearer
    token at start."""

    id: str
    work: Work
    interval_minutes: float
    timeout_minutes: float
    needs_token: bool = False

    def __post_init__(self) -> None:
        if not self.id.isidentifier() or self.id != self.id.lower():
            raise ValueError(f"job id {self.id!r}: use lower-case letters, digits and '_'")
        if self.interval_minutes <= 0 or self.timeout_minutes <= 0:
            raise ValueError(f"job {self.id!r}: interval and timeout must be positive")

    @property
    def cli_name(self) -> str:
        """The name `run JOB` shows (`scrape-guides`); the id itself is accepted too."""
        return self.id.replace("_", "-")

    def settings(self, config: AppConfig) -> JobConfig:
        """This job's `[scheduler.jobs.<id>]` section with unset values filled from the spec."""
        from d3_item_salvager.config import JobConfig  # pydantic: not needed for `--help`

        section = config.scheduler.jobs.by_id().get(self.id) or JobConfig()
        return section.model_copy(
            update={
                "interval_minutes": section.interval_minutes or self.interval_minutes,
                "timeout_minutes": section.timeout_minutes or self.timeout_minutes,
            }
        )


class JobRegistry:
    """The jobs one runtime knows, in order; immutable once built."""

    def __init__(self, specs: Iterable[JobSpec]) -> None:
        self._specs: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.id in self._specs:
                raise ValueError(f"job {spec.id!r} is defined twice")
            self._specs[spec.id] = spec

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._specs

    @property
    def ids(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> JobSpec:
        """The job named by its id or its CLI name (`scrape_guides` or `scrape-guides`)."""
        try:
            return self._specs[name.replace("-", "_")]
        except KeyError:
            raise ConfigError(f"unknown job {name!r} (known: {', '.join(self._specs)})") from None

    def settings(self, config: AppConfig) -> dict[str, JobConfig]:
        """Every job's effective settings, in registry order."""
        return {spec.id: spec.settings(config) for spec in self}

    def check_config(self, config: AppConfig) -> None:
        """Every `[scheduler.jobs.<id>]` section names a job of this registry (catches typos)."""
        unknown = [job_id for job_id in config.scheduler.jobs.by_id() if job_id not in self]
        if unknown:
            names = ", ".join(f"scheduler.jobs.{job_id}" for job_id in unknown)
            raise ConfigError(f"{names}: unknown job (known: {', '.join(self._specs)})")

    def with_jobs(self, extra: Iterable[JobSpec]) -> JobRegistry:
        """This registry plus `extra` (a new registry; this one is unchanged)."""
        return JobRegistry([*self, *extra])


def retry_job_id(job_id: str) -> str:
    """The scheduler id of a job's one-off retry run."""
    return job_id + RETRY_SUFFIX


def base_job_id(scheduler_job_id: str) -> str:
    """The job id behind a scheduler id (a retry run's id names its job)."""
    return scheduler_job_id.removesuffix(RETRY_SUFFIX)


def is_retry_job_id(scheduler_job_id: str) -> bool:
    return scheduler_job_id.endswith(RETRY_SUFFIX)
