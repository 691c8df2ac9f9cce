"""The Maxroll client's HTTP contracts, over real sockets on 127.0.0.1.

Each test runs a small asyncio server whose handler plays one server behaviour (a keep-alive
server, one that hangs up, one that sends a stray "408", a proxy, TLS, ...) and counts what it
received, then asks the `MaxrollClient` built as the application builds it (httpx2's own
transport) and checks what the client promises: nothing is sent twice unless the client's
retry policy decided it and counted it; failures are classified and name the host and port;
only our error types leave the client; proxies from the environment and HTTPS work; the
response size cap holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from d3_item_salvager.errors import FetchError, TransientFetchError
from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.http import build_http_client
from tests.conftest import make_config

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[["Server", Reader, Writer], Awaitable[None]]

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass
class Server:
    """What a test server saw: connections accepted and request heads read."""

    url: str = ""
    host_port: str = ""
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.heads)

    async def read_request(self, reader: Reader) -> bytes:
        """One request head (and the POST's body), counted; raises IncompleteReadError at EOF."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    state = Server()

    async def counted(reader: Reader, writer: Writer) -> None:
        state.connections += 1
        try:
            await handler(state, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(counted, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    state.host_port = f"127.0.0.1:{port}"
    state.url = f"{'https' if ssl_context else 'http'}://{state.host_port}"
    async with server:
        yield state


def answer(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def path_of(head: bytes) -> bytes:
    return head.split(b" ")[1]


async def keep_alive(server: Server, reader: Reader, writer: Writer) -> None:
    """Answers every request on a connection with the path it asked for."""
    while True:
        head = await server.read_request(reader)
        writer.write(answer(b"you asked " + path_of(head)))
        await writer.drain()


def client_for(tmp_path: Path, url: str, **settings: Any) -> tuple[Any, Any]:
    """The application's HTTP client and a MaxrollClient whose four endpoints are on `url`."""
    values = {
        "search_url": f"{url}/search",
        "site_url": url,
        "planner_profile_url": url + "/profiles/{planner_id}",
        "item_data_url": f"{url}/data.json",
        "bearer_token": "test-token",
        "request_timeout_seconds": 5,
        "retry_attempts": 3,
    } | settings
    config = make_config(tmp_path, maxroll=values)
    http = build_http_client(config.maxroll)
    return http, MaxrollClient(http, config.maxroll)


@pytest.fixture
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable of the developer's shell applies (tests set their own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


@pytest.fixture(autouse=True)
def _direct(no_proxy_settings: pytest.MonkeyPatch) -> None:
    """Every test here talks to its server directly unless it sets a proxy itself."""


# Keep-alive, and nothing sent twice behind the retry policy's back


async def test_requests_reuse_one_kept_alive_connection(tmp_path: Path) -> None:
    """Five requests in a row travel on one connection, each answered with its own document."""
    async with serve(keep_alive) as server:
        http, client = client_for(tmp_path, server.url)
        async with http:
            bodies = [(await client.planner_profile(str(n))).body for n in range(5)]
    assert bodies == [f"you asked /profiles/{n}".encode() for n in range(5)]
    assert server.connections == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_the_server_hangs_up_on_is_repeated_only_by_the_retry_policy(
    tmp_path: Path, method: str
) -> None:
    """The server reads the second request on a kept connection and closes without answering
    (its keep-alive timeout fell just then): the client's policy retries it once and counts it;
    the server receives exactly the requests the client counted."""

    async def one_answer_on_the_first_connection(
        server: Server, reader: Reader, writer: Writer
    ) -> None:
        first_connection = server.connections == 1
        await server.read_request(reader)
        writer.write(answer())
        await writer.drain()
        if first_connection:
            await server.read_request(reader)  # then hang up
            return
        await keep_alive(server, reader, writer)

    async with serve(one_answer_on_the_first_connection) as server:
        http, client = client_for(tmp_path, server.url)
        async with http:
            await client.item_data()
            if method == "GET":
                assert (await client.item_data()).body == b"ok"
            else:
                assert await client.search_page(0, 21) == b"ok"
    assert (server.requests, client.stats.requests, client.stats.retries) == (3, 3, 1)
    assert server.connections == 2


async def test_a_connection_attempt_is_never_repeated_below_the_client(tmp_path: Path) -> None:
    """A connection that fails (the server hangs up during the TLS handshake) is tried once per
    attempt of the client's policy: the transport's own connection retries stay off."""

    async def hang_up(server: Server, reader: Reader, writer: Writer) -> None:
        return  # before the handshake: the client's TLS hello meets the end of the stream

    async with serve(hang_up) as server:
        url = server.url.replace("http:", "https:")
        http, client = client_for(tmp_path, url, retry_attempts=2)
        async with http:
            with pytest.raises(TransientFetchError, match=f"connection to {server.host_port}"):
                await client.item_data()
    assert (server.connections, client.stats.requests, client.stats.retries) == (2, 2, 1)


# A stale 408


@pytest.mark.parametrize(
    "when", ["while idle", "as the answer", "right behind an answer", "behind an answer, kept open"]
)
async def test_a_stale_408_is_retried_and_never_taken_as_an_answer(
    tmp_path: Path, when: str
) -> None:
    """A "408 Request Timeout" a server sends as it gives up on a kept-alive connection (while
    idle, as the answer to the request that arrived just then, or glued behind an answer) is
    retried and counted when the client read it (RFC 9110 lets it repeat the request), and every
    document the client returns is the one it asked for."""
    stray = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    if when == "behind an answer, kept open":  # a server that forgot to say it closes
        stray = stray.replace(b"Connection: close\r\n", b"")
    idle = asyncio.Event()
    stray_sent = asyncio.Event()

    async def stale_408(server: Server, reader: Reader, writer: Writer) -> None:
        if server.connections > 1:
            await keep_alive(server, reader, writer)
            return
        head = await server.read_request(reader)
        reply = answer(b"you asked " + path_of(head))
        if when == "behind an answer, kept open":
            writer.write(reply + stray)
            # The request the 408 was taken for, then (if the connection is used again) its
            # retry: both answered at once, so a client reading on would take the first answer
            # for the retry and the second for whatever it asks next.
            heads = [await server.read_request(reader), await server.read_request(reader)]
            writer.write(b"".join(answer(b"you asked " + path_of(h)) for h in heads))
            await keep_alive(server, reader, writer)
            return
        if when == "right behind an answer":
            stray_sent.set()
            await keep_alive(server, reader, writer)  # answers what still comes on it
            return
        writer.write(reply)
        await writer.drain()
        if when == "while idle":
            await idle.wait()
            writer.write(stray)
            await writer.drain()
            stray_sent.set()
            await keep_alive(server, reader, writer)
            return
        await server.read_request(reader)  # "as the answer": the 408 crosses this request
        writer.write(stray)
        stray_sent.set()

    async with serve(stale_408) as server:
        http, client = client_for(tmp_path, server.url)
        async with http:
            first = await client.planner_profile("1")
            idle.set()
            if when == "while idle":
                with anyio.fail_after(5):
                    await stray_sent.wait()
            bodies = [(await client.planner_profile(str(n))).body for n in (2, 3, 4)]
    assert first.body == b"you asked /profiles/1"
    assert bodies == [f"you asked /profiles/{n}".encode() for n in (2, 3, 4)]
    assert server.requests == client.stats.requests
    assert client.stats.retries == client.stats.requests - 4


# Classification and messages


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        ("408 Request Timeout", True),
        ("429 Too Many Requests", True),
        ("500 Internal Server Error", True),
        ("502 Bad Gateway", True),
        ("503 Service Unavailable", True),
        ("400 Bad Request", False),
        ("403 Forbidden", False),
        ("410 Gone", False),
        ("418 I'm a teapot", False),
    ],
)
async def test_statuses_are_transient_or_permanent(
    tmp_path: Path, status: str, transient: bool
) -> None:
    """408, 429 and 5xx are retried (each retry counted); other 4xx fail at once."""

    async def always(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer(b"no", status=status))
            await writer.drain()

    async with serve(always) as server:
        http, client = client_for(tmp_path, server.url, retry_attempts=2)
        async with http:
            with pytest.raises(FetchError, match=f"HTTP {status.split()[0]}") as caught:
                await client.item_data()
    assert isinstance(caught.value, TransientFetchError) is transient
    assert server.requests == client.stats.requests == (2 if transient else 1)


async def test_failures_below_http_are_transient_and_name_host_and_port(tmp_path: Path) -> None:
    """A refused connection, a read timeout and a reset are transient, and each message names
    the host and port the client could not get an answer from."""

    async def silent(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        await asyncio.sleep(30)

    async def reset(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.transport.abort()

    refused = await asyncio.start_server(keep_alive, "127.0.0.1", 0)  # type: ignore[arg-type]
    port = refused.sockets[0].getsockname()[1]
    refused.close()
    await refused.wait_closed()
    http, client = client_for(tmp_path, f"http://127.0.0.1:{port}", retry_attempts=1)
    async with http:
        with pytest.raises(TransientFetchError, match=f"connection to 127.0.0.1:{port} failed"):
            await client.item_data()
    for handler, expected in ((silent, "timed out waiting for"), (reset, "connection to")):
        async with serve(handler) as server:
            settings = {"retry_attempts": 1, "request_timeout_seconds": 0.2}
            http, client = client_for(tmp_path, server.url, **settings)
            async with http:
                with pytest.raises(TransientFetchError, match=f"{expected} {server.host_port}"):
                    await client.item_data()


def _garbage(data: bytes) -> Handler:
    async def send(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(data)
        await writer.drain()

    return send


MISBEHAVIOURS = {
    "not HTTP": b"this is not HTTP\r\n\r\n",
    "a bad status line": b"HTTP/1.1 two hundred OK\r\n\r\n",
    "a header without a colon": b"HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "a body cut short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
    "a bad chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n",
    "a broken gzip body": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    "an HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "nothing": b"",
}


@pytest.mark.parametrize("misbehaviour", sorted(MISBEHAVIOURS))
async def test_no_library_exception_leaves_the_client(tmp_path: Path, misbehaviour: str) -> None:
    """Whatever a server sends, the caller sees one of our error types naming the URL."""
    async with serve(_garbage(MISBEHAVIOURS[misbehaviour])) as server:
        http, client = client_for(tmp_path, server.url, retry_attempts=1)
        async with http:
            with pytest.raises(FetchError) as caught:
                await client.item_data()
    assert type(caught.value).__module__ == "d3_item_salvager.errors"
    assert f"{server.url}/data.json" in str(caught.value)


async def test_no_library_exception_leaves_the_client_on_tls_mismatches(tmp_path: Path) -> None:
    """TLS spoken to a plain server, and plain HTTP to a TLS one, end in our error types."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    async with serve(keep_alive) as plain, serve(keep_alive, server_context) as tls:
        for url in (plain.url.replace("http:", "https:"), tls.url.replace("https:", "http:")):
            http, client = client_for(tmp_path, url, retry_attempts=1)
            async with http:
                with pytest.raises(FetchError) as caught:
                    await client.item_data()
            assert type(caught.value).__module__ == "d3_item_salvager.errors"


# The size cap


@pytest.mark.parametrize("framing", ["declared", "chunked", "gzip"])
async def test_the_size_cap_holds_however_the_body_is_framed(tmp_path: Path, framing: str) -> None:
    """A body over max_response_bytes fails for good, whether its length is declared, unknown
    (chunked) or only known once decompressed, and the next request is still served."""
    big = b"x" * 5000

    async def large_then_small(server: Server, reader: Reader, writer: Writer) -> None:
        while True:
            head = await server.read_request(reader)
            if path_of(head) != b"/data.json":
                writer.write(answer(b"small"))
            elif framing == "declared":
                writer.write(answer(big))
            elif framing == "gzip":
                writer.write(answer(gzip.compress(big), extra="Content-Encoding: gzip\r\n"))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for start in range(0, len(big), 1000):
                    writer.write(b"3e8\r\n" + big[start : start + 1000] + b"\r\n")
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with serve(large_then_small) as server:
        http, client = client_for(tmp_path, server.url, max_response_bytes=1000)
        async with http:
            with pytest.raises(FetchError, match="over the 1000-byte limit") as caught:
                await client.item_data()
            assert (await client.planner_profile("1")).body == b"small"
    assert not isinstance(caught.value, TransientFetchError)
    assert server.requests == 2


# HTTPS and proxies


def _trusted_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for 127.0.0.1, and the file of the CA that issued it."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return server_context, ca_file


async def test_https_with_the_ca_named_by_ssl_cert_file(
    tmp_path: Path, no_proxy_settings: pytest.MonkeyPatch
) -> None:
    """HTTPS works with keep-alive when SSL_CERT_FILE names the CA; without it the server's
    certificate is refused as a transient failure naming the reason."""
    server_context, ca_file = _trusted_server(tmp_path)
    async with serve(keep_alive, server_context) as server:
        no_proxy_settings.setenv("SSL_CERT_FILE", str(ca_file))
        http, client = client_for(tmp_path, server.url)
        async with http:
            bodies = [(await client.planner_profile(str(n))).body for n in range(2)]
        assert bodies == [b"you asked /profiles/0", b"you asked /profiles/1"]
        assert server.connections == 1
        no_proxy_settings.delenv("SSL_CERT_FILE")
        no_proxy_settings.delenv("SSL_CERT_DIR", raising=False)
        http, client = client_for(tmp_path, server.url, retry_attempts=1)
        async with http:
            with pytest.raises(TransientFetchError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.item_data()


@dataclass
class Proxy:
    """A forwarding HTTP proxy: absolute-form requests relayed, CONNECT tunnelled."""

    seen: list[str] = field(default_factory=list)

    async def handle(self, server: Server, reader: Reader, writer: Writer) -> None:
        upstream: tuple[Reader, Writer] | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, rest = head.split(b" ", 2)
                self.seen.append(f"{method.decode()} {target.decode()}")
                if method == b"CONNECT":
                    host, port = target.decode().rsplit(":", 1)
                    upstream = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await self._tunnel((reader, writer), upstream)
                    return
                scheme_host, _, path = target.decode().removeprefix("http://").partition("/")
                host, port = scheme_host.rsplit(":", 1)
                upstream = upstream or await asyncio.open_connection(host, int(port))
                upstream[1].write(method + b" /" + path.encode() + b" " + rest)
                await self._relay_answer(upstream[0], writer)
        finally:
            if upstream is not None:
                upstream[1].close()

    @staticmethod
    async def _relay_answer(reader: Reader, writer: Writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        writer.write(head + await reader.readexactly(length))
        await writer.drain()

    @staticmethod
    async def _tunnel(one: tuple[Reader, Writer], other: tuple[Reader, Writer]) -> None:
        async def pipe(source: Reader, sink: Writer) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        async with anyio.create_task_group() as group:
            group.start_soon(pipe, one[0], other[1])
            group.start_soon(pipe, other[0], one[1])


async def test_proxies_from_the_environment_carry_http_and_https(
    tmp_path: Path, no_proxy_settings: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY relays plain requests, HTTPS_PROXY tunnels TLS ones (CONNECT), and NO_PROXY
    sends a host's requests directly."""
    proxy = Proxy()
    server_context, ca_file = _trusted_server(tmp_path)
    async with (
        serve(proxy.handle) as proxy_server,
        serve(keep_alive) as plain,
        serve(keep_alive, server_context) as tls,
    ):
        no_proxy_settings.setenv("HTTP_PROXY", proxy_server.url)
        no_proxy_settings.setenv("HTTPS_PROXY", proxy_server.url)
        no_proxy_settings.setenv("SSL_CERT_FILE", str(ca_file))
        for server in (plain, tls):
            http, client = client_for(tmp_path, server.url)
            async with http:
                bodies = [(await client.planner_profile(str(n))).body for n in range(2)]
            assert bodies == [b"you asked /profiles/0", b"you asked /profiles/1"]
        assert proxy.seen == [
            f"GET {plain.url}/profiles/0",
            f"GET {plain.url}/profiles/1",
            f"CONNECT {tls.host_port}",
        ]
        assert tls.requests == 2  # both inside the one tunnel

        no_proxy_settings.setenv("NO_PROXY", "127.0.0.1")
        http, client = client_for(tmp_path, plain.url)
        async with http:
            await client.item_data()
        assert len(proxy.seen) == 3  # directly, not through the proxy
        assert plain.heads[-1].startswith(b"GET /data.json ")


async def test_a_proxy_that_refuses_is_a_transient_failure(
    tmp_path: Path, no_proxy_settings: pytest.MonkeyPatch
) -> None:
    """A proxy answering CONNECT with 403 fails the request as transient, in our error type."""

    async def refusing(server: Server, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(b"no", status="403 Forbidden"))
        await writer.drain()

    async with serve(refusing) as proxy_server:
        no_proxy_settings.setenv("HTTPS_PROXY", proxy_server.url)
        http, client = client_for(tmp_path, "https://127.0.0.1:9", retry_attempts=1)
        async with http:
            with pytest.raises(TransientFetchError, match="ProxyError"):
                await client.item_data()
