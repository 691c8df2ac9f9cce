"""H11Transport over real sockets: keep-alive, the pool's limits, errors as httpx raises them, TLS.

Each test runs a small asyncio server on 127.0.0.1 whose handler plays one server behaviour (a
keep-alive server, one that closes idle connections, one that never answers, ...) and counts the
connections it accepted.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
import trustme

from d3_item_salvager.maxroll.http import build_http_client
from d3_item_salvager.maxroll.transport import H11Transport
from tests.conftest import make_config

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    url: str
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    state = Server("")

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.open_now += 1
        state.most_open = max(state.most_open, state.open_now)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            state.open_now -= 1
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0, ssl=ssl_context)
    scheme = "https" if ssl_context else "http"
    state.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield state


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head (the client's requests here have no body but the POST's, read apart)."""
    return await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        path = head.split(b" ")[1]
        writer.write(answer(b"you asked " + path))
        await writer.drain()


def client(**limits: float) -> httpx.AsyncClient:
    transport = H11Transport(
        ssl_context=ssl.create_default_context(),
        max_connections=int(limits.pop("max_connections", 4)),
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, **limits))


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with serve(keep_alive) as server, client() as http:
        texts = [(await http.get(f"{server.url}/{n}")).text for n in range(5)]
    assert texts == [f"you asked /{n}" for n in range(5)]
    assert server.connections == 1


async def test_the_shared_client_uses_this_transport_and_its_pool_size(tmp_path: Path) -> None:
    config = make_config(tmp_path, maxroll={"max_concurrency": 3})
    async with build_http_client(config.maxroll) as http:
        transport = http._transport  # httpx keeps the transport it was given here
        assert isinstance(transport, H11Transport)
        assert transport.max_connections == 3


async def test_no_more_connections_than_the_limit_are_ever_open() -> None:
    release = asyncio.Event()
    two_waiting = asyncio.Event()
    waiting = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal waiting
        while True:
            await read_request(reader)
            waiting += 1
            if waiting == 2:
                two_waiting.set()
            await release.wait()
            writer.write(answer())
            await writer.drain()

    async with serve(slow) as server, client(max_connections=2) as http:
        requests = [asyncio.create_task(http.get(f"{server.url}/{n}")) for n in range(8)]
        with anyio.fail_after(5):
            await two_waiting.wait()  # both connections hold a request; six wait for them
        release.set()
        responses = await asyncio.wait_for(asyncio.gather(*requests), 10)
    assert [r.status_code for r in responses] == [200] * 8
    assert server.most_open == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    close_now = asyncio.Event()
    closed = asyncio.Event()

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        if head.startswith(b"POST"):
            await reader.readexactly(1)  # its body
        writer.write(answer())
        await writer.drain()
        if head.startswith(b"GET"):
            await close_now.wait()  # as a keep-alive timeout, once the connection is idle
            writer.close()
            await writer.wait_closed()
            closed.set()

    async with serve(answer_then_close) as server, client() as http:
        first = await http.get(f"{server.url}/a")
        close_now.set()
        with anyio.fail_after(5):
            # The event loop reads the FIN while the server finishes closing.
            await closed.wait()
        # A POST is never sent again (below), so only noticing the close makes this succeed.
        second = await http.post(f"{server.url}/b", content=b"x")
    assert (first.text, second.text) == ("ok", "ok")
    assert server.connections == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_the_server_hangs_up_on_fails_and_is_never_sent_twice(method: str) -> None:
    """The server reads the second request on a connection and closes without answering (as a
    server whose keep-alive timeout fell just then): the request fails as a transport error,
    for the client's retry policy to count and retry; the transport never re-sends it."""

    async def one_answer_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()
        await read_request(reader)  # then hang up

    async with serve(one_answer_per_connection) as server, client() as http:
        await http.get(f"{server.url}/a")
        with pytest.raises(httpx.TransportError):
            await http.request(method, f"{server.url}/b")
        assert (await http.get(f"{server.url}/c")).text == "ok"  # on a new connection
    assert server.connections == 2


