"""Prometheus metrics of one worker process, in a registry of its own (no global state).

`run-scheduler` and the embedded runtime serve them as Prometheus text on loopback when
`metrics.port` is set; a host app may instead read `runtime.metrics.registry` and expose it itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _NextRunCollector(Collector):
    """Reads each job's next run time, and whether it is paused, from the scheduler at scrape
    time."""

    def __init__(self) -> None:
        self.scheduler: AsyncIOScheduler | None = None

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
        scheduler = self.scheduler
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
        self.registry = CollectorRegistry()
        registry = self.registry
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
            ["job"], registry=registry,
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
        self.lease_held = Gauge(
            f"{PREFIX}_scheduler_lease_held", "1 while this process holds the scheduler lease.",
            registry=registry,
        )  # fmt: skip
        self.loop_lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds", "How late the event loop wakes a 0.5 s timer.",
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self._next_runs = _NextRunCollector()
        registry.register(self._next_runs)

    def bind_scheduler(self, scheduler: AsyncIOScheduler | None) -> None:
        """Report next run times from this scheduler (None to stop)."""
        self._next_runs.scheduler = scheduler

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
