"""A fake Maxroll speaking real HTTP on 127.0.0.1, serving a `Site`, with fault injection.

It runs in its own threads (stdlib ThreadingHTTPServer), so the code under test talks to it
exactly as to the real site: sockets, headers, status codes, ETags and 304s, resets, timeouts.

    async with FakeMaxroll() as maxroll:        # or `with FakeMaxroll() as maxroll:`
        config = maxroll.config(tmp_path)       # an AppConfig pointing here
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio.to_thread

from d3_item_salvager.config import AppConfig, load_config
from d3_item_salvager.testing._editing import SiteEditing
from d3_item_salvager.testing.fake_site import Site, build_site

SEARCH_PATH = "/indexes/wp_posts_1/search"
PROFILE_PREFIX = "/profiles/load/d3/"
ITEM_DATA_PATH = "/d3planner/data.json"
GUIDE_PREFIX = "/d3/guides/"
CONTROL_TOUCH = "/_control/touch/"


@dataclass(frozen=True)
class Fault:
    """One injected failure for one request.

    status: answer with this status (and `body`); retry_after: its Retry-After header;
    delay: sleep this long before answering; reset: close the connection without answering;
    truncate: declare the full length but send only half the body; body: replace the body.
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    reset: bool = False
    truncate: bool = False
    body: bytes | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class FakeMaxroll(SiteEditing):
    """A fake Maxroll: the site it serves, queued faults, and what it was asked.

    Serves while inside `with` or `async with`. `site` defaults to `build_site()` (five guides);
    `fault_hook=RandomTransientFaults(rate)` makes requests fail transiently at random.
    """

    site: Site = field(default_factory=build_site)
    token: str = "test-token-123"
    latency: float = 0.0
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    fault_hook: Callable[[str, str], Fault | None] | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    base_url: str = ""
    estimated_total: int | None = None  # what estimatedTotalHits says; default: a bit high
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    # Serving

    def start(self) -> None:
        """Listen on a free loopback port and serve from a thread; sets `base_url`."""
        if self._server is not None:
            raise RuntimeError("the fake Maxroll is already serving")
        server = self._server = _Server(self)
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (blocks until the serving thread ends)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Stopping waits for the serving thread: keep that wait off the event loop.
        await anyio.to_thread.run_sync(self.stop)

    # Set-up from tests

    def fail(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests to `path` (one fault per request)."""
        with self.lock:
            self.faults.setdefault(path, deque()).extend(faults)

    def config_values(self) -> dict[str, Any]:
        """The `maxroll` config section that points the client here."""
        return {
            "search_url": self.base_url + SEARCH_PATH,
            "site_url": self.base_url,
            "planner_profile_url": self.base_url + PROFILE_PREFIX + "{planner_id}",
            "item_data_url": self.base_url + ITEM_DATA_PATH,
            "bearer_token": self.token,
        }

    def config(self, home: Path | str, **sections: Any) -> AppConfig:
        """A config for tests: Maxroll here, every file under `home`, no environment.

        Retries do not wait, and stopping gives running jobs 5 s. `sections` override settings
        as in `load_config`, e.g. `scheduler={"jobs": {"cleanup_logs": {"enabled": False}}}`.
        """
        if not self.base_url:
            raise RuntimeError("start the fake Maxroll (with/async with) before asking its config")
        defaults: dict[str, Any] = {
            "maxroll": {
                **self.config_values(),
                "retry_initial_backoff_seconds": 0,
                "retry_max_backoff_seconds": 0,
                "request_timeout_seconds": 10,
            },
            "scheduler": {"shutdown_timeout_seconds": 5},
        }
        return load_config(overrides=defaults, environment=False, home=home, **sections)

    # Reading what happened

    def paths(self, method: str | None = None) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def count(self, prefix: str, status: int | None = None) -> int:
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.path.startswith(prefix) and (status is None or r.status == status)
            )

    def counts(self) -> dict[str, int]:
        """Requests answered so far, by kind: search, guide, profile, data (data.json)."""
        prefixes = {
            "search": SEARCH_PATH,
            "guide": GUIDE_PREFIX,
            "profile": PROFILE_PREFIX,
            "data": ITEM_DATA_PATH,
        }
        return {kind: self.count(prefix) for kind, prefix in prefixes.items()}

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0

    def next_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(path)
            if queue:
                return queue.popleft()
        return self.fault_hook(method, path) if self.fault_hook else None

    # Serving

    def respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for a request (no faults)."""
        if method == "POST" and path.startswith(CONTROL_TOUCH):
            # Benchmarks drive a fake in another process: mark a guide as modified.
            self.site.guides[int(path.removeprefix(CONTROL_TOUCH))].modified_unix += 1
            return 204, {}, b""
        if method == "POST" and path == SEARCH_PATH:
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, {}, b'{"message":"invalid token"}'
            query = json.loads(body or b"{}")
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 20))
            hits = self.site.search_hits()
            page = {
                "hits": hits[offset : offset + limit],
                "query": "",
                "processingTimeMs": 1,
                "limit": limit,
                "offset": offset,
                "estimatedTotalHits": (
                    len(hits) + 7 if self.estimated_total is None else self.estimated_total
                ),
                "facetDistribution": {},
                "facetStats": {},
            }
            return 200, {"content-type": "application/json"}, json.dumps(page).encode()
        if method != "GET":
            return 405, {}, b""
        document: bytes | None = None
        if path == ITEM_DATA_PATH:
            document = self.site.item_data()
        elif path.startswith(PROFILE_PREFIX):
            planner = self.site.planners.get(path.removeprefix(PROFILE_PREFIX))
            document = planner.document() if planner else None
        elif path.startswith(GUIDE_PREFIX):
            guide = self.site.guide_by_slug(path.removeprefix(GUIDE_PREFIX))
            document = self.site.guide_page(guide).encode() if guide else None
        if document is None:
            return 404, {}, b"not found"
        etag = '"' + hashlib.sha1(document).hexdigest() + '"'
        if headers.get("if-none-match") == etag:
            return 304, {"etag": etag}, b""
        return 200, {"etag": etag, "content-type": "application/octet-stream"}, document


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body would wait
    # for the client's delayed ACK (about 40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        request_body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        path = self.path
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.latency:
                time.sleep(fake.latency)
            fault = fake.next_fault(self.command, path)
            if fault and fault.delay:
                time.sleep(fault.delay)
            if fault and fault.reset:
                status = -1
                self._record(path, headers, status)
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.close_connection = True
                return
            status, extra, body = fake.respond(self.command, path, headers, request_body)
            if fault and fault.status is not None:
                status, extra = fault.status, {}
                body = fault.body if fault.body is not None else b"fault"
                if fault.retry_after is not None:
                    extra["retry-after"] = fault.retry_after
            elif fault and fault.body is not None:
                status, body = 200, fault.body  # a replaced body is a fresh 200, never a 304
            # Recorded before answering, so a client that has its answer sees the record.
            self._record(path, headers, status)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if fault and fault.truncate:
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            else:
                self.wfile.write(body)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def _record(self, path: str, headers: dict[str, str], status: int) -> None:
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(RecordedRequest(self.command, path, headers, status))

    do_GET = _handle
    do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Injected resets make clients hang up mid-request; that is expected, not an error."""

    def __init__(self, fake: FakeMaxroll) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


@contextmanager
def serve(site: Site, **options: Any) -> Iterator[FakeMaxroll]:
    """Run a fake Maxroll on a free loopback port for the duration of the block."""
    with FakeMaxroll(site=site, **options) as fake:
        yield fake


TRANSIENT_FAULTS = (
    Fault(status=429, retry_after="0"),
    Fault(status=500),
    Fault(status=502),
    Fault(status=503, retry_after="0"),
    Fault(reset=True),
    Fault(truncate=True),
)


class RandomTransientFaults:
    """A fault hook: each request fails transiently with probability `rate`.

    Decisions come from a seeded hash of (path, attempt number), so a run is reproducible
    whatever order the requests arrive in; at most `max_in_a_row` consecutive faults hit one path,
    so a client with more retry attempts than that always gets through.
    """

    def __init__(self, rate: float, *, seed: int = 1, max_in_a_row: int = 3) -> None:
        self.rate = rate
        self.seed = seed
        self.max_in_a_row = max_in_a_row
        self.attempts: dict[str, int] = {}
        self.in_a_row: dict[str, int] = {}
        self.injected: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str) -> Fault | None:
        with self._lock:
            attempt = self.attempts.get(path, 0)
            self.attempts[path] = attempt + 1
            digest = hashlib.sha256(f"{self.seed}:{method}:{path}:{attempt}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
            if draw >= self.rate or self.in_a_row.get(path, 0) >= self.max_in_a_row:
                self.in_a_row[path] = 0
                return None
            self.in_a_row[path] = self.in_a_row.get(path, 0) + 1
            fault = TRANSIENT_FAULTS[digest[8] % len(TRANSIENT_FAULTS)]
            kind = (
                f"HTTP {fault.status}"
                if fault.status
                else "reset"
                if fault.reset
                else "truncated body"
            )
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return fault

    @property
    def total(self) -> int:
        return sum(self.injected.values())
