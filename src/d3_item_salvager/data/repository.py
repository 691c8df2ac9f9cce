"""Reads and writes of the index. Each guide is written in one transaction.

Writes are diffs against what is stored: rows that did not change are not touched, so a sync over
unchanged data writes nothing and every count it reports is a real change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from d3_item_salvager.data.catalog_sync import sync_catalog_items
from d3_item_salvager.data.schema import builds, guides, item_usages, items
from d3_item_salvager.errors import IndexDatabaseError, IndexLockedError
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

if TYPE_CHECKING:
    from d3_item_salvager.data.sqlite_writer import SqliteGuideWriter

PLACEHOLDER_QUALITY = "unknown"


@dataclass(frozen=True, slots=True)
class StoredGuide:
    """What the index remembers of a guide, to decide whether it changed."""

    guide_id: int
    url: str
    modified_unix: int
    last_checked_at: datetime | None = None  # None: a document failed, or never checked


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
class RemovedGuides:
    """What removing vanished guides deleted."""

    guides: int
    builds: int
    usages: int


def database_error(action: str, exc: DBAPIError) -> IndexDatabaseError:
    """The error for a failed statement; a lock held past the busy timeout is transient."""
    text = str(exc.orig)
    if "database is locked" in text or "database table is locked" in text:
        return IndexLockedError(f"{action} failed: the index is locked by another writer ({text})")
    return IndexDatabaseError(f"{action} failed: {text}")


def placeholder_item(item_id: str) -> CatalogItem:
    """The row stored for an item id the catalog does not know (kept, never dropped)."""
    return CatalogItem(item_id=item_id, name=item_id, slot=None, quality=PLACEHOLDER_QUALITY)


class IndexRepository:
    """The index on an AsyncEngine (SQLAlchemy Core); SQLite guide writes via `guide_writer`."""

    def __init__(self, engine: AsyncEngine, guide_writer: SqliteGuideWriter | None = None) -> None:
        self._engine = engine
        self._guide_writer = guide_writer
        # Guide writes through the engine take turns: concurrent guides would upsert the same
        # items in opposite orders (lock waits, deadlocks on PostgreSQL, busy errors on SQLite).
        self._write_turn = asyncio.Lock()

    async def stored_guides(self) -> dict[int, StoredGuide]:
        """Every guide in the index, by id."""
        async with self._connect() as connection:
            rows = await connection.execute(
                select(guides.c.id, guides.c.url, guides.c.modified_unix, guides.c.last_checked_at)
            )
            return {
                row.id: StoredGuide(
                    row.id,
                    row.url,
                    row.modified_unix,
                    None
                    if row.last_checked_at is None
                    else datetime.fromisoformat(row.last_checked_at),
                )
                for row in rows
            }

    async def guides_using_planners(self, planner_ids: Collection[str]) -> set[int]:
        """Ids of the stored guides with a build from any of these planners."""
        if not planner_ids:
            return set()
        async with self._connect() as connection:
            rows = await connection.execute(
                select(builds.c.guide_id)
                .where(builds.c.planner_id.in_(list(planner_ids)))
                .distinct()
            )
            return {row.guide_id for row in rows}

    async def planner_ids(self) -> set[str]:
        """Every planner some stored build comes from."""
        async with self._connect() as connection:
            rows = await connection.execute(select(builds.c.planner_id).distinct())
            return {row.planner_id for row in rows}

    async def write_guide(
        self,
        guide: GuideRecord,
        guide_builds: Iterable[BuildRecord],
        catalog: Mapping[str, CatalogItem],
        synced_at: datetime,
        *,
        kept_planners: Collection[str] = (),
    ) -> GuideChanges:
        """Make the index hold exactly this guide's builds and usages, in one transaction.

        `catalog` maps every used item id to its catalog record (or a placeholder).
        `kept_planners` are planners that could not be read this time: their stored builds stay
        as they are, and the guide is left unchecked (`last_checked_at` NULL) so the next sync
        reads it again.
        """
        if self._guide_writer is not None:  # SQLite: same diff, off the loop (sqlite_writer.py)
            return await self._guide_writer.write_guide(
                guide, guide_builds, catalog, synced_at, kept_planners=kept_planners
            )
        wanted = {(b.planner_id, b.profile_index): b for b in guide_builds}
        kept = frozenset(kept_planners)
        changes = GuideChanges()
        try:
            async with self._write_turn, self._engine.begin() as connection:
                changes.guide_created = await self._upsert_guide(
                    connection, guide, synced_at, checked=not kept
                )
                changes.items_upserted = await self._upsert_items(connection, catalog.values())
                build_ids = await self._sync_builds(
                    connection, guide.guide_id, wanted, kept, changes
                )
                await self._sync_usages(connection, build_ids, wanted, changes)
        except DBAPIError as exc:
            raise database_error(f"writing guide {guide.url}", exc) from None
        return changes

    async def sync_catalog(self, catalog: ItemCatalog) -> int:
        """Make `items` hold every catalog item as the catalog says; return the rows changed."""
        try:
            async with self._engine.begin() as connection:
                return await sync_catalog_items(connection, catalog)
        except DBAPIError as exc:
            raise database_error("writing the item catalog", exc) from None

    async def remove_guides(self, guide_ids: Iterable[int]) -> RemovedGuides:
        """Delete guides with their builds and usages (one transaction)."""
        ids = list(guide_ids)
        if not ids:
            return RemovedGuides(0, 0, 0)
        try:
            async with self._engine.begin() as connection:
                build_ids = select(builds.c.id).where(builds.c.guide_id.in_(ids))
                usages = await connection.execute(
                    delete(item_usages).where(item_usages.c.build_id.in_(build_ids))
                )
                removed_builds = await connection.execute(
                    delete(builds).where(builds.c.guide_id.in_(ids))
                )
                removed = await connection.execute(delete(guides).where(guides.c.id.in_(ids)))
        except DBAPIError as exc:
            raise database_error(f"removing guides {ids}", exc) from None
        return RemovedGuides(removed.rowcount, removed_builds.rowcount, usages.rowcount)

    # Steps of write_guide

    def _connect(self) -> AsyncConnection:
        return self._engine.connect()

    @staticmethod
    async def _upsert_guide(
        connection: AsyncConnection, guide: GuideRecord, synced_at: datetime, *, checked: bool
    ) -> bool:
        values = {
            "url": guide.url,
            "title": guide.title,
            "class_name": guide.class_name,
            "modified_unix": guide.modified_unix,
            "last_synced_at": synced_at.isoformat(),
            "last_checked_at": synced_at.isoformat() if checked else None,
        }
        result = await connection.execute(
            update(guides).where(guides.c.id == guide.guide_id).values(**values)
        )
        if result.rowcount:
            return False
        # A guide whose URL moved to a new post id replaces the old row.
        await connection.execute(delete(guides).where(guides.c.url == guide.url))
        await connection.execute(guides.insert().values(id=guide.guide_id, **values))
        return True

    @staticmethod
    async def _upsert_items(connection: AsyncConnection, records: Iterable[CatalogItem]) -> int:
        wanted = {record.item_id: record for record in records}
        if not wanted:
            return 0
        stored = {
            row.id: (row.name, row.slot, row.quality, row.set_name)
            for row in await connection.execute(select(items).where(items.c.id.in_(list(wanted))))
        }
        new_rows = []
        changed_rows = []
        for item_id, record in wanted.items():
            values = (record.name, record.slot, record.quality, record.set_name)
            row = {"id": item_id, "name": values[0], "slot": values[1], "quality": values[2],
                   "set_name": values[3]}  # fmt: skip
            if item_id not in stored:
                new_rows.append(row)
            elif record.quality != PLACEHOLDER_QUALITY and stored[item_id] != values:
                # A placeholder never overwrites a real catalog record.
                changed_rows.append(row)
        if new_rows:
            await connection.execute(items.insert(), new_rows)
        for row in changed_rows:
            await connection.execute(update(items).where(items.c.id == row["id"]).values(**row))
        return len(new_rows) + len(changed_rows)

    @staticmethod
    async def _sync_builds(
        connection: AsyncConnection,
        guide_id: int,
        wanted: Mapping[tuple[str, int], BuildRecord],
        kept: frozenset[str],
        changes: GuideChanges,
    ) -> dict[tuple[str, int], int]:
        rows = await connection.execute(select(builds).where(builds.c.guide_id == guide_id))
        stored = {(row.planner_id, row.profile_index): row for row in rows}
        gone = [row.id for key, row in stored.items() if key not in wanted and key[0] not in kept]
        if gone:
            await connection.execute(delete(item_usages).where(item_usages.c.build_id.in_(gone)))
            await connection.execute(delete(builds).where(builds.c.id.in_(gone)))
            changes.builds_removed += len(gone)
        new = [
            {
                "guide_id": guide_id,
                "planner_id": build.planner_id,
                "profile_index": build.profile_index,
                "name": build.name,
                "class_name": build.class_name,
            }
            for key, build in wanted.items()
            if key not in stored
        ]
        if new:
            await connection.execute(builds.insert(), new)
            changes.builds_created += len(new)
        for key, build in wanted.items():
            row = stored.get(key)
            if row is not None and (row.name, row.class_name) != (build.name, build.class_name):
                await connection.execute(
                    update(builds)
                    .where(builds.c.id == row.id)
                    .values(name=build.name, class_name=build.class_name)
                )
                changes.builds_updated += 1
        if not new:
            return {key: row.id for key, row in stored.items() if key in wanted}
        ids = await connection.execute(
            select(builds.c.id, builds.c.planner_id, builds.c.profile_index).where(
                builds.c.guide_id == guide_id
            )
        )
        # Only the wanted builds: a kept planner's usages must not be diffed away.
        return {
            (row.planner_id, row.profile_index): row.id
            for row in ids
            if (row.planner_id, row.profile_index) in wanted
        }

    @staticmethod
    async def _sync_usages(
        connection: AsyncConnection,
        build_ids: Mapping[tuple[str, int], int],
        wanted_builds: Mapping[tuple[str, int], BuildRecord],
        changes: GuideChanges,
    ) -> None:
        """Diff all usages of the guide's builds in one read, one delete and one insert."""
        rows = await connection.execute(
            select(
                item_usages.c.id,
                item_usages.c.build_id,
                item_usages.c.item_id,
                item_usages.c.slot,
                item_usages.c.context,
            ).where(item_usages.c.build_id.in_(list(build_ids.values())))
        )
        stored = {(row.build_id, row.item_id, row.slot, row.context): row.id for row in rows}
        wanted = {
            (build_ids[key], usage.item_id, usage.slot, usage.context)
            for key, build in wanted_builds.items()
            for usage in build.usages
        }
        gone = [usage_id for key, usage_id in stored.items() if key not in wanted]
        if gone:
            await connection.execute(delete(item_usages).where(item_usages.c.id.in_(gone)))
            changes.usages_removed += len(gone)
        new = sorted(key for key in wanted if key not in stored)
        if new:
            await connection.execute(
                item_usages.insert(),
                [
                    {"build_id": build_id, "item_id": item_id, "slot": slot, "context": context}
                    for build_id, item_id, slot, context in new
                ],
            )
            changes.usages_created += len(new)
