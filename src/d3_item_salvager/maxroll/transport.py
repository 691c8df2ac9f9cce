"""The HTTP/1.1 transport under the Maxroll client: h11 on asyncio protocols, with a small pool.

Why not httpx's default transport (httpcore): a sync makes ~3 small requests per guide, and
httpcore's pool spent ~1.3 ms of event-loop CPU on each at concurrency 16: every request start
and end walks every pooled connection and asks each idle one whether its socket is readable (a
`poll` system call, which also hands the GIL to a worker thread and waits to get it back), and
each read goes through AnyIO's stream layers. Here each connection is an `asyncio.Protocol`: the
event loop already watches its socket, so a server closing an idle connection is seen for free
(`eof_received`/`connection_lost`), and the pool is a list per origin. The same requests cost
a half to a quarter of the loop CPU (`python -m benchmarks.http_transport`). HTTP/1.1 framing,
parsing and validation stay with h11, the protocol library httpcore uses too.

Behaviour: keep-alive connections reused per origin (scheme, host, port), at most
`max_connections` open at once (a request waits for one up to the pool timeout); the timeouts of
each request (connect, read, pool) as httpx passes them; errors raised as the httpx exceptions
httpx's own transport raises, so callers classify them the same way. Nothing is retried here:
a request on a connection the server closed as it left fails with a `TransportError`, and the
client's retry policy (client.py) decides, and counts it, as for any other failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import h11
import httpx

# A response body buffered but not yet read past this pauses reading from the socket (the
# caller caps body sizes; this caps what sits in memory before it looks).
_MAX_UNREAD_BYTES = 1 << 20

_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: h11's state machine fed by the event loop's reads."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._unread = 0
        self._paused = False
        self.holds_slot = True  # counted in its pool's open connections until discarded

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._unread += len(data)
        if self._unread > _MAX_UNREAD_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self.h11.receive_data(b"")
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # Used by the transport

    @property
    def reusable(self) -> bool:
        # Bytes received past the end of the last answer, or while idle in the pool, belong to
        # no request (a server's unsolicited "408 Request Timeout"): they would be read as the
        # answer to the next one, so such a connection is not used again.
        unread, _ = self.h11.trailing_data
        return not self.closed and self.h11.our_state is h11.IDLE and not unread

    def send(self, *events: h11.Event) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise httpx.WriteError("the connection is closed")
        try:
            data = b"".join(self.h11.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        self.transport.write(data)

    async def next_event(self, wait_seconds: float | None) -> object:
        """The next h11 event of the response, waiting up to `wait_seconds` for its bytes."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            if self.closed:
                # h11 saw the end of the stream (it raises above for a cut-off body), or the
                # connection was lost without one.
                raise httpx.ReadError(f"the server closed the connection: {self.lost or 'EOF'}")
            self._unread = 0
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._waiter
            except TimeoutError:
                raise httpx.ReadTimeout(f"no answer within {wait_seconds} s") from None
            finally:
                self._waiter = None

    def finish_buffered(self) -> bool:
        """Read what is already buffered to the end of the response; whether it ended."""
        try:
            while (
                self.h11.their_state is h11.SEND_BODY or self.h11.their_state is h11.SEND_RESPONSE
            ):
                if self.h11.next_event() is h11.NEED_DATA:
                    return False
        except h11.RemoteProtocolError:
            return False
        return self.h11.their_state is h11.DONE

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body; closing it returns the connection to the pool when it can be reused."""

    def __init__(
        self,
        pool: H11Transport,
        origin: _Origin,
        connection: _Connection,
        read_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._connection.next_event(self._read_timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._origin, self._connection)


class H11Transport(httpx.AsyncBaseTransport):
    """An httpx transport: HTTP/1.1 over asyncio, keep-alive pool (see the module docstring)."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self._ssl_context = ssl_context
        self.max_connections = max_connections
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0
        self._changed: asyncio.Event | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin: _Origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        head = h11.Request(
            method=request.method,
            target=url.raw_path,
            headers=list(request.headers.raw),
        )
        body = request.content  # the client's requests are small and already read
        connection = await self._connection(origin, timeouts)
        try:
            connection.send(head, *([h11.Data(data=body)] if body else []), h11.EndOfMessage())
            event = await connection.next_event(timeouts.get("read"))
            while isinstance(event, h11.InformationalResponse):
                event = await connection.next_event(timeouts.get("read"))
        except BaseException:
            self._discard(connection)
            raise
        assert isinstance(event, h11.Response)
        return httpx.Response(
            status_code=event.status_code,
            headers=list(event.headers),
            stream=_ResponseBody(self, origin, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(event.reason)},
        )

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # Pool

    async def _connection(self, origin: _Origin, timeouts: dict[str, float | None]) -> _Connection:
        """An idle connection to `origin` (reused), or a new one once a slot is free."""
        if self._closed:
            raise httpx.PoolTimeout("the transport is closed")  # as httpcore: no new requests
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                while True:
                    idle = self._idle.get(origin)
                    while idle:
                        connection = idle.pop()
                        if connection.reusable:
                            return connection
                        self._discard(connection)
                    if self._open < self.max_connections or self._close_an_idle_connection():
                        break
                    # Woken when a connection is discarded or goes back to the pool.
                    self._changed = self._changed or asyncio.Event()
                    await self._changed.wait()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection became free in time") from None
        self._open += 1
        try:
            return await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._open -= 1
            self._notify()
            raise

    async def _connect(self, origin: _Origin, wait_seconds: float | None) -> _Connection:
        scheme, host, port = origin
        tls = scheme == "https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(wait_seconds):
                _, connection = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=self._ssl_context if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} within {wait_seconds} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return connection

    def release(self, origin: _Origin, connection: _Connection) -> None:
        """A response was closed: keep its connection for the next request if it is reusable."""
        if connection.h11.our_state is h11.DONE and connection.finish_buffered():
            # Raises when the server asked to close ("Connection: close"): not reused then.
            with contextlib.suppress(h11.LocalProtocolError):
                connection.h11.start_next_cycle()
        if connection.reusable and not self._closed:
            self._idle.setdefault(origin, []).append(connection)
            self._notify()
        else:
            self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        if connection.holds_slot:
            connection.holds_slot = False
            self._open -= 1
            self._notify()

    def _notify(self) -> None:
        """Wake the requests waiting for a connection: they look again."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _close_an_idle_connection(self) -> bool:
        """Make room for another origin by closing an idle connection; whether there was one."""
        for connections in self._idle.values():
            if connections:
                self._discard(connections.pop(0))
                return True
        return False
