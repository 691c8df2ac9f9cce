"""A connection's switch of a new SQLite file to WAL waits for another writer instead of failing.

On a new file the switch writes the header and SQLite answers "database is locked" at once,
without its busy handler, while another connection holds the write lock: two processes opening
the same new index (or job store) at once. Here another connection holds the lock until the
connecting one has been refused once and tries again, so the order is fixed, not left to timing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.data.dialects import create_sqlite_engine, sqlite_pragmas

WAL_PRAGMA = "PRAGMA journal_mode = WAL"


@dataclass
class WriterOnNewFile:
    """Another connection holding the write lock of a new file until told to let go."""

    path: Path
    let_go: threading.Event = field(default_factory=threading.Event)
    wal_attempts: int = 0

    def trace(self, statement: str) -> None:
        """Trace callback of the connecting side: a second WAL attempt means it was refused."""
        if statement == WAL_PRAGMA:
            self.wal_attempts += 1
            if self.wal_attempts == 2:
                self.let_go.set()

    def journal_mode(self) -> str:
        with closing(sqlite3.connect(self.path)) as connection:
            return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[WriterOnNewFile]:
    holder = WriterOnNewFile(tmp_path / "new.sqlite")
    acquired = threading.Event()

    def hold() -> None:
        with closing(sqlite3.connect(holder.path, isolation_level=None)) as connection:
            connection.execute("BEGIN IMMEDIATE")
            acquired.set()
            holder.let_go.wait(30)
            connection.execute("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    assert acquired.wait(10)
    try:
        yield holder
    finally:
        holder.let_go.set()
        thread.join()


def test_a_sync_connection_waits_for_the_writer_to_switch_a_new_file(
    writer: WriterOnNewFile,
) -> None:
    """The job store's engines (pysqlite): connecting waits instead of 'database is locked'."""
    engine: Engine = create_engine(f"sqlite:///{writer.path}")

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(writer.trace)

    event.listen(engine, "connect", trace)
    event.listen(engine, "connect", sqlite_pragmas(30))
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
    assert writer.wal_attempts >= 2  # it was refused at least once, and waited
    assert writer.journal_mode() == "wal"


async def test_an_async_connection_waits_for_the_writer_to_switch_a_new_file(
    writer: WriterOnNewFile,
) -> None:
    """The index's engines (aiosqlite): connecting waits, off the event loop's thread."""
    engine: AsyncEngine = create_sqlite_engine(
        f"sqlite+aiosqlite:///{writer.path}", busy_timeout_seconds=30
    )

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(lambda driver: driver.set_trace_callback(writer.trace))

    event.listen(engine.sync_engine, "connect", trace, insert=True)
    try:
        with anyio.fail_after(60):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert writer.wal_attempts >= 2
    assert writer.journal_mode() == "wal"
