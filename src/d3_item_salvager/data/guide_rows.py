"""One guide's rows, written to the index by diff: the rules, once, as SQLAlchemy Core statements.

`write_guide_rows` makes the index hold exactly one guide's builds and usages inside the caller's
transaction, touching only what differs, on a synchronous `Connection`. Both backends run it: a
SQLite index on its writer thread (sqlite_writer.py, group commit), PostgreSQL through
`AsyncConnection.run_sync` (repository.py).

`GuidePayload` holds a guide's rows as plain tuples (cheap to build on the loop, cheap to read in
the writer thread). Rows go in and out as one JSON document per statement: sqlite3 releases the
GIL around every step of a statement, and with the event loop busy each step waits to take it
back, so a guide's ~170 usages are one step instead of ~170 waits. The statements are built once
per dialect and cached; only the JSON table functions differ between SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Delete,
    Insert,
    Integer,
    Select,
    Text,
    Update,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from d3_item_salvager.data.schema import builds, guides, item_usages, items
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

PLACEHOLDER_QUALITY = "unknown"

# id, url, title, class_name, modified_unix, last_synced_at, last_checked_at
_GuideRow = tuple[int, str, str, str | None, int, str, str | None]
ItemRow = tuple[str, str, str | None, str, str | None]  # id, name, slot, quality, set_name
ItemRows = Mapping[str, ItemRow]
_UsageKey = tuple[str, str, str]  # item_id, slot, context
_BuildRow = tuple[str, int, str, str | None, tuple[_UsageKey, ...]]


@dataclass(slots=True)
class GuideChanges:
    """What writing one guide changed."""

    guide_created: bool = False
    builds_created: int = 0
    builds_updated: int = 0
    builds_removed: int = 0
    items_upserted: int = 0
    usages_created: int = 0
    usages_removed: int = 0


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
    """The rows of one guide to write; `kept_planners` leave the guide unchecked."""
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


def write_guide_rows(
    connection: Connection, payload: GuidePayload, known_items: ItemRows
) -> tuple[GuideChanges, dict[str, ItemRow]]:
    """Write one guide inside the caller's open transaction.

    `known_items` are item rows the caller knows to be stored as they are (see
    `SqliteGuideWriter`); those the guide wants unchanged are not read again. Returns what the
    guide changed and the item rows now stored for the ids it uses, for the caller to know.
    """
    sql = _statements(connection.dialect.name)
    changes = GuideChanges()
    changes.guide_created = _upsert_guide(connection, sql, payload.guide)
    changes.items_upserted, stored_items = _upsert_items(
        connection, sql, payload.items, known_items
    )
    build_ids, stored_builds = _sync_builds(
        connection, sql, payload.guide[0], payload.builds, payload.kept_planners, changes
    )
    _sync_usages(connection, sql, build_ids, stored_builds, payload.builds, changes)
    return changes, stored_items


# The statements, built once per dialect (SQLAlchemy then reuses their compiled form)


def _json_rows(
    dialect: str, parameter: str, *types: TypeEngine[Any]
) -> tuple[TableValuedAlias, list[ColumnElement[Any]]]:
    """The rows of the JSON array of arrays bound to `parameter`, and their typed columns.

    The table has a `key` column, the row's position, to insert rows in the order given.
    """
    document = bindparam(parameter, type_=Text)
    table = (
        func.json_array_elements(cast(document, JSON))
        .table_valued("value", with_ordinality="key")
        .render_derived()
        if dialect == "postgresql"
        else func.json_each(document).table_valued("value", "key")
    )
    columns: list[ColumnElement[Any]] = [
        cast(table.c.value.op("->>")(literal_column(str(index))), type_)
        for index, type_ in enumerate(types)
    ]
    return table, columns


def _json_array(dialect: str, *columns: ColumnElement[Any]) -> ColumnElement[str]:
    """The selected rows as one JSON array of arrays (text), `[]` for none."""
    if dialect == "postgresql":
        rows = func.json_agg(func.json_build_array(*columns))
        return cast(func.coalesce(rows, literal_column("'[]'")), Text)
    return func.json_group_array(func.json_array(*columns), type_=Text)


def _ids_in(dialect: str, parameter: str, type_: TypeEngine[Any]) -> Select[Any]:
    """The ids of the JSON array of one-element arrays bound to `parameter`."""
    table, (column,) = _json_rows(dialect, parameter, type_)
    return select(column).select_from(table)


def _insert_rows(dialect: str, table: Any, names: Sequence[str]) -> Insert:
    """INSERT the rows of the JSON array bound to `rows`, in its order."""
    source, columns = _json_rows(dialect, "rows", *(table.c[name].type for name in names))
    return insert(table).from_select(
        list(names), select(*columns).select_from(source).order_by(source.c.key)
    )


@dataclass(frozen=True, slots=True)
class _Statements:
    """Every statement of a guide's write, for one dialect."""

    update_guide: Update
    delete_guide_by_url: Delete
    insert_guide: Insert
    read_items: Select[Any]
    insert_items: Insert
    update_item: Update
    read_builds: Select[Any]
    delete_usages_of_builds: Delete
    delete_builds: Delete
    insert_builds: Insert
    update_build: Update
    read_build_ids: Select[Any]
    read_usages: Select[Any]
    delete_usages: Delete
    insert_usages: Insert


