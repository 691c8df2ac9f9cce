"""The shared HTTP client: its pool notices connections the server closed, cheaply."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import anyio

from d3_item_salvager.maxroll.http import build_http_client, socket_readable
from tests.conftest import make_config


def test_socket_readable_sees_data_a_closed_peer_and_a_closed_socket() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert not socket_readable(ours)
        theirs.sendall(b"x")
        assert socket_readable(ours)
        ours.recv(1)
        theirs.close()
        assert socket_readable(ours)  # the b"" of a peer that closed
    finally:
        ours.close()
    assert socket_readable(ours)  # closed here: fileno() is -1


async def test_a_keep_alive_connection_the_server_closed_is_replaced(tmp_path: Path) -> None:
    """The server answers, then closes the connection without saying so; the next request must
    notice (the pool's readability check) and use a new connection instead of failing."""
    connections = 0
    closed = asyncio.Event()

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config(tmp_path)
    async with server, build_http_client(config.maxroll) as http:
        first = await http.get(f"http://127.0.0.1:{port}/a")
        with anyio.fail_after(5):
            await closed.wait()  # on loopback the FIN has reached our socket once close is done
        second = await http.get(f"http://127.0.0.1:{port}/b")
    assert (first.text, second.text) == ("ok", "ok")
    assert connections == 2
