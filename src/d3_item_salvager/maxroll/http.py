"""The one `httpx2.AsyncClient` a process uses to talk to Maxroll.

httpx2 is Pydantic's maintained fork of httpx (same API, module `httpx2`), on httpcore2. Its own
transport does the HTTP: keep-alive connections, at most `max_concurrency` open per origin,
proxies from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`), and the CA
certificates named by `SSL_CERT_FILE` or `SSL_CERT_DIR` (else the system's). Why httpx2 and not
httpx: httpcore 1.0's pool hands one idle connection to several waiting requests, and each one
that loses walks the pool again, which doubled the event loop's CPU per guide at concurrency 16;
httpcore2's does not (BENCHMARKS.md, "Fifth pass"). Its connection attempts are not retried
(`retries` is 0): the client's retry policy is the one that decides and counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.to_thread
import httpx2

from d3_item_salvager import __version__
from d3_item_salvager.config import MaxrollConfig

USER_AGENT = f"d3-item-salvager-workers/{__version__} (+https://github.com/d3-item-salvager)"


def build_http_client(config: MaxrollConfig) -> httpx2.AsyncClient:
    """A client with explicit timeouts and a connection pool sized for the concurrency cap."""
    # The client never has more than max_concurrency requests in flight, so it never needs more
    # connections. One SSL context, made here and shared by the direct and proxy transports:
    # reading the CA bundle takes tens of milliseconds.
    ssl_context = httpx2.create_ssl_context(trust_env=True)
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(
            config.request_timeout_seconds, connect=config.connect_timeout_seconds
        ),
        limits=httpx2.Limits(
            max_connections=config.max_concurrency,
            max_keepalive_connections=config.max_concurrency,
        ),
        headers={"user-agent": USER_AGENT},
        verify=ssl_context,
        follow_redirects=False,
        # Proxies from the environment; no `transport=` argument, which would turn them off.
        trust_env=True,
    )


async def http_client_resource(config: MaxrollConfig) -> AsyncIterator[httpx2.AsyncClient]:
    """Container resource: one client per process, closed on shutdown."""
    # Off the loop: the SSL context (the CA bundle read and parsed) takes tens of milliseconds.
    client = await anyio.to_thread.run_sync(build_http_client, config)
    try:
        yield client
    finally:
        await client.aclose()