_GUIDE_VALUES = ("url", "title", "class_name", "modified_unix", "last_synced_at", "last_checked_at")
_ITEM_COLUMNS = ("id", "name", "slot", "quality", "set_name")
_BUILD_COLUMNS = ("guide_id", "planner_id", "profile_index", "name", "class_name")
_USAGE_COLUMNS = ("build_id", "item_id", "slot", "context")


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The statements for `dialect`, built on first use: SQLAlchemy then finds each one's
    compiled form in its cache instead of compiling it per guide."""
    guide_id = bindparam("guide_id", type_=Integer)
    # Bound names differ from column names: SQLAlchemy keeps those for the SET clause.
    set_guide: dict[str, Any] = {name: bindparam(f"new_{name}") for name in _GUIDE_VALUES}
    return _Statements(
        update_guide=update(guides).where(guides.c.id == guide_id).values(set_guide),
        delete_guide_by_url=delete(guides).where(guides.c.url == bindparam("new_url")),
        insert_guide=insert(guides).values(id=guide_id, **set_guide),
        read_items=select(_json_array(dialect, *(items.c[name] for name in _ITEM_COLUMNS))).where(
            items.c.id.in_(_ids_in(dialect, "ids", Text()))
        ),
        insert_items=_insert_rows(dialect, items, _ITEM_COLUMNS),
        update_item=update(items)
        .where(items.c.id == bindparam("item_id"))
        .values({name: bindparam(f"new_{name}") for name in _ITEM_COLUMNS[1:]}),
        read_builds=select(
            _json_array(
                dialect,
                builds.c.id,
                builds.c.planner_id,
                builds.c.profile_index,
                builds.c.name,
                builds.c.class_name,
            )
        ).where(builds.c.guide_id == guide_id),
        delete_usages_of_builds=delete(item_usages).where(
            item_usages.c.build_id.in_(_ids_in(dialect, "ids", Integer()))
        ),
        delete_builds=delete(builds).where(builds.c.id.in_(_ids_in(dialect, "ids", Integer()))),
        insert_builds=_insert_rows(dialect, builds, _BUILD_COLUMNS),
        update_build=update(builds)
        .where(builds.c.id == bindparam("build_id"))
        .values(name=bindparam("new_name"), class_name=bindparam("new_class_name")),
        read_build_ids=select(
            _json_array(dialect, builds.c.id, builds.c.planner_id, builds.c.profile_index)
        ).where(builds.c.guide_id == guide_id),
        read_usages=select(
            _json_array(
                dialect,
                item_usages.c.id,
                item_usages.c.build_id,
                item_usages.c.item_id,
                item_usages.c.slot,
                item_usages.c.context,
            )
        ).where(item_usages.c.build_id.in_(_ids_in(dialect, "ids", Integer()))),
        delete_usages=delete(item_usages).where(
            item_usages.c.id.in_(_ids_in(dialect, "ids", Integer()))
        ),
        insert_usages=_insert_rows(dialect, item_usages, _USAGE_COLUMNS),
    )


def _rows(connection: Connection, statement: Select[Any], **parameters: object) -> list[Any]:
    """The rows a `_json_array` statement read, decoded."""
    # scalar(), not scalar_one(): looking for a second row is one more step, and every step
    # hands the GIL over (the aggregate returns exactly one row; NULL would mean no rows).
    document = connection.execute(statement, parameters).scalar()
    result: list[Any] = orjson.loads(document or "[]")
    return result


def _json_text(value: object) -> str:
    """`value` as JSON text for a statement parameter.

    orjson: the standard library's encoder took a fifth of the writer's GIL-holding time.
    Named tuples (CatalogItem rows) are written as arrays, as `json` writes them.
    """
    return orjson.dumps(value, default=tuple).decode()


def _id_list(ids: Iterable[object]) -> str:
    """Ids as the JSON array of one-element arrays `_ids_in` reads."""
    return _json_text([(value,) for value in ids])


# The rules


def _upsert_guide(connection: Connection, sql: _Statements, row: _GuideRow) -> bool:
    guide_id, *values = row
    parameters = {"guide_id": guide_id} | {
        f"new_{name}": value for name, value in zip(_GUIDE_VALUES, values, strict=True)
    }
    if connection.execute(sql.update_guide, parameters).rowcount:
        return False
    # A guide whose URL moved to a new post id replaces the old row.
    connection.execute(sql.delete_guide_by_url, {"new_url": parameters["new_url"]})
    connection.execute(sql.insert_guide, parameters)
    return True


def _needs_writing(row: ItemRow, known: ItemRow | None) -> bool:
    """Whether `row` may differ from what is stored; a placeholder never overwrites a record."""
    return known is None or (known != row and row[3] != PLACEHOLDER_QUALITY)


def _upsert_items(
    connection: Connection, sql: _Statements, rows: Sequence[ItemRow], known: ItemRows
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
        for item_id, *values in _rows(connection, sql.read_items, ids=_id_list(wanted))
    }
    new_rows = [row for item_id, row in wanted.items() if item_id not in stored]
    # A placeholder never overwrites a real catalog record.
    changed_rows = [
        row
        for item_id, row in wanted.items()
        if item_id in stored and row[3] != PLACEHOLDER_QUALITY and stored[item_id] != row[1:]
    ]
    if new_rows:
        connection.execute(sql.insert_items, {"rows": _json_text(new_rows)})
    if changed_rows:
        connection.execute(
            sql.update_item,
            [
                {"item_id": item_id, "new_name": name, "new_slot": slot,
                 "new_quality": quality, "new_set_name": set_name}
                for item_id, name, slot, quality, set_name in changed_rows
            ],
        )  # fmt: skip
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
    connection: Connection,
    sql: _Statements,
    guide_id: int,
    wanted_rows: Sequence[_BuildRow],
    kept: frozenset[str],
    changes: GuideChanges,
) -> tuple[dict[tuple[str, int], int], list[int]]:
    """Ids of the wanted builds, and of those already stored; `kept` planners' builds stay."""
    wanted = {(row[0], row[1]): row for row in wanted_rows}
    # A guide row just created has no builds (foreign keys, enforced on both backends).
    stored = (
        {}
        if changes.guide_created
        else {
            (planner_id, profile_index): (build_id, name, class_name)
            for build_id, planner_id, profile_index, name, class_name in _rows(
                connection, sql.read_builds, guide_id=guide_id
            )
        }
    )
    gone = [row[0] for key, row in stored.items() if key not in wanted and key[0] not in kept]
    if gone:
        ids = {"ids": _id_list(gone)}
        connection.execute(sql.delete_usages_of_builds, ids)
        connection.execute(sql.delete_builds, ids)
        changes.builds_removed += len(gone)
    new = [
        (guide_id, planner_id, profile_index, name, class_name)
        for key, (planner_id, profile_index, name, class_name, _usages) in wanted.items()
        if key not in stored
    ]
    if new:
        connection.execute(sql.insert_builds, {"rows": _json_text(new)})
        changes.builds_created += len(new)
    renamed = [
        {"build_id": current[0], "new_name": name, "new_class_name": class_name}
        for key, (_planner, _index, name, class_name, _usages) in wanted.items()
        if (current := stored.get(key)) is not None
        and (current[1], current[2]) != (name, class_name)
    ]
    if renamed:
        connection.execute(sql.update_build, renamed)
        changes.builds_updated += len(renamed)
    kept_ids = [row[0] for key, row in stored.items() if key in wanted]
    if not new:
        return {key: row[0] for key, row in stored.items() if key in wanted}, kept_ids
    # Only the wanted builds: a kept planner's builds (and their usages) are not diffed.
    build_ids = {
        (planner_id, profile_index): build_id
        for build_id, planner_id, profile_index in _rows(
            connection, sql.read_build_ids, guide_id=guide_id
        )
        if (planner_id, profile_index) in wanted
    }
    return build_ids, kept_ids


def _sync_usages(
    connection: Connection,
    sql: _Statements,
    build_ids: Mapping[tuple[str, int], int],
    stored_builds: Sequence[int],
    wanted_builds: Sequence[_BuildRow],
    changes: GuideChanges,
) -> None:
    """Diff all usages of the guide's builds in one read, one delete and one insert."""
    # Builds inserted by this write have no usages yet: only those stored before are read.
    stored: dict[tuple[int, str, str, str], int] = (
        {
            (build_id, item_id, slot, context): usage_id
            for usage_id, build_id, item_id, slot, context in _rows(
                connection, sql.read_usages, ids=_id_list(stored_builds)
            )
        }
        if stored_builds
        else {}
    )
    wanted = {
        (build_ids[(planner_id, profile_index)], *usage)
        for planner_id, profile_index, _name, _class, usages in wanted_builds
        for usage in usages
    }
    gone = [usage_id for key, usage_id in stored.items() if key not in wanted]
    if gone:
        connection.execute(sql.delete_usages, {"ids": _id_list(gone)})
        changes.usages_removed += len(gone)
    new = sorted(key for key in wanted if key not in stored)
    if new:
        connection.execute(sql.insert_usages, {"rows": _json_text(new)})
        changes.usages_created += len(new)
