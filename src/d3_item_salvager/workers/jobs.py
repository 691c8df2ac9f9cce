"""The job registry: the one list of jobs that everything else derives from.

The scheduler's stored references, the CLI's `run JOB` choices, the `[scheduler.jobs.<id>]` config
sections, `status`, the metrics labels and the tests all read `JOBS`. Adding a job is its service,
its task function and one `register_job(JobSpec(...))` call (see the README, "Adding a job").
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from d3_item_salvager.errors import ConfigError

if TYPE_CHECKING:
    from d3_item_salvager.config import AppConfig
    from d3_item_salvager.workers.runs import RunResult

TASKS_MODULE = "d3_item_salvager.workers.tasks"
RETRY_SUFFIX = ":retry"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: its stable id, its task as a `module:function` reference, and its defaults.

    The scheduler stores only `task` (text) and plain kwargs, so the job store never holds an
    object of this process.
    """

    id: str
    task: str
    interval_minutes: float
    timeout_minutes: float
    needs_token: bool = False
    description: str = ""

    @property
    def cli_name(self) -> str:
        """The name `run JOB` shows (`scrape-guides`); the id itself is accepted too."""
        return self.id.replace("_", "-")

    def task_function(self) -> Callable[..., Awaitable[RunResult]]:
        """Import the task function the reference names."""
        module_name, _, function_name = self.task.partition(":")
        function: Callable[..., Awaitable[RunResult]] = getattr(
            importlib.import_module(module_name), function_name
        )
        return function


@dataclass(frozen=True, slots=True)
class JobSettings:
    """A job's effective settings: its `[scheduler.jobs.<id>]` section over the registry defaults."""

    enabled: bool
    interval_minutes: float
    timeout_minutes: float
    max_retries: int
    retry_backoff_seconds: float
    cron: str | None = None  # when set, the job runs on it rather than every interval_minutes
    jitter_seconds: float = 0.0


JOBS: dict[str, JobSpec] = {}


def register_job(spec: JobSpec) -> JobSpec:
    """Add a job to the registry (an id registered twice is an error)."""
    if spec.id in JOBS:
        raise ValueError(f"job {spec.id!r} is already registered")
    if ":" not in spec.task:
        raise ValueError(f"job {spec.id!r}: task must be 'module:function', not {spec.task!r}")
    JOBS[spec.id] = spec
    return spec


def unregister_job(job_id: str) -> None:
    """Remove a job from the registry (for tests that add one)."""
    JOBS.pop(job_id, None)


register_job(
    JobSpec(
        "scrape_guides",
        f"{TASKS_MODULE}:scrape_guides_task",
        interval_minutes=360,
        timeout_minutes=120,
        needs_token=True,
        description="Sync the index with Maxroll.",
    )
)
register_job(
    JobSpec(
        "refresh_cache",
        f"{TASKS_MODULE}:refresh_cache_task",
        interval_minutes=60,
        timeout_minutes=30,
        needs_token=True,
        description="Refresh the guide-list and item-catalog caches.",
    )
)
register_job(
    JobSpec(
        "cleanup_logs",
        f"{TASKS_MODULE}:cleanup_logs_task",
        interval_minutes=1440,
        timeout_minutes=10,
        description="Delete old log files and prune run history.",
    )
)


def job_spec(name: str) -> JobSpec:
    """The job named by its id or its CLI name (`scrape_guides` or `scrape-guides`)."""
    job_id = name.replace("-", "_")
    try:
        return JOBS[job_id]
    except KeyError:
        known = ", ".join(JOBS)
        raise ConfigError(f"unknown job {name!r} (known: {known})") from None


def check_jobs_config(config: AppConfig) -> None:
    """Every `[scheduler.jobs.<id>]` section names a registered job (catches typos at start)."""
    unknown = [job_id for job_id in config.scheduler.jobs.by_id() if job_id not in JOBS]
    if unknown:
        known = ", ".join(JOBS)
        names = ", ".join(f"scheduler.jobs.{job_id}" for job_id in unknown)
        raise ConfigError(f"{names}: unknown job (known: {known})")


def job_settings(config: AppConfig, job_id: str) -> JobSettings:
    """The job's settings: what the config sets, else the registry's defaults."""
    from d3_item_salvager.config import JobConfig  # pydantic: not needed for `--help`

    spec = JOBS[job_id]
    section = config.scheduler.jobs.by_id().get(job_id) or JobConfig()
    return JobSettings(
        enabled=section.enabled,
        interval_minutes=section.interval_minutes or spec.interval_minutes,
        timeout_minutes=section.timeout_minutes or spec.timeout_minutes,
        max_retries=section.max_retries,
        retry_backoff_seconds=section.retry_backoff_seconds,
        cron=section.cron,
        jitter_seconds=section.jitter_seconds,
    )


def all_job_settings(config: AppConfig) -> dict[str, JobSettings]:
    """Every registered job's settings, in registry order."""
    return {job_id: job_settings(config, job_id) for job_id in JOBS}


def retry_job_id(job_id: str) -> str:
    """The scheduler id of a job's one-off retry run."""
    return job_id + RETRY_SUFFIX


def base_job_id(scheduler_job_id: str) -> str:
    """The job id behind a scheduler id (a retry run's id names its job)."""
    return scheduler_job_id.removesuffix(RETRY_SUFFIX)


def is_retry_job_id(scheduler_job_id: str) -> bool:
    return scheduler_job_id.endswith(RETRY_SUFFIX)
