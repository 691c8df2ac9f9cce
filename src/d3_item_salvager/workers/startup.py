"""Start-up work kept off the host's event loop, and the opt-in GC freeze.

A host embedding `WorkerRuntime` keeps serving while the runtime starts, so nothing the runtime
does on the loop may block it for long. Creating or upgrading the index schema (Alembic, SQLAlchemy
reflection) is Python work of 100 ms and more on a new database; it runs here on a loop of its own
in a worker thread, so the runtime's own engine then finds the schema current (two small reads).
The HTTP client (its SSL context) is built in a thread by its resource (maxroll/http.py), and the
job store is opened in one by its own (job_store.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sqlite3
import sys
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Self

import anyio.lowlevel

from d3_item_salvager.config import DatabaseConfig
from d3_item_salvager.data.dialects import switch_to_wal
from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)


async def prepare_off_loop(config: DatabaseConfig) -> None:
    """Create or upgrade the index schema in a worker thread (same errors as opening it).

    The hop uses asyncio's own executor: anyio's first call in a process imports its asyncio
    backend (~20 ms), which is done in that thread too rather than on the host's loop.
    """
    await asyncio.to_thread(asyncio.run, _prepare(config))


async def _prepare(config: DatabaseConfig) -> None:
    await anyio.lowlevel.checkpoint()  # imports anyio's asyncio backend off the host's loop
    if config.url.startswith("sqlite"):
        if config.sqlite_path is None:
            return  # an in-memory index lives only in its own engine's connection
        _switch_to_wal(config.sqlite_path, config.busy_timeout_seconds)
    async with asynccontextmanager(index_engine_resource)(config):
        pass


def _switch_to_wal(path: Path, busy_timeout_seconds: float) -> None:
    """Put a SQLite index in WAL mode, waiting up to the busy timeout for a writer holding it.

    The switch needs the file to itself, and SQLite answers "database is locked" at once rather
    than wait (see `switch_to_wal`), so the wait is done here, in this worker thread. Once in WAL
    mode (it persists) every later connection's pragma is a no-op and their writes wait for the
    lock as usual. On timeout or any other failure the normal open reports it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None)
    try:
        with suppress(sqlite3.OperationalError):
            switch_to_wal(connection, busy_timeout_seconds, time.sleep)
    finally:
        connection.close()


class GcFreeze:
    """`gc.freeze()` for a runtime that owns its process, undone only when that is harmless.

    Freezing at the start of start-up keeps the collections start-up triggers short (they no
    longer walk the host's and the imports' objects); freezing again at its end moves the
    runtime's long-lived objects out of the collector's reach too. `gc.unfreeze()` cannot tell
    whose objects it hands back, so on exit it runs only when nothing was frozen before the
    runtime started and nobody froze more since; otherwise everything stays frozen.
    """

    def __init__(self) -> None:
        self._host_frozen: int | None = None
        self._frozen_after_start = 0

    def __enter__(self) -> Self:
        self._host_frozen = gc.get_freeze_count()
        gc.freeze()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def end_of_start_up(self) -> None:
        gc.freeze()
        self._frozen_after_start = gc.get_freeze_count()

    def release(self) -> None:
        """On exit: hand the objects back to the collector when they are all ours to give."""
        if self._host_frozen is None:
            return
        if self._host_frozen == 0 and gc.get_freeze_count() <= self._frozen_after_start:
            gc.unfreeze()
        else:
            _log.debug(
                "objects stay frozen: the host froze some too",
                extra={"frozen_before_start": self._host_frozen},
            )


# glibc's mallopt parameter for the cap on malloc arenas (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` for this process; True when it was done.

    glibc gives threads that allocate at the same time heaps of their own ("arenas", up to 8 per
    core), and memory freed in one is reused by that arena only. With worker threads taking
    turns at every run's blocking work, RSS crept up by that fragmentation alone: malloc's
    memory in use stayed flat while its free memory grew (`python -m benchmarks.soak`). This is
    process-wide, so only for a process of our own (`run-scheduler`); an operator's
    `MALLOC_ARENA_MAX` wins, and elsewhere than glibc nothing is done.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc (musl): no arenas to cap
        return bool(libc.mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False
