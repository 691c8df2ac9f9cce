"""`WorkerRuntime`: the whole workers application as one async context manager.

    async with WorkerRuntime(config) as runtime:
        ...  # the host app runs; jobs run on the same event loop

On entry it opens the container's resources, wires the tasks, starts the scheduler (paused) and
begins competing for the job store's lease; the process holding the lease registers the jobs and
runs them, the others stand by. On exit everything is torn down in reverse order: the scheduler
stops taking runs, running jobs get `scheduler.shutdown_timeout_seconds`, the lease is released,
the wiring undone and the client and engines closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import start_wsgi_server
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container, build_container, resolve
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.lease import SchedulerLease
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.scheduler import (
    SchedulerRetryPlanner,
    build_scheduler,
    register_jobs,
    start_paused,
    stop_scheduler,
)

_log = get_logger(__name__)

LAG_PROBE_SECONDS = 0.5


class WorkerRuntime:
    """Container, wiring, scheduler and lease for one process.

    Args:
        config: the validated configuration.
        run_scheduler: False for one-off use (`run JOB`, tests): no scheduler and no lease.
        freeze_gc: move every object alive after start-up out of the cyclic garbage collector's
            reach (`gc.freeze()`). Full collections then scan only what jobs allocate, which
            keeps them from stalling the host's event loop for tens of milliseconds.
    """

    def __init__(
        self, config: AppConfig, *, run_scheduler: bool = True, freeze_gc: bool = True
    ) -> None:
        self.config = config
        self.run_scheduler = run_scheduler
        self.freeze_gc = freeze_gc
        self.container: Container = build_container(config)
        self.scheduler: AsyncIOScheduler | None = None
        self.lease: SchedulerLease | None = None
        self.is_leader = False
        self.became_leader = asyncio.Event()
        self._runner: JobRunner | None = None
        self.metrics: WorkerMetrics | None = None
        self.metrics_url: str | None = None
        self._stack = AsyncExitStack()
        self._lease_task: asyncio.Task[None] | None = None

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            raise RuntimeError("the runtime is not running")
        return self._runner

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        container = self.container
        init = container.init_resources()
        self._stack.push_async_callback(self._shutdown_resources)
        if init is not None:
            await init
        container.wire(modules=[tasks])
        self._stack.callback(container.unwire)
        self._runner = await resolve(container.job_runner)
        self.metrics = container.metrics()
        self._serve_metrics()
        self._background_task(self._measure_loop_lag())
        if self.freeze_gc:
            gc.freeze()
            self._stack.callback(gc.unfreeze)  # hand the objects back to the collector on exit
        if not self.run_scheduler:
            self._stack.push_async_callback(self.runner.stop, 0)
            return

        # The scheduler starts paused: only the lease holder registers and runs jobs.
        scheduler = self.scheduler = build_scheduler(self.config, self.runner)
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
        engine = await resolve(container.job_store_engine)
        worker = await resolve(container.worker_id)
        self.lease = SchedulerLease(engine, worker, self.config.scheduler.lease_seconds)
        self._stack.push_async_callback(self._stop_scheduling)
        await self._lease_round()  # take the lease at once when it is free
        self._lease_task = asyncio.get_running_loop().create_task(self._hold_lease())

    def _serve_metrics(self) -> None:
        settings = self.config.metrics
        if settings.port is None or self.metrics is None:
            return
        try:
            server, thread = start_wsgi_server(
                settings.port, addr=settings.host, registry=self.metrics.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"metrics.port = {settings.port}: cannot listen on {settings.host} ({exc.strerror})"
            ) from None
        self.metrics_url = f"http://{settings.host}:{server.server_port}/metrics"
        _log.info("serving metrics", extra={"url": self.metrics_url})

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        self._stack.callback(stop)

    def _background_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """A task owned by the runtime: cancelled and awaited on exit."""
        task = asyncio.get_running_loop().create_task(coroutine)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(cancel)

    async def _measure_loop_lag(self) -> None:
        assert self.metrics is not None
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            self.metrics.loop_lag.observe(max(loop.time() - asked - LAG_PROBE_SECONDS, 0.0))

    async def _shutdown_resources(self) -> None:
        result = self.container.shutdown_resources()
        if result is not None:
            await result

    async def _stop_scheduling(self) -> None:
        assert self.scheduler is not None
        assert self.lease is not None
        # Keep renewing the lease while running jobs finish, so no standby starts them again.
        await stop_scheduler(
            self.scheduler, self.runner, self.config.scheduler.shutdown_timeout_seconds
        )
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self.is_leader:
            with contextlib.suppress(DBAPIError):
                await self.lease.release()
            self._set_leader(False)
        _log.info("scheduler stopped")

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        if self.metrics is not None:
            self.metrics.lease_held.set(1 if leading else 0)
            self.metrics.bind_scheduler(self.scheduler if leading else None)

    async def _hold_lease(self) -> None:
        assert self.lease is not None
        while True:
            await anyio.sleep(self.lease.check_interval)
            await self._lease_round()

    async def _lease_round(self) -> None:
        assert self.lease is not None
        assert self.scheduler is not None
        try:
            if self.is_leader:
                if not await self.lease.renew():
                    self.scheduler.pause()
                    self._set_leader(False)
                    self.became_leader.clear()
                    _log.warning("lost the scheduler lease; standing by")
            elif await self.lease.try_acquire():
                await self._lead()
        except DBAPIError as exc:
            # A locked or busy job store: try again next round; the lease period absorbs it.
            _log.warning("lease check failed", extra={"error": str(exc.orig)})

    async def _lead(self) -> None:
        assert self.scheduler is not None
        abandoned = await self.runner.history.mark_abandoned()
        register_jobs(self.scheduler, self.config)
        self.runner.retry_planner = SchedulerRetryPlanner(self.scheduler, self.config)
        self.scheduler.resume()
        self._set_leader(True)
        self.became_leader.set()
        _log.info("holding the scheduler lease; running jobs", extra={"abandoned_runs": abandoned})
