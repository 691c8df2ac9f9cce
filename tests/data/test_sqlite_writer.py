"""The one guide diff (data/guide_rows.py) on every route that runs it, and the SQLite writer.

The scenario is written to one SQLite file through `IndexRepository` on the async engine
(`AsyncConnection.run_sync`, the route of PostgreSQL and of an in-memory index), to another
through `SqliteGuideWriter` (its thread, group commit, remembered items), and to PostgreSQL when
a server is available; every step must report the expected changes, and the routes must leave
the same rows (on SQLite, ids included).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import GuideChanges, IndexRepository, placeholder_item
from d3_item_salvager.data.sqlite_writer import (
    WAL_CHECKPOINT_PAGES,
    WRITER_CACHE_KIB,
    SqliteGuideWriter,
)
from d3_item_salvager.errors import IndexDatabaseError
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, ItemUsage
from tests.conftest import make_config
from tests.index_reader import IndexReader
from tests.postgres_server import PostgresDatabase

KEPT_USAGES = (
    "SELECT u.item_id FROM item_usages u JOIN builds b ON b.id = u.build_id "
    "WHERE b.planner_id = 'p2'"
)
CHECKED = "SELECT last_checked_at FROM guides"
SYNCED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GUIDE = GuideRecord(guide_id=1, title="Guide", url="https://site/guide", modified_unix=10)


def item(item_id: str, name: str | None = None) -> CatalogItem:
    return CatalogItem(item_id=item_id, name=name or item_id.title(), slot="ring", quality="set")


def build(planner: str, index: int, name: str, *usages: tuple[str, str, str]) -> BuildRecord:
    return BuildRecord(
        planner_id=planner,
        profile_index=index,
        name=name,
        class_name="Wizard",
        usages=tuple(ItemUsage(i, slot, context) for i, slot, context in usages),  # type: ignore[arg-type]
    )


# (guide, builds, catalog records, kept planners) written in order; each step a kind of change.
SCENARIO: list[tuple[GuideRecord, list[BuildRecord], list[CatalogItem], set[str]]] = [
    # A new guide; an item the catalog does not know gets a placeholder.
    (
        GUIDE,
        [
            build("p1", 0, "Fire", ("a", "ring", "main"), ("b", "ring", "kanai")),
            build("p1", 1, "Ice", ("a", "ring", "follower")),
        ],
        [item("a"), placeholder_item("b")],
        set(),
    ),
    # The same again: nothing changes.
    (
        GUIDE,
        [
            build("p1", 0, "Fire", ("a", "ring", "main"), ("b", "ring", "kanai")),
            build("p1", 1, "Ice", ("a", "ring", "follower")),
        ],
        [item("a"), placeholder_item("b")],
        set(),
    ),
    # A build renamed, one removed, one added; usages removed and added; items renamed/known.
    (
        GuideRecord(guide_id=1, title="Guide v2", url=GUIDE.url, modified_unix=11),
        [
            build("p1", 0, "Fire v2", ("a", "ring", "main"), ("c", "ring", "main")),
            build("p2", 0, "Lightning", ("b", "ring", "main")),
        ],
        [item("a", "Renamed"), item("b"), placeholder_item("c")],
        set(),
    ),
    # Planner p2 could not be read: its build and usages stay while p1 gains a build, and the
    # guide is left unchecked.
    (
        GUIDE,
        [
            build("p1", 0, "Fire v2", ("a", "ring", "main"), ("c", "ring", "main")),
            build("p1", 2, "Frost", ("c", "ring", "kanai")),
        ],
        [item("a", "Renamed"), placeholder_item("c")],
        {"p2"},
    ),
    # A placeholder never overwrites a real record.
    (
        GUIDE,
        [build("p1", 0, "Fire v2", ("a", "ring", "main"))],
        [placeholder_item("a")],
        set(),
    ),
    # The guide's URL moved to a new post id: the old guide goes, with its builds (cascade).
    (
        GuideRecord(guide_id=2, title="Moved", url=GUIDE.url, modified_unix=12),
        [build("p3", 0, "Poison", ("a", "ring", "main"))],
        [item("a", "Renamed")],
        set(),
    ),
]


# What each step of SCENARIO changes. Removing a build removes its usages without counting
# them (the builds removed are counted).
EXPECTED = [
    GuideChanges(guide_created=True, builds_created=2, items_upserted=2, usages_created=3),
    GuideChanges(),
    GuideChanges(
        builds_created=1,
        builds_updated=1,
        builds_removed=1,
        items_upserted=3,
        usages_created=2,
        usages_removed=1,
    ),
    GuideChanges(builds_created=1, usages_created=1),
    GuideChanges(builds_removed=2, usages_removed=1),
    GuideChanges(guide_created=True, builds_created=1, usages_created=1),
]


@dataclass
class Indexes:
    """Two SQLite indexes: one written through SQLAlchemy Core, one through the writer."""

    core_config: AppConfig
    core: IndexRepository
    writer_config: AppConfig
    writer: IndexRepository


@pytest.fixture
async def indexes(tmp_path: Path) -> AsyncIterator[Indexes]:
    async with AsyncExitStack() as stack:
        opened: list[tuple[AppConfig, IndexRepository]] = []
        for name in ("core", "writer"):
            (tmp_path / name).mkdir()
            config = make_config(tmp_path / name)
            resource = index_engine_resource(config.database)
            engine = await anext(resource)
            stack.push_async_callback(_finish, resource)
            writer = None
            if name == "writer":
                path = config.database.sqlite_path
                assert path is not None
                writer = SqliteGuideWriter(path, busy_timeout_seconds=0.2)
                stack.push_async_callback(writer.aclose)
            opened.append((config, IndexRepository(engine, writer)))
        yield Indexes(*opened[0], *opened[1])


async def _finish(resource: AsyncIterator[object]) -> None:
    async for _ in resource:  # runs the resource's clean-up
        pass


async def test_every_step_changes_the_same_rows_and_reports_the_same_counts(
    indexes: Indexes,
) -> None:
    core, writer = indexes.core, indexes.writer
    core_reader = IndexReader(indexes.core_config)
    writer_reader = IndexReader(indexes.writer_config)
    try:
        for step, (guide, builds, records, kept) in enumerate(SCENARIO):
            catalog = {record.item_id: record for record in records}
            expected = await core.write_guide(guide, builds, catalog, SYNCED, kept_planners=kept)
            actual = await writer.write_guide(guide, builds, catalog, SYNCED, kept_planners=kept)
            assert asdict(expected) == asdict(EXPECTED[step]), f"step {step}"
            assert asdict(actual) == asdict(expected), f"step {step}"
            assert writer_reader.dump() == core_reader.dump(), f"step {step}"
            if kept:
                # The kept planner's usage survived the new build's re-read of build ids.
                assert writer_reader.query(KEPT_USAGES) == [("b",)], f"step {step}"
                assert writer_reader.query(CHECKED) == [(None,)], f"step {step}"
        # The scenario did exercise every kind of change.
        assert core_reader.query("SELECT id FROM guides") == [(2,)]
    finally:
        core_reader.close()
        writer_reader.close()


async def test_postgresql_runs_the_same_diff_to_the_same_rows(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """Every step on PostgreSQL reports the expected changes and leaves the rows the SQLite
    writer leaves (ids aside: a PostgreSQL sequence never reuses an id)."""
    async with AsyncExitStack() as stack:
        sqlite_config = make_config(tmp_path / "sqlite")
        resource = index_engine_resource(sqlite_config.database)
        await anext(resource)  # the schema
        stack.push_async_callback(_finish, resource)
        path = sqlite_config.database.sqlite_path
        assert path is not None
        writer = SqliteGuideWriter(path, busy_timeout_seconds=0.2)
        stack.push_async_callback(writer.aclose)
        pg_config = make_config(tmp_path / "pg", database={"url": postgres.asyncpg_url})
        pg_resource = index_engine_resource(pg_config.database)
        pg = IndexRepository(await anext(pg_resource))
        stack.push_async_callback(_finish, pg_resource)
        sqlite_reader = IndexReader(sqlite_config)
        stack.callback(sqlite_reader.close)
        pg_reader = IndexReader(pg_config)
        stack.callback(pg_reader.close)
        for step, (guide, builds, records, kept) in enumerate(SCENARIO):
            catalog = {record.item_id: record for record in records}
            await writer.write_guide(guide, builds, catalog, SYNCED, kept_planners=kept)
            changes = await pg.write_guide(guide, builds, catalog, SYNCED, kept_planners=kept)
            assert asdict(changes) == asdict(EXPECTED[step]), f"step {step}"
            assert pg_reader.rows() == sqlite_reader.rows(), f"step {step}"
            assert pg_reader.query(CHECKED) == sqlite_reader.query(CHECKED), f"step {step}"
            if kept:
                assert pg_reader.query(KEPT_USAGES) == [("b",)], f"step {step}"


async def test_a_failing_write_rolls_the_whole_guide_back(
    indexes: Indexes,
) -> None:
    config, writer = indexes.writer_config, indexes.writer
    guide, builds, records, _ = SCENARIO[0]
    await writer.write_guide(guide, builds, {r.item_id: r for r in records}, SYNCED)
    reader = IndexReader(config)
    try:
        reader.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON item_usages WHEN NEW.item_id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        before = reader.dump()
        changed = [build("p9", 0, "New", ("a", "ring", "main"), ("boom", "ring", "main"))]
        with pytest.raises(IndexDatabaseError, match="injected failure"):
            await writer.write_guide(
                GuideRecord(1, "Renamed", GUIDE.url, 99), changed, {"a": item("a")}, SYNCED
            )
        assert reader.dump() == before
    finally:
        reader.close()


async def test_a_write_waits_for_the_busy_timeout_then_fails_cleanly(
    indexes: Indexes,
) -> None:
    config, writer = indexes.writer_config, indexes.writer
    path = config.database.sqlite_path
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the 0.2 s timeout
        guide, builds, records, _ = SCENARIO[0]
        with pytest.raises(IndexDatabaseError, match="locked"):
            await writer.write_guide(guide, builds, {r.item_id: r for r in records}, SYNCED)
        other.execute("ROLLBACK")
        # The writer is usable again once the lock is gone.
        changes = await writer.write_guide(guide, builds, {r.item_id: r for r in records}, SYNCED)
        assert changes.guide_created
    finally:
        other.close()


async def test_a_sqlite_container_writes_guides_on_its_writer_thread_and_stops_it(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    async with open_container(config) as container:
        repository: IndexRepository = await resolve(container.index_repository)
        guide, builds, records, _ = SCENARIO[0]
        await repository.write_guide(guide, builds, {r.item_id: r for r in records}, SYNCED)
        seen = [t.name for t in threading.enumerate() if t.name.startswith("index-writer")]
        assert seen, "the guide was not written by the SQLite writer thread"
    assert not [t for t in threading.enumerate() if t.name.startswith("index-writer")]


async def test_the_writer_keeps_statement_journals_in_memory_and_checkpoints_seldom(
    indexes: Indexes,
) -> None:
    """A guide's multi-row statements spill their statement journal to a new temporary file past
    64 kB unless temp_store is MEMORY (creating that file cost more CPU than the guide's rows);
    checkpoints every 1,000 WAL pages made each serialised write much slower; a 2 MB page cache
    made a large index re-read its item-index pages from the OS on every write."""
    path = indexes.writer_config.database.sqlite_path
    assert path is not None
    writer = SqliteGuideWriter(path, busy_timeout_seconds=0.2)
    try:
        guide, builds, records, _ = SCENARIO[0]
        await writer.write_guide(guide, builds, {r.item_id: r for r in records}, SYNCED)

        def settings() -> tuple[int, str, int, int, int]:
            connection = writer._connect()  # on the writer thread, as every write

            def pragma(name: str) -> Any:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()

            return (
                pragma("temp_store"),
                pragma("journal_mode"),
                pragma("foreign_keys"),
                pragma("wal_autocheckpoint"),
                pragma("cache_size"),
            )

        # temp_store 2: MEMORY; a negative cache_size is in KiB
        assert writer._executor.submit(settings).result() == (
            2,
            "wal",
            1,
            WAL_CHECKPOINT_PAGES,
            -WRITER_CACHE_KIB,
        )
    finally:
        await writer.aclose()
