"""Guide writes for a SQLite index: one call per guide on a thread that owns a sqlite3 connection.

SQLite has one writer, so the sync's guide writes are serialised anyway. Through SQLAlchemy Core
over aiosqlite each guide cost ~12 ms of CPU on the event-loop thread (statement compilation,
parameter processing, a thread hand-off per statement); the same statements on a plain sqlite3
connection, run as one call on a dedicated thread, cost a quarter of that and leave the loop free.

Semantics are those of `IndexRepository.write_guide` (PostgreSQL keeps that path): a diff against
what is stored, so unchanged rows are not touched; the same `GuideChanges` counts; one transaction
per guide; any database error rolls the guide back and becomes `IndexDatabaseError`. The
connection gets the pragmas every index connection has (busy timeout, WAL, foreign keys).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d3_item_salvager.data.dialects import switch_to_wal
from d3_item_salvager.data.repository import PLACEHOLDER_QUALITY, GuideChanges
from d3_item_salvager.errors import IndexDatabaseError, IndexLockedError
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

if TYPE_CHECKING:
    from d3_item_salvager.config import DatabaseConfig


# id, url, title, class_name, modified_unix, last_synced_at, last_checked_at
_GuideRow = tuple[int, str, str, str | None, int, str, str | None]
_ItemRow = tuple[str, str, str | None, str, str | None]  # id, name, slot, quality, set_name
_UsageKey = tuple[str, str, str]  # item_id, slot, context
_BuildRow = tuple[str, int, str, str | None, tuple[_UsageKey, ...]]


@dataclass(frozen=True, slots=True)
class _GuidePayload:
    """One guide's rows as plain tuples: cheap to build on the loop, cheap to read in the thread."""

    url: str
    guide: _GuideRow
    items: tuple[_ItemRow, ...]
    builds: tuple[_BuildRow, ...]
    kept_planners: frozenset[str]


def _payload(
    guide: GuideRecord,
    guide_builds: Iterable[BuildRecord],
    catalog: Mapping[str, CatalogItem],
    synced_at: datetime,
    kept_planners: frozenset[str],
) -> _GuidePayload:
    return _GuidePayload(
        url=guide.url,
        guide=(
            guide.guide_id,
            guide.url,
            guide.title,
            guide.class_name,
            guide.modified_unix,
            synced_at.isoformat(),
            None if kept_planners else synced_at.isoformat(),
        ),
        items=tuple((r.item_id, r.name, r.slot, r.quality, r.set_name) for r in catalog.values()),
        builds=tuple(
            (
                b.planner_id,
                b.profile_index,
                b.name,
                b.class_name,
                tuple((u.item_id, u.slot, u.context) for u in b.usages),
            )
            for b in guide_builds
        ),
        kept_planners=kept_planners,
    )


def _select_json(
    connection: sqlite3.Connection, columns: str, source: str, values: list[Any]
) -> list[Any]:
    """`SELECT columns FROM source`, rows as one JSON array; `values` bound as one JSON array.

    sqlite3 releases the GIL around every step, so each row read or written re-acquires it; with
    the event loop busy that waits up to the switch interval (5 ms) per row. One JSON document in
    and out makes a guide's ~170 usages one step instead of ~170 waits.
    """
    (document,) = connection.execute(
        f"SELECT json_group_array(json_array({columns})) FROM {source}", (json.dumps(values),)
    ).fetchone()
    result: list[Any] = json.loads(document)
    return result


def _fields(count: int) -> str:
    """`value ->> 0, ..., value ->> count-1`: the columns of a json_each row of arrays."""
    return ", ".join(f"value ->> {index}" for index in range(count))


# WAL pages between automatic checkpoints on the writer's connection (SQLite's default: 1,000).
WAL_CHECKPOINT_PAGES = 10_000


