"""One guide's rows, written to a SQLite index by diff on a plain sqlite3 connection.

`GuidePayload` holds a guide's rows as plain tuples (cheap to build on the loop, cheap to read in
the writer thread); `write_guide_rows` makes the index hold exactly those rows inside the caller's
transaction, touching only what differs. Its semantics are `IndexRepository.write_guide`'s (the
SQLAlchemy path PostgreSQL keeps), which tests/data/test_sqlite_writer.py checks row by row.

sqlite3 releases the GIL around every statement step, and with the event loop busy each step
waits to take it back; so rows go in and out as one JSON document per statement where it can.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from d3_item_salvager.data.repository import PLACEHOLDER_QUALITY, GuideChanges
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

# id, url, title, class_name, modified_unix, last_synced_at, last_checked_at
_GuideRow = tuple[int, str, str, str | None, int, str, str | None]
ItemRow = tuple[str, str, str | None, str, str | None]  # id, name, slot, quality, set_name
_UsageKey = tuple[str, str, str]  # item_id, slot, context
_BuildRow = tuple[str, int, str, str | None, tuple[_UsageKey, ...]]


@dataclass(frozen=True, slots=True)
class GuidePayload:
    """One guide's rows as plain tuples: cheap to build on the loop, cheap to read in the thread."""

    url: str
    guide: _GuideRow
    items: tuple[ItemRow, ...]
    builds: tuple[_BuildRow, ...]
    kept_planners: frozenset[str]


def guide_payload(
    guide: GuideRecord,
    guide_builds: Iterable[BuildRecord],
    catalog: Mapping[str, CatalogItem],
    synced_at: datetime,
    kept_planners: frozenset[str],
) -> GuidePayload:
    return GuidePayload(
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
        items=tuple(catalog.values()),  # CatalogItem rows: (id, name, slot, quality, set_name)
        builds=tuple(
            (
                b.planner_id,
                b.profile_index,
                b.name,
                b.class_name,
                b.usages,  # ItemUsage rows are (item_id, slot, context) tuples
            )
            for b in guide_builds
        ),
        kept_planners=kept_planners,
    )


ItemRows = Mapping[str, ItemRow]


def write_guide_rows(
    connection: sqlite3.Connection, payload: GuidePayload, known_items: ItemRows
) -> tuple[GuideChanges, dict[str, ItemRow]]:
    """Write one guide inside the caller's open transaction.

    `known_items` are item rows the caller knows to be stored as they are (see
    `SqliteGuideWriter`); those the guide wants unchanged are not read again. Returns what the
    guide changed and the item rows now stored for the ids it uses, for the caller to know.
    """
    changes = GuideChanges()
    changes.guide_created = _upsert_guide(connection, payload.guide)
    changes.items_upserted, stored_items = _upsert_items(connection, payload.items, known_items)
    build_ids = _sync_builds(
        connection, payload.guide[0], payload.builds, payload.kept_planners, changes
    )
    _sync_usages(connection, build_ids, payload.builds, changes)
    return changes, stored_items


def _select_json(
    connection: sqlite3.Connection,
    columns: str,
    source: str,
    parameters: tuple[object, ...],
) -> list[Any]:
    """`SELECT columns FROM source` with `parameters`, the rows read as one JSON array.

    sqlite3 releases the GIL around every step, so each row read or written re-acquires it; with
    the event loop busy that waits up to the switch interval (5 ms) per row. One JSON document in
    and out makes a guide's ~170 usages one step instead of ~170 waits.
    """
    (document,) = connection.execute(
        f"SELECT json_group_array(json_array({columns})) FROM {source}",
        parameters,
    ).fetchone()
    result: list[Any] = orjson.loads(document)
    return result


def _json_text(value: object) -> str:
    """`value` as JSON text for a statement parameter (SQLite's JSON functions take text).

    orjson: the standard library's encoder took a fifth of the writer's GIL-holding time.
    Named tuples (CatalogItem rows) are written as arrays, as `json` writes them.
    """
    return orjson.dumps(value, default=tuple).decode()


def _fields(count: int) -> str:
    """`value ->> 0, ..., value ->> count-1`: the columns of a json_each row of arrays."""
    return ", ".join(f"value ->> {index}" for index in range(count))


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


def _needs_writing(row: ItemRow, known: ItemRow | None) -> bool:
    """Whether `row` may differ from what is stored; a placeholder never overwrites a record."""
    return known is None or (known != row and row[3] != PLACEHOLDER_QUALITY)


def _upsert_items(
    connection: sqlite3.Connection, rows: Sequence[ItemRow], known: ItemRows
) -> tuple[int, dict[str, ItemRow]]:
    """Items written (new or changed) and the rows now stored for every id of `rows`."""
    # Most of a sync's guides use items earlier guides stored: reading them back and comparing
    # took nearly half of the writer's time, all of it holding the GIL.
    wanted = {row[0]: row for row in rows if _needs_writing(row, known.get(row[0]))}
    now_stored = {row[0]: known[row[0]] for row in rows if row[0] not in wanted}
    if not wanted:
        return 0, now_stored
    stored = {
        item_id: tuple(values)
        for item_id, *values in _select_json(
            connection,
            "id, name, slot, quality, set_name",
            "items WHERE id IN (SELECT value FROM json_each(?))",
            (_json_text(list(wanted)),),
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
            (_json_text(new_rows),),
        )
    for item_id, name, slot, quality, set_name in changed_rows:
        connection.execute(
            "UPDATE items SET name = ?, slot = ?, quality = ?, set_name = ? WHERE id = ?",
            (name, slot, quality, set_name, item_id),
        )
    for item_id, row in wanted.items():
        kept = stored.get(item_id)
        # What the table holds now: the wanted row, or the record a placeholder left alone.
        if kept is None or row[3] != PLACEHOLDER_QUALITY:
            now_stored[item_id] = row
        else:
            name, slot, quality, set_name = kept
            now_stored[item_id] = (item_id, name, slot, quality, set_name)
    return len(new_rows) + len(changed_rows), now_stored


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
        for build_id, planner_id, profile_index, name, class_name in _select_json(
            connection,
            "id, planner_id, profile_index, name, class_name",
            "builds WHERE guide_id = ?",
            (guide_id,),
        )
    }
    gone = [row[0] for key, row in stored.items() if key not in wanted and key[0] not in kept]
    if gone:
        ids = (_json_text(gone),)
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
        connection.execute(
            "INSERT INTO builds (guide_id, planner_id, profile_index, name, class_name) "
            f"SELECT {_fields(5)} FROM json_each(?) ORDER BY key",
            (_json_text(new),),
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
        for build_id, planner_id, profile_index in _select_json(
            connection, "id, planner_id, profile_index", "builds WHERE guide_id = ?", (guide_id,)
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
            (_json_text(list(build_ids.values())),),
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
            (_json_text(gone),),
        )
        changes.usages_removed += len(gone)
    new = sorted(key for key in wanted if key not in stored)
    if new:
        connection.execute(
            "INSERT INTO item_usages (build_id, item_id, slot, context) "
            f"SELECT {_fields(4)} FROM json_each(?) ORDER BY key",
            (_json_text(new),),
        )
        changes.usages_created += len(new)
