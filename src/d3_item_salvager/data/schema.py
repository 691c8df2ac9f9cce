"""The index tables. Other tools read them, so table and column names are fixed.

The schema is versioned in `schema_meta`: a database written by a newer version of this program is
refused with a clear error instead of being read wrongly.
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
    inspect,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.data.dialects import create_tables, insert_ignoring_conflicts
from d3_item_salvager.data.views import ensure_views
from d3_item_salvager.errors import IndexDatabaseError

SCHEMA_VERSION = 1
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
    """Create the tables on a new database; refuse one whose schema version is unknown.

    Several processes may start on a new file at once: whoever loses the race to create a table
    or the version row simply tries again and finds them there.

    Raises:
        IndexDatabaseError: the database has a version this program does not know, or cannot
            be opened.
    """
    try:
        stored = await _stored_version(engine)
        if stored not in (None, str(SCHEMA_VERSION)):
            raise IndexDatabaseError(
                f"index database schema version {stored} is not supported by this program "
                f"(it knows version {SCHEMA_VERSION}); use a matching release or a new file"
            )
        await create_tables(engine, metadata)
        await ensure_views(engine)
        async with engine.begin() as connection:
            await connection.execute(
                insert_ignoring_conflicts(schema_meta, engine.dialect.name).values(
                    key="schema_version", value=str(SCHEMA_VERSION)
                )
            )
    except DBAPIError as exc:
        raise IndexDatabaseError(f"cannot open the index database: {exc.orig}") from None
    except OSError as exc:  # a server that cannot be reached (PostgreSQL)
        raise IndexDatabaseError(f"cannot reach the index database: {exc}") from None


async def _stored_version(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        has_meta = await connection.run_sync(lambda sync: inspect(sync).has_table(schema_meta.name))
        if not has_meta:
            return None
        version: str | None = (
            await connection.execute(
                select(schema_meta.c.value).where(schema_meta.c.key == "schema_version")
            )
        ).scalar_one_or_none()
        return version