class SqliteGuideWriter:
    """Writes guides to a SQLite file from one dedicated thread (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float) -> None:
        self._path = path
        self._busy_timeout_seconds = busy_timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        # Opened in the writer thread on first use (sqlite3 connections stay on their thread),
        # after the engine has ensured the schema.
        self._connection: sqlite3.Connection | None = None

    async def write_guide(
        self,
        guide: GuideRecord,
        guide_builds: Iterable[BuildRecord],
        catalog: Mapping[str, CatalogItem],
        synced_at: datetime,
        *,
        kept_planners: Collection[str] = (),
    ) -> GuideChanges:
        """As `IndexRepository.write_guide`: this guide's builds and usages, one transaction."""
        payload = _payload(guide, guide_builds, catalog, synced_at, frozenset(kept_planners))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, payload)

    async def aclose(self) -> None:
        """Close the connection once writes already queued are done; stop the thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            # The thread is idle once _close has run: joining it is immediate.
            self._executor.shutdown(wait=True)

    # In the writer thread

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # isolation_level=None: transactions are begun and ended explicitly below.
            connection = sqlite3.connect(
                self._path, timeout=self._busy_timeout_seconds, isolation_level=None
            )
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_seconds * 1000)}")
            # A new file: waits for another process switching it too (see switch_to_wal).
            switch_to_wal(connection, self._busy_timeout_seconds, time.sleep)
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = NORMAL")
            # A guide's multi-row statements need a statement journal; past 64 kB it spills to a
            # new temporary file, and creating a file costs more CPU than the guide's writes.
            connection.execute("PRAGMA temp_store = MEMORY")
            # Guide writes are serialised, so their wall time bounds a sync. Each guide's usages
            # land on ~100 pages of the item index; with the default checkpoint every 1,000
            # WAL pages (every ~9 guides) those pages were copied back and synced over and
            # over: a 1,000-guide sync at concurrency 16 spent 29-31 ms per write, against
            # 18 ms with a checkpoint every 10,000 pages (a WAL of up to 40 MB while syncing).
            connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _write(self, payload: _GuidePayload) -> GuideChanges:
        changes = GuideChanges()
        try:
            connection = self._connect()
            # IMMEDIATE: take the write lock now (waiting up to the busy timeout), not halfway.
            connection.execute("BEGIN IMMEDIATE")
            try:
                changes.guide_created = _upsert_guide(connection, payload.guide)
                changes.items_upserted = _upsert_items(connection, payload.items)
                build_ids = _sync_builds(
                    connection, payload.guide[0], payload.builds, payload.kept_planners, changes
                )
                _sync_usages(connection, build_ids, payload.builds, changes)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _database_error(f"writing guide {payload.url}", exc) from None
        return changes


def _database_error(action: str, exc: sqlite3.Error) -> IndexDatabaseError:
    """As repository.database_error: a lock held past the busy timeout is transient."""
    text = str(exc)
    if "database is locked" in text or "database table is locked" in text:
        return IndexLockedError(f"{action} failed: the index is locked by another writer ({text})")
    return IndexDatabaseError(f"{action} failed: {text}")


def _upsert_guide(connection: sqlite3.Connection, row: _GuideRow) -> bool:
    guide_id, url, title, class_name, modified_unix, synced_at, checked_at = row
    updated = connection.execute(
        "UPDATE guides SET url = ?, title = ?, class_name = ?, modified_unix = ?, "
        "last_synced_at = ?, last_checked_at = ? WHERE id = ?",
        (url, title, class_name, modified_unix, synced_at, checked_at, guide_id),
    )
    if updated.rowcount:
        return False
    # A guide whose URL moved to a new post id replaces the old row.
    connection.execute("DELETE FROM guides WHERE url = ?", (url,))
    connection.execute(
        "INSERT INTO guides "
        "(id, url, title, class_name, modified_unix, last_synced_at, last_checked_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    return True


def _upsert_items(connection: sqlite3.Connection, rows: Sequence[_ItemRow]) -> int:
    wanted = {row[0]: row for row in rows}
    if not wanted:
        return 0
    stored = {
        item_id: tuple(values)
        for item_id, *values in _select_json(
            connection,
            "id, name, slot, quality, set_name",
            "items WHERE id IN (SELECT value FROM json_each(?))",
            list(wanted),
        )
    }
    new_rows = [row for item_id, row in wanted.items() if item_id not in stored]
    # A placeholder never overwrites a real catalog record.
    changed_rows = [
        row
        for item_id, row in wanted.items()
        if item_id in stored and row[3] != PLACEHOLDER_QUALITY and stored[item_id] != row[1:]
    ]
    if new_rows:
        connection.execute(
            "INSERT INTO items (id, name, slot, quality, set_name) "
            f"SELECT {_fields(5)} FROM json_each(?) ORDER BY key",
            (json.dumps(new_rows),),
        )
    for item_id, name, slot, quality, set_name in changed_rows:
        connection.execute(
            "UPDATE items SET name = ?, slot = ?, quality = ?, set_name = ? WHERE id = ?",
            (name, slot, quality, set_name, item_id),
        )
    return len(new_rows) + len(changed_rows)


def _sync_builds(
    connection: sqlite3.Connection,
    guide_id: int,
    wanted_rows: Sequence[_BuildRow],
    kept: frozenset[str],
    changes: GuideChanges,
) -> dict[tuple[str, int], int]:
    """Ids of the wanted builds; builds of `kept` planners (not read this time) stay."""
    wanted = {(row[0], row[1]): row for row in wanted_rows}
    stored = {
        (planner_id, profile_index): (build_id, name, class_name)
        for build_id, planner_id, profile_index, name, class_name in connection.execute(
            "SELECT id, planner_id, profile_index, name, class_name FROM builds WHERE guide_id = ?",
            (guide_id,),
        )
    }
    gone = [row[0] for key, row in stored.items() if key not in wanted and key[0] not in kept]
    if gone:
        ids = (json.dumps(gone),)
        connection.execute(
            "DELETE FROM item_usages WHERE build_id IN (SELECT value FROM json_each(?))", ids
        )
        connection.execute("DELETE FROM builds WHERE id IN (SELECT value FROM json_each(?))", ids)
        changes.builds_removed += len(gone)
    new = [
        (guide_id, planner_id, profile_index, name, class_name)
        for key, (planner_id, profile_index, name, class_name, _usages) in wanted.items()
        if key not in stored
    ]
    if new:
        connection.executemany(
            "INSERT INTO builds (guide_id, planner_id, profile_index, name, class_name) "
            "VALUES (?, ?, ?, ?, ?)",
            new,
        )
        changes.builds_created += len(new)
    for key, (_planner, _index, name, class_name, _usages) in wanted.items():
        current = stored.get(key)
        if current is not None and (current[1], current[2]) != (name, class_name):
            connection.execute(
                "UPDATE builds SET name = ?, class_name = ? WHERE id = ?",
                (name, class_name, current[0]),
            )
            changes.builds_updated += 1
    if not new:
        return {key: row[0] for key, row in stored.items() if key in wanted}
    # Only the wanted builds: a kept planner's builds (and their usages) are not diffed.
    return {
        (planner_id, profile_index): build_id
        for build_id, planner_id, profile_index in connection.execute(
            "SELECT id, planner_id, profile_index FROM builds WHERE guide_id = ?", (guide_id,)
        )
        if (planner_id, profile_index) in wanted
    }


def _sync_usages(
    connection: sqlite3.Connection,
    build_ids: Mapping[tuple[str, int], int],
    wanted_builds: Sequence[_BuildRow],
    changes: GuideChanges,
) -> None:
    """Diff all usages of the guide's builds in one read, one delete and one insert."""
    stored: dict[tuple[int, str, str, str], int] = {
        (build_id, item_id, slot, context): usage_id
        for usage_id, build_id, item_id, slot, context in _select_json(
            connection,
            "id, build_id, item_id, slot, context",
            "item_usages WHERE build_id IN (SELECT value FROM json_each(?))",
            list(build_ids.values()),
        )
    }
    wanted = {
        (build_ids[(planner_id, profile_index)], *usage)
        for planner_id, profile_index, _name, _class, usages in wanted_builds
        for usage in usages
    }
    gone = [usage_id for key, usage_id in stored.items() if key not in wanted]
    if gone:
        connection.execute(
            "DELETE FROM item_usages WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(gone),),
        )
        changes.usages_removed += len(gone)
    new = sorted(key for key in wanted if key not in stored)
    if new:
        connection.execute(
            "INSERT INTO item_usages (build_id, item_id, slot, context) "
            f"SELECT {_fields(4)} FROM json_each(?) ORDER BY key",
            (json.dumps(new),),
        )
        changes.usages_created += len(new)


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
