"""The workers' container: the application container plus the job store, run history, runner,
run events and metrics. One per runtime; two runtimes in a process never share any of it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dependency_injector import providers

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container, await_if_needed, resolve
from d3_item_salvager.workers.background import BackgroundTasks
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.job_store import (
    RunHistory,
    job_store_engine_resource,
    worker_identity,
)
from d3_item_salvager.workers.jobs import JobRegistry
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.runs import RunEvents


def _new_nonce() -> str:
    return uuid.uuid4().hex[:8]


class WorkerContainer(Container):
    """Everything one worker runtime needs, services included."""

    __self__ = providers.Self()

    worker_id = providers.Singleton(worker_identity, providers.Callable(_new_nonce))
    job_store_engine = providers.Resource(
        job_store_engine_resource,
        Container.config.provided.scheduler,
        Container.config.provided.database.busy_timeout_seconds,
    )
    run_history = providers.Singleton(RunHistory, job_store_engine, worker_id)
    run_events = providers.Singleton(RunEvents)
    metrics = providers.Singleton(WorkerMetrics)
    background = providers.Singleton(  # the runtime's task group
        BackgroundTasks.for_busy_timeout, Container.config.provided.database.busy_timeout_seconds
    )
    jobs = providers.Object(BUILTIN_JOBS)  # a runtime passes its own (with its extra jobs)
    job_runner = providers.Singleton(
        JobRunner, run_history, Container.config, run_events, jobs, __self__, background
    )


def build_worker_container(config: AppConfig, jobs: JobRegistry = BUILTIN_JOBS) -> WorkerContainer:
    """A workers container bound to one validated configuration and job set, its metrics
    listening."""
    container = WorkerContainer(config=providers.Object(config), jobs=providers.Object(jobs))
    container.maxroll_response_listener.override(container.metrics.provided.maxroll_response)
    return container


@asynccontextmanager
async def open_worker_container(
    config: AppConfig, jobs: JobRegistry = BUILTIN_JOBS
) -> AsyncIterator[WorkerContainer]:
    """A workers container whose resources are open inside the block and closed after it."""
    jobs.check_config(config)
    container = build_worker_container(config, jobs)
    try:
        await await_if_needed(container.init_resources())
        # Resolved now: the scheduler's listeners and executor reach it synchronously.
        await resolve(container.job_runner)
        yield container
    finally:
        await container.background().close()  # the writes of runs first, then the engines
        await await_if_needed(container.shutdown_resources())


def resolved(provider: Any) -> Any:
    """The value of a provider already resolved once (for sync code such as scheduler listeners).

    A provider that depends on an async resource returns a future; once it has been awaited,
    later calls return a finished one.
    """
    value = provider()
    if isinstance(value, asyncio.Future):
        if not value.done():
            raise RuntimeError("the provider has not been resolved yet: await it once first")
        return value.result()
    return value
