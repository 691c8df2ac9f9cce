"""The index tables. Other tools read them, so table and column names are fixed.

This is the schema as the newest migration (migrations/versions/) leaves it; a change here goes
with a new migration. A database written by a newer release is refused with a clear error
instead of being read wrongly.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.data.migrations.runner import upgrade_index
from d3_item_salvager.errors import IndexDatabaseError, IndexLockedError

USAGE_CONTEXTS = ("main", "kanai", "follower")

metadata = MetaData()

schema_meta = Table(
    "schema_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

guides = Table(
    "guides",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # the Maxroll post id
    Column("url", Text, nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("class_name", Text),
    Column("modified_unix", Integer, nullable=False),  # post_modified_unix at the last sync
    Column("last_synced_at", Text, nullable=False),  # ISO 8601, UTC
    # When every document of the guide was last confirmed with Maxroll (ISO 8601, UTC); NULL
    # while a document failed, so the next sync checks the guide again.
    Column("last_checked_at", Text),
)

builds = Table(
    "builds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("guide_id", Integer, ForeignKey("guides.id", ondelete="CASCADE"), nullable=False),
    Column("planner_id", Text, nullable=False),
    Column("profile_index", Integer, nullable=False),  # position in the planner's data.profiles
    Column("name", Text, nullable=False),
    Column("class_name", Text),
    UniqueConstraint("guide_id", "planner_id", "profile_index"),
)

items = Table(
    "items",
    metadata,
    Column("id", Text, primary_key=True),  # the Maxroll item id, exact
    Column("name", Text, nullable=False),
    Column("slot", Text),
    Column("quality", Text, nullable=False),  # "unknown" for a placeholder not in the catalog
    Column("set_name", Text),
)

item_usages = Table(
    "item_usages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("build_id", Integer, ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", Text, ForeignKey("items.id"), nullable=False),
    Column("slot", Text, nullable=False),
    Column("context", Text, nullable=False),
    UniqueConstraint("build_id", "item_id", "slot", "context"),
    CheckConstraint(f"context IN {USAGE_CONTEXTS!r}", name="usage_context"),
)

Index("ix_item_usages_item_id", item_usages.c.item_id)
Index("ix_builds_guide_id", builds.c.guide_id)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Create or upgrade the index schema (see migrations/runner.py); refuse an unknown one.

    Several processes may start on a new file at once: the upgrade runs under a lock, and whoever
    comes second finds it done.

    Raises:
        IndexLockedError: an upgrade waited longer than the busy timeout for another writer.
        IndexDatabaseError: the database has a version this program does not know, or cannot
            be opened.
    """
    try:
        await upgrade_index(engine)
    except DBAPIError as exc:
        if "database is locked" in str(exc.orig):
            raise IndexLockedError(
                "the index database is locked by another writer for longer than "
                "database.busy_timeout_seconds while its schema is being upgraded; try again"
            ) from None
        raise IndexDatabaseError(f"cannot open the index database: {exc.orig}") from None
    except OSError as exc:  # a server that cannot be reached (PostgreSQL)
        raise IndexDatabaseError(f"cannot reach the index database: {exc}") from None
