"""The one `httpx.AsyncClient` a process uses to talk to Maxroll."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from d3_item_salvager import __version__
from d3_item_salvager.config import MaxrollConfig

USER_AGENT = f"d3-item-salvager-workers/{__version__} (+https://github.com/d3-item-salvager)"


def build_http_client(config: MaxrollConfig) -> httpx.AsyncClient:
    """A client with explicit timeouts and a connection pool sized for the concurrency cap."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            config.request_timeout_seconds, connect=config.connect_timeout_seconds
        ),
        # The client never has more than max_concurrency requests in flight, so it never needs
        # more connections; and httpcore checks every pooled connection (a poll and a getpeername
        # system call each) whenever a request starts or ends, so spare ones cost CPU.
        limits=httpx.Limits(
            max_connections=config.max_concurrency,
            max_keepalive_connections=config.max_concurrency,
        ),
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
        trust_env=False,
    )


async def http_client_resource(config: MaxrollConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Container resource: one client per process, closed on shutdown."""
    client = build_http_client(config)
    try:
        yield client
    finally:
        await client.aclose()
