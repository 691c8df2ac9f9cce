"""Reads and writes of the index. Each guide is written in one transaction.

Writes are diffs against what is stored: rows that did not change are not touched, so a sync over
unchanged data writes nothing and every count it reports is a real change. The diff of a guide is
written once (guide_rows.py): PostgreSQL runs it here through `AsyncConnection.run_sync`, a
SQLite file index on its writer thread (sqlite_writer.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from d3_item_salvager.data.catalog_sync import sync_catalog_items
from d3_item_salvager.data.guide_rows import (
    PLACEHOLDER_QUALITY,
    GuideChanges,
    guide_payload,
    write_guide_rows,
)
from d3_item_salvager.data.schema import builds, guides, item_usages
from d3_item_salvager.errors import IndexDatabaseError, IndexLockedError
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord

if TYPE_CHECKING:
    from d3_item_salvager.data.sqlite_writer import SqliteGuideWriter

__all__ = [
    "PLACEHOLDER_QUALITY",
    "GuideChanges",
    "IndexRepository",
    "RemovedGuides",
    "StoredGuide",
    "database_error",
    "placeholder_item",
]


@dataclass(frozen=True, slots=True)
class StoredGuide:
    """What the index remembers of a guide, to decide whether it changed."""

    guide_id: int
    url: str
    modified_unix: int
    last_checked_at: datetime | None = None  # None: a document failed, or never checked


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
    """The index on an AsyncEngine (SQLAlchemy Core); SQLite file guide writes via `guide_writer`."""

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
        if self._guide_writer is not None:  # SQLite: the same rules, off the loop, group commit
            return await self._guide_writer.write_guide(
                guide, guide_builds, catalog, synced_at, kept_planners=kept_planners
            )
        payload = guide_payload(guide, guide_builds, catalog, synced_at, frozenset(kept_planners))
        try:
            async with self._write_turn, self._engine.begin() as connection:
                changes, _stored_items = await connection.run_sync(write_guide_rows, payload, {})
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

    def _connect(self) -> AsyncConnection:
        return self._engine.connect()
