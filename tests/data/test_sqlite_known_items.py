"""The SQLite writer remembers the item rows it stored, and never trusts that memory too far.

Guides of one sync share most of their items; the writer skips reading back the rows it knows
are stored as it left them. These tests show the reads are skipped, and that what it remembers
is forgotten whenever it may be wrong: another connection committed, or the rows it wrote were
rolled back (a guide's savepoint, or the whole transaction). Nor does it read the builds of a
guide it has just created, or the usages of builds it has just inserted: none can exist.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import GuideChanges
from d3_item_salvager.data.sqlite_writer import SqliteGuideWriter
from d3_item_salvager.errors import IndexDatabaseError
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, ItemUsage
from tests.conftest import make_config
from tests.data.test_sqlite_group_commit import write_lock_held
from tests.data.test_sqlite_writer import SYNCED


def item(item_id: str, name: str = "") -> CatalogItem:
    return CatalogItem(item_id, name or item_id.upper(), "ring", "legendary")


async def write(writer: SqliteGuideWriter, number: int, *items: CatalogItem) -> GuideChanges:
    record = GuideRecord(number, f"Guide {number}", f"https://site/guides/{number}", 10)
    usages = tuple(ItemUsage(i.item_id, "ring", "main") for i in items)
    build = BuildRecord(f"p{number}", 0, "Build", "Monk", usages)
    return await writer.write_guide(record, [build], {i.item_id: i for i in items}, SYNCED)


def stored_items(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT id, name FROM items").fetchall()
    connection.close()
    return dict(rows)


def add_failing_trigger(path: Path, action: str) -> None:
    """Inserting a usage of item "boom" fails with RAISE(action)."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON item_usages WHEN NEW.item_id = 'boom' "
            f"BEGIN SELECT RAISE({action}); END"
        )
    connection.close()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Path]:
    config = make_config(tmp_path)
    resource = index_engine_resource(config.database)
    await anext(resource)  # the schema
    path = config.database.sqlite_path
    assert path is not None
    yield path
    async for _ in resource:  # disposes of the engine
        pass


@pytest.fixture
async def writer(index: Path) -> AsyncIterator[SqliteGuideWriter]:
    writer = SqliteGuideWriter(index, busy_timeout_seconds=30)
    yield writer
    await writer.aclose()


async def traced(writer: SqliteGuideWriter) -> list[str]:
    """Every statement the writer's connection runs from now on."""
    statements: list[str] = []

    def install() -> None:
        # The sqlite3 connection under SQLAlchemy's, on the writer thread.
        dbapi_connection = writer._connect().connection.dbapi_connection
        assert dbapi_connection is not None
        dbapi_connection.set_trace_callback(statements.append)

    await asyncio.get_running_loop().run_in_executor(writer._executor, install)
    return statements


async def test_items_a_guide_stored_are_not_read_again_for_the_next(
    index: Path, writer: SqliteGuideWriter
) -> None:
    await write(writer, 1, item("a"), item("b"))
    statements = await traced(writer)
    changes = await write(writer, 2, item("a"), item("b"))
    assert changes.items_upserted == 0
    assert changes.usages_created == 2
    assert not [s for s in statements if "items" in s.replace("item_usages", "")]
    # A renamed item is still written (and read first, to tell new from changed).
    changes = await write(writer, 3, item("a", "Renamed"), item("b"))
    assert changes.items_upserted == 1
    assert stored_items(index) == {"a": "Renamed", "b": "B"}


async def test_an_item_another_connection_changed_is_written_again(
    index: Path, writer: SqliteGuideWriter
) -> None:
    """Without looking at data_version, the writer would take "a" as still named "A"."""
    await write(writer, 1, item("a"))
    with sqlite3.connect(index) as other:
        other.execute("UPDATE items SET name = 'Changed elsewhere' WHERE id = 'a'")
    other.close()
    changes = await write(writer, 2, item("a"))
    assert changes.items_upserted == 1
    assert stored_items(index) == {"a": "A"}


async def test_items_of_a_guide_rolled_back_are_not_taken_as_stored(
    index: Path, writer: SqliteGuideWriter
) -> None:
    """Guide 3 inserts item "z" and then fails: its savepoint takes "z" away again."""
    add_failing_trigger(index, "ABORT, 'injected failure'")
    with write_lock_held(index) as other:
        first = asyncio.create_task(write(writer, 1, item("a")))
        await asyncio.sleep(0)  # guide 1 waits for the lock; the next two queue behind it
        failing = asyncio.create_task(write(writer, 3, item("z"), item("boom")))
        second = asyncio.create_task(write(writer, 2, item("a")))
        await asyncio.sleep(0)
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.wait([first, failing, second]), 30)
    with pytest.raises(IndexDatabaseError, match="injected failure"):
        failing.result()
    assert "z" not in stored_items(index)
    changes = await write(writer, 4, item("z"))
    assert changes.items_upserted == 1
    assert stored_items(index)["z"] == "Z"


async def test_items_of_a_lost_transaction_are_written_again(
    index: Path, writer: SqliteGuideWriter
) -> None:
    """Guide 2 inserts item "y", then guide 3 ends the whole transaction: when guide 2 is
    written again, "y" is inserted again rather than taken as stored."""
    add_failing_trigger(index, "ROLLBACK, 'transaction lost'")
    with write_lock_held(index) as other:
        first = asyncio.create_task(write(writer, 1, item("a")))
        await asyncio.sleep(0)
        kept = asyncio.create_task(write(writer, 2, item("y")))
        lost = asyncio.create_task(write(writer, 3, item("boom")))
        await asyncio.sleep(0)
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.wait([first, kept, lost]), 30)
    with pytest.raises(IndexDatabaseError, match="transaction lost"):
        lost.result()
    assert kept.result().items_upserted == 1
    assert stored_items(index) == {"a": "A", "y": "Y"}
    assert writer.transactions == 3  # guide 1; the lost group; guide 2 again


async def test_a_new_guide_reads_no_builds_or_usages_back(
    index: Path, writer: SqliteGuideWriter
) -> None:
    """A guide row just created has no builds and new builds have no usages (foreign keys);
    an existing guide's builds and usages are read to diff them."""
    statements = await traced(writer)

    def reads() -> list[str]:
        return [
            s
            for s in statements
            if s.startswith("SELECT") and ("builds.name" in s or "FROM item_usages" in s)
        ]

    changes = await write(writer, 1, item("a"), item("b"))
    assert changes.guide_created
    assert changes.usages_created == 2
    assert reads() == []
    changes = await write(writer, 1, item("a"))
    assert changes.usages_removed == 1
    assert len(reads()) == 2  # its builds, then their usages
