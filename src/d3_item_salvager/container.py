"""The dependency-injection container: how the application's parts are built and wired.

Only `workers/` and the tests import this module. Every class it builds takes plain constructor
arguments, so services and gateways never know the container exists.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from dependency_injector import containers, providers
from sqlalchemy.ext.asyncio import async_sessionmaker

from d3_item_salvager.config import AppConfig
from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import IndexRepository
from d3_item_salvager.data.sqlite_writer import sqlite_guide_writer_resource
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.http import http_client_resource
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.services.log_housekeeping import LogHousekeepingService
from d3_item_salvager.workers.job_runner import JobRunner
from d3_item_salvager.workers.job_store_db import job_store_engine_resource
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.run_history import RunHistory, worker_identity


def _new_nonce() -> str:
    return uuid.uuid4().hex[:8]


class Container(containers.DeclarativeContainer):
    """One per process (or per test): two containers never share a client, engine or limiter."""

    # Config
    config = providers.Dependency(instance_of=AppConfig)
    logger = providers.Singleton(get_logger, "d3_item_salvager")
    worker_id = providers.Singleton(worker_identity, providers.Callable(_new_nonce))

    # Gateways
    http_client = providers.Resource(http_client_resource, config.provided.maxroll)
    index_engine = providers.Resource(index_engine_resource, config.provided.database)
    job_store_engine = providers.Resource(job_store_engine_resource, config.provided.scheduler)
    session_factory = providers.Singleton(async_sessionmaker, index_engine, expire_on_commit=False)
    thread_limiter = providers.Singleton(
        anyio.CapacityLimiter, config.provided.scheduler.max_workers
    )
    metrics = providers.Singleton(WorkerMetrics)
    maxroll_client = providers.Singleton(
        MaxrollClient,
        http_client,
        config.provided.maxroll,
        on_response=metrics.provided.maxroll_response,
    )
    maxroll_gateway = providers.Singleton(
        MaxrollGateway,
        maxroll_client,
        config.provided.maxroll,
        config.provided.cache,
        thread_limiter,
    )

    # Repositories
    sqlite_guide_writer = providers.Resource(sqlite_guide_writer_resource, config.provided.database)
    index_repository = providers.Singleton(IndexRepository, index_engine, sqlite_guide_writer)
    run_history = providers.Singleton(RunHistory, job_store_engine, worker_id)

    # Services
    build_guide_service = providers.Factory(
        BuildGuideService,
        maxroll_gateway,
        index_repository,
        config.provided.maxroll,
        config.provided.cache,
    )
    cache_refresh_service = providers.Factory(CacheRefreshService, maxroll_gateway)
    log_housekeeping_service = providers.Factory(
        LogHousekeepingService, config.provided.logging, thread_limiter
    )
    job_runner = providers.Singleton(JobRunner, run_history, config, metrics)


def build_container(config: AppConfig) -> Container:
    """A container bound to one validated configuration."""
    return Container(config=providers.Object(config))


async def resolve(provider: Any) -> Any:
    """Call a provider and await the result when it depends on an async resource."""
    value = provider()
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def open_container(config: AppConfig) -> AsyncIterator[Container]:
    """A container whose resources are open inside the block and closed after it."""
    container = build_container(config)
    try:
        await _await_if_needed(container.init_resources())
        yield container
    finally:
        await _await_if_needed(container.shutdown_resources())


async def _await_if_needed(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
