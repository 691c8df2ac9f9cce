"""The dependency-injection container: how the application's services are built.

Only `workers/` and the tests import this module; it imports nothing from `workers/` (the workers'
own parts, job store, run history, runner and metrics, are in `workers/container.py`, which extends
this one). Every class it builds takes plain constructor arguments, so services and gateways never
know the container exists.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from dependency_injector import containers, providers

from d3_item_salvager.config import AppConfig
from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import IndexRepository
from d3_item_salvager.data.sqlite_writer import sqlite_guide_writer_resource
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.gateway import maxroll_gateway_resource
from d3_item_salvager.maxroll.http import http_client_resource
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.services.log_housekeeping import LogHousekeepingService


class Container(containers.DeclarativeContainer):
    """One per process (or per test): two containers never share a client, engine or limiter."""

    # Config
    config = providers.Dependency(instance_of=AppConfig)
    logger = providers.Singleton(get_logger, "d3_item_salvager")
    # Called with the status code of every Maxroll response; the workers point it at their metrics.
    maxroll_response_listener: providers.Object[Callable[[int], None] | None] = providers.Object(
        None
    )

    # Gateways
    http_client = providers.Resource(http_client_resource, config.provided.maxroll)
    index_engine = providers.Resource(index_engine_resource, config.provided.database)
    thread_limiter = providers.Singleton(
        anyio.CapacityLimiter, config.provided.scheduler.max_workers
    )
    maxroll_client = providers.Singleton(
        MaxrollClient,
        http_client,
        config.provided.maxroll,
        on_response=maxroll_response_listener,
    )
    maxroll_gateway = providers.Resource(
        maxroll_gateway_resource,
        maxroll_client,
        config.provided.maxroll,
        config.provided.cache,
        thread_limiter,
    )

    # Repositories
    sqlite_guide_writer = providers.Resource(sqlite_guide_writer_resource, config.provided.database)
    index_repository = providers.Singleton(IndexRepository, index_engine, sqlite_guide_writer)

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


def build_container(config: AppConfig) -> Container:
    """A container bound to one validated configuration."""
    return Container(config=providers.Object(config))


async def resolve(provider: Any) -> Any:
    """Call a provider and await the result when it depends on an async resource."""
    value = provider()
    if isinstance(value, asyncio.Future):
        # Shielded: a caller cancelled mid-creation must not cancel the provider's own future,
        # which dependency-injector then fails to complete (InvalidStateError, logged by asyncio).
        return await asyncio.shield(value)
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def open_container(config: AppConfig) -> AsyncIterator[Container]:
    """A container whose resources are open inside the block and closed after it."""
    container = build_container(config)
    try:
        await await_if_needed(container.init_resources())
        yield container
    finally:
        await await_if_needed(container.shutdown_resources())


async def await_if_needed(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
