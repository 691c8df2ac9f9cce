"""The fake Maxroll in a child process, so its threads do not share the benchmark's GIL."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from d3_item_salvager.testing.fake_maxroll import serve
from d3_item_salvager.testing.fake_site import build_site


def _serve(
    site_options: dict[str, Any], latency: float, pipe: multiprocessing.connection.Connection
) -> None:
    with serve(build_site(**site_options)) as fake:
        fake.latency = latency
        pipe.send(fake.config_values())
        while True:
            command = pipe.recv()
            if command == "stop":
                return
            if command == "reset":
                fake.reset_log()
            pipe.send(
                {
                    "requests": len(fake.requests),
                    "paths": fake.paths(),
                    "statuses": [r.status for r in fake.requests],
                }
            )


@contextmanager
def fake_maxroll_process(site_options: dict[str, Any], latency: float) -> Iterator[RemoteFake]:
    """Start the fake in a child process; yields a handle with its config and request log."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(site_options, latency, child), daemon=True
    )
    process.start()
    try:
        yield RemoteFake(parent, parent.recv())
    finally:
        parent.send("stop")
        process.join(10)


class RemoteFake:
    """What the benchmark can ask of the fake in the child process."""

    def __init__(self, pipe: multiprocessing.connection.Connection, values: dict[str, Any]) -> None:
        self._pipe = pipe
        self.config_values = values
        self.base_url = values["site_url"]

    def log(self, reset: bool = False) -> dict[str, Any]:
        """Requests so far (then clears the log when reset)."""
        self._pipe.send("log")
        result: dict[str, Any] = self._pipe.recv()
        if reset:
            self._pipe.send("reset")
            self._pipe.recv()
        return result

    def touch_guide(self, index: int) -> None:
        httpx.post(f"{self.base_url}/_control/touch/{index}")
