"""`WorkerRuntime`: the whole workers application as one async context manager.

    async with WorkerRuntime(config) as runtime:
        ...  # the host app runs; jobs run on the same event loop
        result = await runtime.run_job("scrape_guides")  # a manual run, now

It composes the seed's parts: a container of its own (bound to this runtime only, see tasks.py),
`build_scheduler` / `register_jobs` / `start_scheduler` (scheduler.py), leadership (the job store's
lease, leadership.py) and metrics. The scheduler starts paused; the process holding the lease
registers the jobs and runs them, the others stand by. On exit everything is torn down in reverse
order: the scheduler stops taking runs, running jobs get `scheduler.shutdown_timeout_seconds`, the
lease is released, and the client and engines are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import await_if_needed, resolve
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.container import WorkerContainer, build_worker_container
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.job_store import SchedulerLease, set_paused
from d3_item_salvager.workers.jobs import JobSpec, base_job_id
from d3_item_salvager.workers.leader_lock import LeaderLock
from d3_item_salvager.workers.leadership import LeaderClaim, Leadership
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.metrics_server import MetricsServer
from d3_item_salvager.workers.runs import RunResult, RunTracker
from d3_item_salvager.workers.scheduler import (
    SchedulerRetryPlanner,
    build_scheduler,
    close_job_store,
    start_paused,
    stop_scheduler,
)
from d3_item_salvager.workers.startup import GcFreeze, prepare_off_loop

_log = get_logger(__name__)

LAG_PROBE_SECONDS = 0.5


def _first_fire_after(job: Job, now: datetime) -> datetime | None:
    """The job's first fire time after `now`: the fires it missed coalesce into the run due now,
    as the scheduler does (a cron trigger's next time after an old one may still be past)."""
    following: datetime | None = job.trigger.get_next_fire_time(job.next_run_time, now)
    while following is not None and following <= now:
        following = job.trigger.get_next_fire_time(following, now)
    return following


class WorkerRuntime:
    """Container, scheduler, leadership and metrics for one runtime.

    Args:
        config: the validated configuration.
        run_scheduler: False for one-off use (`run JOB`, tests): no scheduler, no lease, and no
            metrics server.
        freeze_gc: move every object alive after start-up out of the cyclic garbage collector's
            reach (`gc.freeze()`), and `gc.unfreeze()` on exit unless the host had frozen
            objects of its own (see startup.GcFreeze). That is process-wide, so it is off by
            default; the CLI, which owns its process, turns it on.
        burst: lead (take the lease, register the jobs) but keep the scheduler paused: jobs run
            only through `run_due_jobs()`, like arq's `burst=True`. For tests and cron-style use.
        extra_jobs: the host app's own jobs, run beside the built-in ones by this runtime only
            (scheduled, `run_job`, `status`, metrics; configured as `[scheduler.jobs.<id>]`).
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        run_scheduler: bool = True,
        freeze_gc: bool = False,
        burst: bool = False,
        extra_jobs: Iterable[JobSpec] = (),
    ) -> None:
        self.jobs = BUILTIN_JOBS.with_jobs(extra_jobs)
        self.jobs.check_config(config)
        self.config = config
        self.run_scheduler = run_scheduler
        self.burst = burst
        self.freeze_gc = freeze_gc
        self.container: WorkerContainer = build_worker_container(config, self.jobs)
        self.scheduler: AsyncIOScheduler | None = None
        self.leadership: Leadership | None = None
        self.metrics: WorkerMetrics = self.container.metrics()
        self.metrics_server: MetricsServer | None = None
        self._runner: JobRunner | None = None
        self._tracker: RunTracker | None = None
        self._lifecycle: AbstractAsyncContextManager[None] | None = None

    # Public face

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            raise RuntimeError("the runtime is not running")
        return self._runner

    @property
    def lease(self) -> LeaderClaim | None:
        return self.leadership.lease if self.leadership is not None else None

    @property
    def is_leader(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader

    @property
    def became_leader(self) -> asyncio.Event:
        if self.leadership is None:
            raise RuntimeError("this runtime runs no scheduler")
        return self.leadership.became_leader

    @property
    def metrics_url(self) -> str | None:
        return self.metrics_server.url if self.metrics_server is not None else None

    async def run_job(self, job: str, **kwargs: Any) -> RunResult:
        """Run a job now in this runtime (a manual run unless `trigger` says otherwise).

        `job` is its id or CLI name; `trigger`, `attempt` and `run_id` name the run, other keyword
        arguments reach its work as `ctx.options` (for example `force_refresh=True` for
        scrape_guides). Returns how the run ended.

        Raises:
            ConfigError: this runtime has no such job.
        """
        spec = self.jobs.get(job)
        token = tasks.use(self.container)
        try:
            return await tasks.run_job(spec.id, **kwargs)
        finally:
            tasks.reset(token)

    async def pause_job(self, job: str) -> bool:
        """Pause the job's schedule; False when it was paused already.

        The pause is kept in the job store: it holds across restarts, and the process leading the
        scheduler (this one at once, any other within a lease period) stops running the job on
        schedule until `resume_job`. `run_job` still runs it.
        """
        return await self._set_paused(job, paused=True)

    async def resume_job(self, job: str) -> bool:
        """Resume a paused job; False when it was not paused. If a run fell due during the
        pause, the job runs once at once, else at its next fire time."""
        return await self._set_paused(job, paused=False)

    async def _set_paused(self, job: str, *, paused: bool) -> bool:
        spec = self.jobs.get(job)
        changed = await set_paused(await resolve(self.container.job_store_engine), spec.id, paused)
        if self.leadership is not None:
            await self.leadership.apply_paused_jobs()
        return changed

    async def run_due_jobs(self) -> list[RunResult]:
        """Run once, one after another, every stored job (retry runs included) that is due now,
        advance each to its next run time, and return the results in that order.

        Burst mode (`WorkerRuntime(config, burst=True)`) keeps the scheduler from running them
        on its own; in a normal runtime the scheduler is paused meanwhile. Only the lease holder
        runs jobs: a standby returns an empty list.
        """
        scheduler = self.scheduler
        if scheduler is None or not self.is_leader:
            return []
        was_running = scheduler.state == STATE_RUNNING
        scheduler.pause()
        results = []
        try:
            now = datetime.now(UTC)
            due = [job for job in scheduler.get_jobs() if job.next_run_time is not None]
            for job in sorted(due, key=lambda stored: stored.next_run_time):
                if job.next_run_time > now:
                    continue
                following = _first_fire_after(job, now)
                if following is None:
                    scheduler.remove_job(job.id)
                else:
                    scheduler.modify_job(job.id, next_run_time=following)
                # As the scheduler runs it: the stored entry, its kwargs and its due time.
                stored = {"job_id": base_job_id(job.id), **job.kwargs}
                submission = tasks.Submission(job.next_run_time, self.runner.term)
                context = tasks.submission_context(self.container, submission)
                result = await context.run(asyncio.ensure_future, tasks.run_stored_job(**stored))
                if result is not None:
                    results.append(result)
        finally:
            if was_running and self.is_leader:
                scheduler.resume()
        return results

    async def wait_for_runs(self, job: str, count: int) -> list[RunResult]:
        """Wait until `count` runs of the job have finished in this runtime since it started
        (wrap it in a timeout); returns the job's most recent runs, oldest first."""
        return await self.tracker.wait_for_runs(self.jobs.get(job).id, count)

    @property
    def tracker(self) -> RunTracker:
        """The runs this runtime finished: counts per job and the most recent results.

        Readable once the runtime has started, also after it closed (tests read it then); only
        waiting for runs that have not finished raises after the close.
        """
        if self._tracker is None:
            raise RuntimeError("the runtime has not started")
        return self._tracker

    # Lifecycle

    async def __aenter__(self) -> Self:
        lifecycle = self._live()
        await lifecycle.__aenter__()  # a failed start has undone what it did
        self._lifecycle = lifecycle
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        lifecycle, self._lifecycle = self._lifecycle, None
        if lifecycle is None:  # exited already (a host may close it early, then its stack)
            return
        # Shielded from an AnyIO cancel scope, which would cancel every await of the stop
        # (a host's cancelled task group or lifespan): the stop is bounded, and cut short it
        # would leave a run open, its claim and the leader lock held, connections open.
        with anyio.CancelScope(shield=True):
            await lifecycle.__aexit__(exc_type, exc, traceback)
        failure = self.leadership.failed if self.leadership is not None else None
        if failure is not None and exc is None:
            raise failure

    @asynccontextmanager
    async def _live(self) -> AsyncIterator[None]:
        """The runtime from start to stop. Each part is opened inside the parts it needs, so
        leaving the block stops it before them: runs, then leadership, then the runtime's task
        group (background.py), then the container's resources (client, engines)."""
        container = self.container
        freeze = GcFreeze() if self.freeze_gc else None
        with freeze or nullcontext(), tasks.bound(container):
            try:
                await self._open_stores()
                await await_if_needed(container.init_resources())
                self._runner = await resolve(container.job_runner)
                self.metrics.subscribe(self.runner.events)
                self._tracker = RunTracker(self.runner.events)
                background = container.background()
                try:
                    background.start_service(self._measure_loop_lag(), "d3is-loop-lag")
                    if freeze is not None:
                        freeze.end_of_start_up()
                    if self.run_scheduler:
                        async with self._scheduling():
                            yield
                    else:
                        try:
                            yield
                        finally:
                            await self.runner.stop(0)
                finally:
                    await background.close()
                    self._tracker.close()
            finally:
                await await_if_needed(container.shutdown_resources())

    async def _open_stores(self) -> None:
        """Open the job store and the index. A store on a server is checked before a SQLite
        one, which opening creates: a store that cannot be used stops the start with nothing
        created (the log file too is opened only with the first line logged). The slow part of
        opening the index (a schema created or upgraded) runs in a thread."""
        if self._index_before_job_store():
            await prepare_off_loop(self.config.database)
            await resolve(self.container.job_store_engine)
        else:
            await resolve(self.container.job_store_engine)
            await prepare_off_loop(self.config.database)

    @asynccontextmanager
    async def _scheduling(self) -> AsyncIterator[None]:
        """The scheduler (started paused: only the lease holder registers and runs jobs),
        leadership and the metrics server. On the way out, running jobs finish while the lease
        is still renewed, the metrics port is freed, the lease is released (so the next leader
        can bind that port at once), and the job store is closed last."""
        container = self.container
        engine = await resolve(container.job_store_engine)
        worker = await resolve(container.worker_id)
        scheduler = self.scheduler = build_scheduler(self.config, container)
        self.runner.retry_planner = SchedulerRetryPlanner(scheduler)
        self.metrics.share_schedule(scheduler)  # multiprocess metrics: one view from any process
        if self.config.metrics.port is not None:
            self.metrics_server = MetricsServer(self.config.metrics, self.metrics.registry)
        try:
            self._start_paused(scheduler)
            leadership = self.leadership = Leadership(
                self._leader_claim(engine, worker),
                scheduler,
                self.runner,
                self.config,
                on_change=self._leadership_changed,
                resume=not self.burst,
                background=container.background(),
            )
            try:
                try:
                    await leadership.start()
                    if self.metrics_server is not None and self.metrics_server.error is not None:
                        raise ConfigError(self.metrics_server.error)
                    yield
                finally:
                    await self._stop_scheduler()
                    if self.metrics_server is not None:  # the port freed before the lease
                        await container.background().durable(self._closing(self.metrics_server))
            finally:
                await leadership.stop()
        finally:
            close_job_store(scheduler)

    def _start_paused(self, scheduler: AsyncIOScheduler) -> None:
        try:
            start_paused(scheduler)
        except DBAPIError as exc:
            settings = self.config.scheduler
            setting = (
                "scheduler.job_store_url"
                if settings.job_store_url
                else f"scheduler.job_store_path = {str(settings.job_store_path)!r}"
            )
            raise ConfigError(f"{setting}: cannot load the job store ({exc.orig})") from None

    def _index_before_job_store(self) -> bool:
        """Whether the index is on a server while the job store is a SQLite file."""
        job_store_url = self.config.scheduler.job_store_url
        local_job_store = job_store_url is None or job_store_url.startswith("sqlite")
        return local_job_store and not self.config.database.url.startswith("sqlite")

    def _leadership_changed(self, leading: bool) -> None:
        self.metrics.lease_held.set(1 if leading else 0)
        self.metrics.bind_scheduler(self.scheduler if leading else None)
        if self.metrics_server is None:
            return
        # Only the lease holder serves metrics.port, so several processes embedding the runtime
        # can share one configuration; a new leader takes the port over.
        if leading:
            self.metrics_server.start()
        else:
            self.container.background().write_soon(self._closing(self.metrics_server))

    async def _closing(self, server: MetricsServer) -> None:
        """Stop serving metrics, in a worker thread (closing waits for the server's thread)."""
        await anyio.to_thread.run_sync(server.stop())

    def _leader_claim(self, engine: Engine, worker: str) -> LeaderClaim:
        """What leading takes: the lock beside a SQLite job store file, else the lease row."""
        settings = self.config.scheduler
        if settings.job_store_url is None:
            return LeaderLock(settings.job_store_path, worker, settings.lease_seconds / 4)
        return SchedulerLease(engine, worker, settings.lease_seconds)

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            try:
                self.metrics.loop_lag.observe(max(loop.time() - asked - LAG_PROBE_SECONDS, 0.0))
            except Exception:  # noqa: BLE001 - supervised: a failed probe logs and keeps probing
                _log.exception("loop-lag probe failed; it keeps running")

    async def _stop_scheduler(self) -> None:
        assert self.scheduler is not None
        # The lease keeps being renewed while running jobs finish, so no standby starts them.
        await stop_scheduler(
            self.scheduler, self.runner, self.config.scheduler.shutdown_timeout_seconds
        )
        _log.info("scheduler stopped")

    async def wait_stopped(self) -> None:
        """Wait until leading fails for good (e.g. the job store was replaced), then raise why.

        A host app may run it as a task beside its own work; `run-scheduler` does.
        """
        if self.leadership is None:
            await asyncio.Event().wait()
            return
        await self.leadership.stopped.wait()
        if self.leadership.failed is not None:
            raise self.leadership.failed
