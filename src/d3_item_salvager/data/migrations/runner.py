"""Bring the index to the newest schema revision when it opens, on SQLite and PostgreSQL.

Opening an index that is already current only reads (two small SELECTs, no lock, no write), so a
writer holding the database while the program starts does not delay or fail the start.

An upgrade runs in one transaction under a lock that serialises every process opening the same
database (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock). Whoever comes
second waits, then finds the work done. The state is read again under the lock for that reason.

States an index can be in:
- new (no tables): every revision runs, 0001 first;
- written by release 0.1.0 (`schema_meta` version 1, no `alembic_version`): stamped 0001, upgraded;
- an older revision of ours: upgraded;
- a revision or version this program does not know (a newer release wrote it): refused, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.data.dialects import lost_schema_race
from d3_item_salvager.errors import IndexDatabaseError

MIGRATIONS_DIR = Path(__file__).parent
# The newest revision in versions/ (a test checks the two agree). Knowing it without importing
# Alembic keeps the common start, an index already current, cheap.
HEAD_REVISION = "0004"
# What release 0.1.0 wrote in schema_meta before migrations existed, and the revision it matches.
LEGACY_SCHEMA_VERSION = "1"
LEGACY_REVISION = "0001"
# Any fixed 64-bit number; every process of this program uses the same one.
POSTGRES_LOCK_KEY = 0x6433_6973_6D69_6772  # "d3ismigr"
RACE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What the database says about its schema."""

    revision: str | None  # alembic_version.version_num
    legacy_version: str | None  # schema_meta.schema_version

    @property
    def is_current(self) -> bool:
        return self.revision == HEAD_REVISION


async def upgrade_index(engine: AsyncEngine) -> None:
    """Make the index current: create it, upgrade it, or refuse it with a clear message.

    Raises:
        IndexDatabaseError: a newer release wrote the database, or the database failed.
        DBAPIError: from the driver, for the caller to word (lock timeout, unreachable, ...).
    """
    for attempt in range(RACE_ATTEMPTS):
        try:
            async with engine.connect() as connection:
                state = await connection.run_sync(read_state)
                if state.is_current:
                    return
                # Not refused here: outside the lock the two reads may straddle another
                # process's upgrade (no `alembic_version` yet, `schema_meta` already at 2) and
                # look like a newer release. Under the lock the state is read again and judged.
                await connection.rollback()  # end the reading transaction before taking the lock
                await connection.run_sync(_upgrade_locked)
                await connection.commit()
            return
        except DBAPIError as exc:
            # The lock makes races unlikely; a database that rejects it (or a table created
            # behind our back) still ends in a retry that finds the work done.
            if attempt == RACE_ATTEMPTS - 1 or not lost_schema_race(exc):
                raise


def read_state(connection: Connection) -> SchemaState:
    """The revision and legacy version stored in the database (None where absent)."""
    inspector = inspect(connection)
    revision = legacy = None
    if inspector.has_table("alembic_version"):
        revisions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        if len(revisions) > 1:
            raise IndexDatabaseError(
                "index database has several schema revisions "
                f"({', '.join(sorted(str(r[0]) for r in revisions))}); it was not written by "
                "this program"
            )
        revision = str(revisions[0][0]) if revisions else None
    if inspector.has_table("schema_meta"):
        legacy = connection.execute(
            text("SELECT value FROM schema_meta WHERE key = 'schema_version'")
        ).scalar_one_or_none()
    return SchemaState(revision, None if legacy is None else str(legacy))


def refuse_unknown(state: SchemaState) -> None:
    """Raise for a database written by a newer release; return for one we can upgrade."""
    if state.revision is not None:
        if state.revision not in known_revisions():
            raise IndexDatabaseError(
                f"index database schema revision {state.revision} is not supported by this "
                f"program (it knows revisions up to {HEAD_REVISION}); it was written by a newer "
                "release: use that release or a new file"
            )
        return
    if state.legacy_version not in (None, LEGACY_SCHEMA_VERSION):
        raise IndexDatabaseError(
            f"index database schema version {state.legacy_version} is not supported by this "
            f"program (it knows version {LEGACY_SCHEMA_VERSION} and revisions up to "
            f"{HEAD_REVISION}); use a matching release or a new file"
        )


def known_revisions() -> set[str]:
    """Every revision in versions/."""
    from alembic.script import ScriptDirectory  # imported only when an upgrade may be needed

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return {revision.revision for revision in script.walk_revisions()}


def _upgrade_locked(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    _take_schema_lock(connection)
    state = read_state(connection)  # again: another process may have upgraded while we waited
    if state.is_current:
        return
    refuse_unknown(state)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    if state.revision is None and state.legacy_version == LEGACY_SCHEMA_VERSION:
        command.stamp(config, LEGACY_REVISION)
    command.upgrade(config, "head")


def _take_schema_lock(connection: Connection) -> None:
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The driver has not begun a transaction (it only does so before DML); this one takes
        # the write lock at once, waiting up to the busy timeout for another writer.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
