"""The one `httpx.AsyncClient` a process uses to talk to Maxroll.

Its transport is `H11Transport` (transport.py): HTTP/1.1 on asyncio protocols with a keep-alive
pool, which costs the event loop about half the CPU per request of httpx's default transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.to_thread
import httpx

from d3_item_salvager import __version__
from d3_item_salvager.config import MaxrollConfig
from d3_item_salvager.maxroll.transport import H11Transport

USER_AGENT = f"d3-item-salvager-workers/{__version__} (+https://github.com/d3-item-salvager)"


def build_http_client(config: MaxrollConfig) -> httpx.AsyncClient:
    """A client with explicit timeouts and a connection pool sized for the concurrency cap."""
    # The client never has more than max_concurrency requests in flight, so it never needs more
    # connections. One SSL context, made here: reading the CA bundle takes tens of milliseconds.
    ssl_context = httpx.create_ssl_context(trust_env=False)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            config.request_timeout_seconds, connect=config.connect_timeout_seconds
        ),
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
        trust_env=False,
        transport=H11Transport(ssl_context=ssl_context, max_connections=config.max_concurrency),
    )


async def http_client_resource(config: MaxrollConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Container resource: one client per process, closed on shutdown."""
    # Off the loop: the SSL context (the CA bundle read and parsed) takes tens of milliseconds.
    client = await anyio.to_thread.run_sync(build_http_client, config)
    try:
        yield client
    finally:
        await client.aclose()