@pytest.mark.parametrize("when", ["while idle", "with the answer"])
async def test_a_stray_answer_on_a_kept_connection_is_never_taken_for_the_next_one(
    when: str,
) -> None:
    """A server may send "408 Request Timeout" on an idle keep-alive connection without closing
    it, or right behind an answer; that 408 belongs to no request, so the connection is left."""
    stray = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    first_read = asyncio.Event()
    stray_sent = asyncio.Event()

    async def stray_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            if stray_sent.is_set():
                writer.write(answer())
            elif when == "with the answer":
                writer.write(answer() + stray)
                stray_sent.set()
            else:
                writer.write(answer())
                await writer.drain()
                await first_read.wait()
                writer.write(stray)
                stray_sent.set()
            await writer.drain()

    async with serve(stray_408) as server, client() as http:
        assert (await http.get(server.url)).status_code == 200
        first_read.set()
        with anyio.fail_after(5):
            await stray_sent.wait()
        await asyncio.sleep(0)  # a loop pass: the stray bytes reach the idle connection
        assert (await http.get(server.url)).status_code == 200
    assert server.connections == 2


async def test_connection_close_is_honoured() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(extra="Connection: close\r\n"))
        await writer.drain()

    async with serve(closing) as server, client() as http:
        for _ in range(3):
            assert (await http.get(server.url)).text == "ok"
    assert server.connections == 3


async def test_an_unread_body_already_received_leaves_the_connection_reusable() -> None:
    """The Maxroll client closes error answers (404, 500) without reading their bodies, and a
    304 has none: when the whole answer is already in, its connection is kept."""

    async def errors(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"not here", status="404 Not Found"))  # one write: one segment
            await writer.drain()
            await read_request(reader)
            writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')
            await writer.drain()

    async with serve(errors) as server, client() as http:
        for _ in range(3):
            async with http.stream("GET", server.url) as response:
                assert response.status_code == 404
            async with http.stream("GET", server.url) as response:
                assert response.status_code == 304
    assert server.connections == 1


async def test_a_large_body_arrives_whole() -> None:
    body = bytes(range(256)) * 12_000  # 3 MB: reading pauses and resumes on the way

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(body))
        await writer.drain()

    async with serve(large) as server, client() as http:
        response = await http.get(server.url)
    assert response.content == body


async def test_a_chunked_body_arrives_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"chunked ", b"world"):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(chunked) as server, client() as http:
        assert (await http.get(server.url)).text == "hello chunked world"


async def test_errors_are_the_httpx_exceptions_callers_classify() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()

    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()

    refused = await asyncio.start_server(keep_alive, "127.0.0.1", 0)
    port = refused.sockets[0].getsockname()[1]
    refused.close()
    await refused.wait_closed()
    async with client(read=0.2) as http:
        with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
            await http.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://127.0.0.1/")
        async with serve(silent) as server:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url)
        async with serve(garbage) as server:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)
        async with serve(truncated) as server:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await http.get(server.url)
            assert server.connections == 1


async def test_waiting_for_a_free_connection_times_out_as_a_pool_timeout() -> None:
    async with serve(keep_alive) as server, client(max_connections=1, pool=0.2) as http:
        async with http.stream("GET", server.url) as held:  # holds the only connection
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.url)
            await held.aread()
        assert (await http.get(server.url)).status_code == 200  # free again


async def test_a_cancelled_request_frees_its_connection_slot() -> None:
    answered = asyncio.Event()

    async def never_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if not answered.is_set():
            answered.set()
            await asyncio.sleep(30)  # the first request never gets an answer
        writer.write(answer())
        await writer.drain()

    async with serve(never_first) as server, client(max_connections=1, pool=2) as http:
        request = asyncio.create_task(http.get(server.url))
        with anyio.fail_after(5):
            await answered.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert (await http.get(server.url)).text == "ok"
    assert server.connections == 2  # the cancelled one's connection was not reused


async def test_closing_the_client_closes_its_idle_connections() -> None:
    eof = asyncio.Event()

    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()
        assert await reader.read() == b""
        eof.set()

    async with serve(until_eof) as server:
        async with client() as http:
            await http.get(server.url)
        with anyio.fail_after(5):
            await eof.wait()


async def test_https_with_a_trusted_certificate(tmp_path: Path) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    async with serve(keep_alive, server_context) as server:
        transport = H11Transport(ssl_context=trusted, max_connections=2)
        async with httpx.AsyncClient(transport=transport) as http:
            texts = [(await http.get(f"{server.url}/{n}")).text for n in range(2)]
        assert texts == ["you asked /0", "you asked /1"]
        assert server.connections == 1
        # The default trust store does not know this authority.
        async with client() as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(server.url)
