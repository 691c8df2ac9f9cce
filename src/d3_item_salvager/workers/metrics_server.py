"""The Prometheus text endpoint on `metrics.port`, served only while this process leads.

Several processes may embed the runtime with one configuration (`uvicorn --workers 2`): the lease
holder binds the port, the others do not, and a new leader binds it when it takes over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_wsgi_server

from d3_item_salvager.config import MetricsConfig
from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)


class MetricsServer:
    """Starts and stops a loopback WSGI server for one registry; at most one at a time."""

    def __init__(self, settings: MetricsConfig, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Bind the port; on failure keep the reason in `error` and log it (never raise)."""
        if self._server is not None:
            return
        settings = self._settings
        try:
            self._server, self._thread = start_wsgi_server(
                settings.port or 0, addr=settings.host, registry=self._registry
            )
        except OSError as exc:
            self.error = (
                f"metrics.port = {settings.port}: cannot listen on {settings.host} ({exc.strerror})"
            )
            _log.error("%s", self.error)
            return
        self.error = None
        self.url = f"http://{settings.host}:{self._server.server_port}/metrics"
        _log.info("serving metrics", extra={"url": self.url})

    def stop(self) -> Callable[[], None]:
        """Forget the server at once (a new `start` may follow) and return what closes it: a
        blocking call (up to half a second, its thread joined) for a worker thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        self.url = None

        def close() -> None:
            if server is None:
                return
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join(5)
            _log.info("metrics server stopped")

        return close
