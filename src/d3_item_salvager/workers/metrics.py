"""Prometheus metrics of one worker process, in a registry of its own (no global state).

`run-scheduler` and the embedded runtime serve them as Prometheus text on loopback when
`metrics.port` is set; a host app may instead read `runtime.metrics.registry` and expose it itself.

Several processes (`uvicorn --workers 2`) give one view through prometheus_client's multiprocess
mode, when the host turns it on by starting them with `PROMETHEUS_MULTIPROC_DIR` set: every
process then writes its values to files there, and `registry` reads all of them, so whichever
process answers a scrape reports the leader's runs. The runtime only reads that variable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.jobs import is_retry_job_id
from d3_item_salvager.workers.runs import (
    Outcome,
    RetryScheduled,
    RunEvent,
    RunEvents,
    RunFinished,
    RunResult,
)

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

PREFIX = "d3is"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode, when the host process turned it on.

    Raises:
        ConfigError: the variable names no folder, or was set after prometheus_client was
            imported (its metrics would then stay in memory, out of the shared view).
    """
    folder = os.environ.get(MULTIPROCESS_ENV)
    if not folder:
        return None
    if not os.path.isdir(folder):
        raise ConfigError(f"{MULTIPROCESS_ENV} = {folder!r}: not a folder (create it first)")
    if values.ValueClass is values.MutexValue:
        raise ConfigError(
            f"{MULTIPROCESS_ENV} was set after prometheus_client was imported: set it before "
            "the process starts"
        )
    return folder


class _NextRunCollector(Collector):
    """Reads each job's next run time, and whether it is paused, from the scheduler at scrape
    time."""

    def __init__(self) -> None:
        self.scheduler: AsyncIOScheduler | None = None
        self.shared: AsyncIOScheduler | None = None  # read also while standing by

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_job_next_run_timestamp_seconds",
            "When each job runs next (Unix time); absent while this process is a standby.",
            labels=["job"],
        )
        paused = GaugeMetricFamily(
            f"{PREFIX}_job_paused",
            "1 while a job is paused (`pause JOB`), else 0; absent while this process is a standby.",
            labels=["job"],
        )
        scheduler = self.scheduler or self.shared
        if scheduler is not None and scheduler.running:
            for job in scheduler.get_jobs():
                if job.next_run_time is not None:
                    family.add_metric([job.id], job.next_run_time.timestamp())
                if not is_retry_job_id(job.id):  # a paused job has no next run time
                    paused.add_metric([job.id], 0 if job.next_run_time is not None else 1)
        yield family
        yield paused


class WorkerMetrics:
    """Counters, gauges and histograms fed by run events, the client and the runtime."""

    def __init__(self) -> None:
        # Our metric objects live in a registry of their own, never prometheus_client's global one.
        registry = CollectorRegistry()
        self.multiprocess = multiprocess_dir()
        if self.multiprocess is None:
            self.registry = registry
        else:
            # What a scrape reads: every process's files (ours are in there too). Registering our
            # metrics here as well would report them twice.
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=self.multiprocess)  # type: ignore[no-untyped-call]
        self.runs = Counter(
            f"{PREFIX}_job_runs", "Job runs by job, trigger and outcome.",
            ["job", "trigger", "outcome"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            f"{PREFIX}_job_run_duration_seconds", "Duration of job runs that started.",
            ["job"], registry=registry,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
        )  # fmt: skip
        self.last_success = Gauge(
            f"{PREFIX}_job_last_success_timestamp_seconds", "When each job last succeeded.",
            ["job"], registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.retries = Counter(
            f"{PREFIX}_job_retries_scheduled", "Retry runs scheduled after transient failures.",
            ["job"], registry=registry,
        )  # fmt: skip
        self.misfires = Counter(
            f"{PREFIX}_job_misfires", "Runs missed beyond the misfire grace time.",
            ["job"], registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            f"{PREFIX}_job_skipped_overlaps", "Runs skipped because the job was still running.",
            ["job"], registry=registry,
        )  # fmt: skip
        self.maxroll_requests = Counter(
            f"{PREFIX}_maxroll_requests", "HTTP responses from Maxroll by status code.",
            ["status"], registry=registry,
        )  # fmt: skip
        # Across processes: how many live ones hold the lease (1 when all is well).
        self.lease_held = Gauge(
            f"{PREFIX}_scheduler_lease_held", "1 while this process holds the scheduler lease.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.loop_lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds", "How late the event loop wakes a 0.5 s timer.",
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        # Read at scrape time from the scheduler (not a value in the shared files).
        self._next_runs = _NextRunCollector()
        self.registry.register(self._next_runs)

    def bind_scheduler(self, scheduler: AsyncIOScheduler | None) -> None:
        """Report next run times from this scheduler (None to stop)."""
        self._next_runs.scheduler = scheduler

    def share_schedule(self, scheduler: AsyncIOScheduler) -> None:
        """In multiprocess mode, report next run times from this scheduler's job store also while
        standing by: the store is the leader's, so every process answers a scrape alike."""
        if self.multiprocess is not None:
            self._next_runs.shared = scheduler

    def subscribe(self, events: RunEvents) -> None:
        """Count the runs and retries that `events` reports."""
        events.subscribe(self.observe)

    def observe(self, event: RunEvent) -> None:
        if isinstance(event, RunFinished):
            self.run_finished(event.result, time.time())
        elif isinstance(event, RetryScheduled):
            self.retries.labels(event.job_id).inc()

    def run_finished(self, result: RunResult, finished_at: float) -> None:
        self.runs.labels(result.job_id, str(result.trigger), str(result.outcome)).inc()
        if result.outcome is Outcome.MISSED:
            self.misfires.labels(result.job_id).inc()
        elif result.outcome is Outcome.SKIPPED:
            self.skipped.labels(result.job_id).inc()
        else:
            self.duration.labels(result.job_id).observe(result.duration_seconds)
        if result.outcome is Outcome.SUCCESS:
            self.last_success.labels(result.job_id).set(finished_at)

    def maxroll_response(self, status: int) -> None:
        self.maxroll_requests.labels(str(status)).inc()
