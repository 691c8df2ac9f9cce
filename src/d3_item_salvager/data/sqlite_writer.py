"""Guide writes for a SQLite file index, on a thread that owns a connection, in group commits.

SQLite has one writer, so the sync's guide writes are serialised anyway. Through SQLAlchemy over
aiosqlite each guide cost ~12 ms of CPU on the event-loop thread (parameter processing, result
wrapping and a thread hand-off per statement, all on the loop); the same Core statements on a
synchronous SQLAlchemy connection (pysqlite), run on a dedicated thread, leave the loop free.

Group commit: guides that queue while a write is under way are written together, in one
transaction with a savepoint each, by one thread call. A sync at concurrency 16 spent most of
its time in these serialised writes; one commit for several guides writes the index pages they
share (the item index, mostly) to the WAL once instead of once per guide, and saves a thread
hand-off and a BEGIN/COMMIT per guide. Nothing waits to fill a group: a write that finds the
writer idle starts at once.

Semantics are those of `IndexRepository.write_guide`, guide by guide, with the same code: the
diff of guide_rows.py, which PostgreSQL runs too; the same `GuideChanges` counts; a guide's write
succeeds only once the transaction holding it has committed; a guide that fails rolls back to
its savepoint alone and gets its own `IndexDatabaseError`, the others are written. The
connection gets the pragmas every index connection has (busy timeout, WAL, foreign keys).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from d3_item_salvager.data.dialects import switch_to_wal
from d3_item_salvager.data.guide_rows import (
    GuideChanges,
    GuidePayload,
    ItemRow,
    guide_payload,
    write_guide_rows,
)
from d3_item_salvager.data.repository import database_error
from d3_item_salvager.errors import IndexDatabaseError
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

if TYPE_CHECKING:
    from d3_item_salvager.config import DatabaseConfig


# WAL pages between automatic checkpoints on the writer's connection (SQLite's default: 1,000).
WAL_CHECKPOINT_PAGES = 10_000

# The writer connection's page cache, in KiB (SQLite's default: 2,000). Each guide's usages land
# all over the item index; with 2 MB of cache a 3,000-guide index re-read those pages from the
# OS on every write (the writer's system CPU: 3.0 s against 1.6 s with 8 MB; CPU per guide of
# the whole sync 11.9-12.6 ms against 11.5). 16 MB gained no more and grew peak RSS by 17 MB
# from 200 to 1,000 guides; 8 MB grows it by 6 (memory is taken as pages are used, up to this).
WRITER_CACHE_KIB = 8_192

# At most this many guides in one transaction: enough to share most of the item index's pages,
# few enough that the write lock is held briefly (~2 ms of writing per guide) and that one
# guide's trouble never costs a long redo.
MAX_GROUP = 16

# Item rows the writer remembers at most; past it, it starts again (D3 has a few thousand items).
MAX_KNOWN_ITEMS = 50_000

_Outcome = GuideChanges | IndexDatabaseError
_Queued = tuple[GuidePayload, "asyncio.Future[GuideChanges]"]


class SqliteGuideWriter:
    """Writes guides to a SQLite file from one dedicated thread (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float) -> None:
        self._path = path
        self._busy_timeout_seconds = busy_timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        # Opened in the writer thread on first use (sqlite3 connections stay on their thread),
        # after the index engine has ensured the schema.
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        # Item rows known to be stored as they are, so guides using them skip reading them
        # back; touched in the writer thread only. Valid while no other connection commits:
        # SQLite's data_version says when one did (see _begin).
        self._known_items: dict[str, ItemRow] = {}
        self._data_version: int | None = None
        # Guides waiting for the group under way to finish; touched on the event loop only.
        self._queue: list[_Queued] = []
        self._group: asyncio.Future[list[_Outcome]] | None = None
        # Transactions committed or rolled back, and guides written: for tests and benchmarks.
        self.transactions = 0
        self.guides_written = 0

    async def write_guide(
        self,
        guide: GuideRecord,
        guide_builds: Iterable[BuildRecord],
        catalog: Mapping[str, CatalogItem],
        synced_at: datetime,
        *,
        kept_planners: Collection[str] = (),
    ) -> GuideChanges:
        """As `IndexRepository.write_guide`: this guide's builds and usages, committed.

        Cancelled before its group starts, the guide is not written; once its group has
        started, it is written (or fails) with the group.
        """
        payload = guide_payload(guide, guide_builds, catalog, synced_at, frozenset(kept_planners))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[GuideChanges] = loop.create_future()
        self._queue.append((payload, done))
        if self._group is None:
            self._start_group(loop)
        return await done

    @property
    def queued(self) -> int:
        """Guides waiting for the group under way (cancelled ones included until it ends)."""
        return len(self._queue)

    def _start_group(self, loop: asyncio.AbstractEventLoop) -> None:
        group = [(payload, done) for payload, done in self._queue[:MAX_GROUP] if not done.done()]
        del self._queue[:MAX_GROUP]
        if not group:
            if self._queue:
                self._start_group(loop)
            return
        payloads = [payload for payload, _ in group]
        written = loop.run_in_executor(self._executor, self._write_group, payloads)
        self._group = written

        def finished(future: asyncio.Future[list[_Outcome]]) -> None:
            self._group = None
            error = None if future.cancelled() else future.exception()
            for index, (_, done) in enumerate(group):
                if done.done():  # its caller was cancelled meanwhile
                    continue
                if future.cancelled():
                    done.cancel()
                elif error is not None:
                    done.set_exception(error)
                else:
                    outcome = future.result()[index]
                    if isinstance(outcome, GuideChanges):
                        done.set_result(outcome)
                    else:
                        done.set_exception(outcome)
            if self._queue:
                self._start_group(loop)

        written.add_done_callback(finished)

    async def aclose(self) -> None:
        """Close the connection once writes already queued are done; stop the thread."""
        # Each group, once finished, starts the next one queued: wait until none is under way.
        while self._group is not None:
            await asyncio.wait([self._group])
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            # The thread is idle once _close has run: joining it is immediate.
            self._executor.shutdown(wait=True)

    # In the writer thread

    def _connect(self) -> Connection:
        if self._connection is None:
            if self._engine is None:
                # NullPool: the writer holds its one connection itself, and closing it closes it.
                # AUTOCOMMIT (SQLAlchemy's driver-level mode for pysqlite) leaves transactions to
                # the statements _try_group sends: BEGIN IMMEDIATE, a savepoint per guide,
                # COMMIT. SQLAlchemy's own recipe for that (a "begin" event emitting BEGIN) makes
                # it dispatch connection events around every statement; begin_nested() names
                # each savepoint anew, so its statements were compiled again for every guide.
                engine = create_engine(
                    f"sqlite:///{self._path}",
                    poolclass=NullPool,
                    connect_args={"timeout": self._busy_timeout_seconds},
                    isolation_level="AUTOCOMMIT",
                )
                event.listen(engine, "connect", self._on_connect)
                self._engine = engine
            self._connection = self._engine.connect()
        return self._connection

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        """The writer connection's settings, set once when it opens."""
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_seconds * 1000)}")
        # A new file: waits for another process switching it too (see switch_to_wal).
        switch_to_wal(dbapi_connection, self._busy_timeout_seconds, time.sleep)
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA synchronous = NORMAL")
        # A guide's multi-row statements need a statement journal; past 64 kB it spills to a
        # new temporary file, and creating a file costs more CPU than the guide's writes.
        dbapi_connection.execute("PRAGMA temp_store = MEMORY")
        dbapi_connection.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        # Guide writes are serialised, so their wall time bounds a sync. Each guide's usages
        # land on ~100 pages of the item index; with the default checkpoint every 1,000
        # WAL pages (every ~9 guides) those pages were copied back and synced over and
        # over: a 1,000-guide sync at concurrency 16 spent 29-31 ms per write, against
        # 18 ms with a checkpoint every 10,000 pages (a WAL of up to 40 MB while syncing).
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._forget_items()

    def _forget_items(self, item_ids: Iterable[str] | None = None) -> None:
        """Forget these item rows (all, and the data_version seen, when None): always safe."""
        if item_ids is None:
            self._known_items.clear()
            self._data_version = None
            return
        for item_id in item_ids:
            self._known_items.pop(item_id, None)

    def _begin(self, connection: Connection) -> None:
        """Take the write lock; forget the known items if another connection committed since.

        data_version changes when another connection (the SQLAlchemy engine, another process)
        has committed to the file since this one last looked; the connection's own commits do
        not change it. Under the write lock nothing else commits until this transaction ends.
        """
        # IMMEDIATE: take the write lock now (waiting up to the busy timeout), not halfway.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        version = connection.exec_driver_sql("PRAGMA data_version").scalar_one()
        if version != self._data_version or len(self._known_items) > MAX_KNOWN_ITEMS:
            self._forget_items()
            self._data_version = version

    def _write_group(self, payloads: list[GuidePayload]) -> list[_Outcome]:
        """Write the guides in one transaction, a savepoint each; an outcome per guide.

        A guide whose statement fails rolls back to its savepoint and the others go on. Some
        errors (a full disk, an I/O error) make SQLite roll the whole transaction back: the
        failing guide is then dropped and the others are written again in a new transaction
        (each round drops one guide, so this ends). No guide is reported written unless the
        transaction holding its rows committed.
        """
        outcomes: dict[int, _Outcome] = {}
        pending = list(range(len(payloads)))
        while pending:
            pending = self._try_group(payloads, pending, outcomes)
        self.guides_written += sum(isinstance(o, GuideChanges) for o in outcomes.values())
        return [outcomes[index] for index in range(len(payloads))]

    def _try_group(
        self, payloads: list[GuidePayload], pending: list[int], outcomes: dict[int, _Outcome]
    ) -> list[int]:
        """One transaction over `pending`; returns the guides to write again (it was lost)."""

        def fail(indexes: Iterable[int], exc: DBAPIError) -> None:
            for index in indexes:
                outcomes[index] = database_error(f"writing guide {payloads[index].url}", exc)

        written: dict[int, GuideChanges] = {}
        # Ids of the item rows this transaction's guides stored, taken as known at once (the
        # next guides use them); forgotten again if the transaction does not commit.
        touched: set[str] = set()
        try:
            connection = self._connect()
            self._begin(connection)
            self.transactions += 1
            for index in pending:
                connection.exec_driver_sql("SAVEPOINT guide")
                try:
                    written[index], stored_items = write_guide_rows(
                        connection, payloads[index], self._known_items
                    )
                except DBAPIError as exc:
                    fail([index], exc)
                    if not _sqlite_in_transaction(connection):
                        # SQLite rolled the whole transaction back: the others go again.
                        self._forget_items(touched)
                        return [i for i in pending if i not in outcomes]
                    # Its rows are rolled back; the known ones it did not store stay true.
                    connection.exec_driver_sql("ROLLBACK TO guide")
                else:
                    self._known_items.update(stored_items)
                    touched.update(stored_items)
                connection.exec_driver_sql("RELEASE guide")
            connection.exec_driver_sql("COMMIT")
        except BaseException as exc:
            self._forget_items(touched)
            if self._connection is not None and _sqlite_in_transaction(self._connection):
                self._connection.exec_driver_sql("ROLLBACK")
            if not isinstance(exc, DBAPIError):
                raise
            # BEGIN, a savepoint or COMMIT failed: every guide not yet failed fails with it.
            fail([i for i in pending if i not in outcomes], exc)
            return []
        outcomes.update(written)
        return []


def _sqlite_in_transaction(connection: Connection) -> bool:
    """Whether SQLite still holds the transaction open (some errors roll all of it back)."""
    dbapi_connection = connection.connection.dbapi_connection
    return dbapi_connection is not None and bool(dbapi_connection.in_transaction)


async def sqlite_guide_writer_resource(
    config: DatabaseConfig,
) -> AsyncIterator[SqliteGuideWriter | None]:
    """Container resource: the writer for a SQLite file index; None for PostgreSQL or memory."""
    path = config.sqlite_path
    if path is None:
        yield None
        return
    writer = SqliteGuideWriter(path, busy_timeout_seconds=config.busy_timeout_seconds)
    try:
        yield writer
    finally:
        await writer.aclose()
