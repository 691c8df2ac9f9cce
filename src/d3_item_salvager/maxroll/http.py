"""The one `httpx.AsyncClient` a process uses to talk to Maxroll.

Its connection pool uses httpcore's AnyIO network backend with one change: httpcore asks every
idle pooled connection whether its socket is readable (a server that closed it) each time a
request starts or ends, and the AnyIO stream answers by building its whole attribute table,
`getpeername` system call included, to find its socket. At zero latency that was about a tenth of
the event loop's CPU. `_Stream` keeps the socket and answers with the one `poll`.
"""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio.to_thread
import httpcore
import httpx

from d3_item_salvager import __version__
from d3_item_salvager.config import MaxrollConfig

USER_AGENT = f"d3-item-salvager-workers/{__version__} (+https://github.com/d3-item-salvager)"


def build_http_client(config: MaxrollConfig) -> httpx.AsyncClient:
    """A client with explicit timeouts and a connection pool sized for the concurrency cap."""
    # The client never has more than max_concurrency requests in flight, so it never needs more
    # connections; httpcore checks every pooled connection whenever a request starts or ends, so
    # spare ones cost CPU.
    limits = httpx.Limits(
        max_connections=config.max_concurrency,
        max_keepalive_connections=config.max_concurrency,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            config.request_timeout_seconds, connect=config.connect_timeout_seconds
        ),
        limits=limits,
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
        trust_env=False,
        transport=_transport(limits),
    )


def _transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its pool rebuilt with the same settings and `_Backend`.

    httpx takes no network backend, so the pool it built is replaced; if a later httpx keeps
    its pool elsewhere, its own is kept (slower, never wrong).
    """
    # One SSL context for both pools (making one reads the CA bundle: tens of milliseconds).
    ssl_context = httpx.create_ssl_context(trust_env=False)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    if isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )
    return transport


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's AnyIO backend whose streams answer "is_readable" cheaply."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """A stream that keeps its socket for the pool's readability checks."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return socket_readable(self._socket)
        return self._stream.get_extra_info(info)


def socket_readable(sock: socket.socket) -> bool:
    """Whether a read would return at once (data, or the b"" of a peer that closed)."""
    descriptor = sock.fileno()
    if descriptor < 0:
        return True  # closed here: the next read ends the connection
    poller = select.poll()
    poller.register(descriptor, select.POLLIN)
    return bool(poller.poll(0))


async def http_client_resource(config: MaxrollConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Container resource: one client per process, closed on shutdown."""
    # Off the loop: the SSL context (the CA bundle read and parsed) takes tens of milliseconds.
    client = await anyio.to_thread.run_sync(build_http_client, config)
    try:
        yield client
    finally:
        await client.aclose()
