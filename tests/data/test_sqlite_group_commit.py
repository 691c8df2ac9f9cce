"""Group commit in the SQLite guide writer: guides queued behind a write share one transaction.

Every test holds the index's write lock from another connection so that the first write waits
inside BEGIN IMMEDIATE while the next ones queue behind it; releasing the lock lets them run. The
queue is filled on the event loop before anything is awaited, so what lands in which group does
not depend on timing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import GuideChanges
from d3_item_salvager.data.sqlite_writer import MAX_GROUP, SqliteGuideWriter
from d3_item_salvager.errors import IndexDatabaseError
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, ItemUsage
from tests.conftest import make_config
from tests.data.test_sqlite_writer import SYNCED

ITEMS = {"a": CatalogItem("a", "A", "ring", "set"), "boom": CatalogItem("boom", "B", "ring", "set")}


def guide(number: int, *item_ids: str) -> tuple[GuideRecord, list[BuildRecord]]:
    record = GuideRecord(number, f"Guide {number}", f"https://site/guides/{number}", 10)
    usages = tuple(ItemUsage(item_id, "ring", "main") for item_id in item_ids or ("a",))
    return record, [BuildRecord(f"p{number}", 0, "Build", "Monk", usages)]


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


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the write lock until the block ends (or is rolled back)."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
        if other.in_transaction:
            other.execute("ROLLBACK")
    finally:
        other.close()


def stored_guides(path: Path) -> dict[int, int]:
    """Guide id -> its usages, as committed."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT g.id, count(u.id) FROM guides g JOIN builds b ON b.guide_id = g.id "
            "JOIN item_usages u ON u.build_id = b.id GROUP BY g.id"
        ).fetchall()
    connection.close()
    return dict(rows)


async def queue_behind_a_blocked_write(
    writer: SqliteGuideWriter, numbers: list[tuple[int, tuple[str, ...]]]
) -> tuple[asyncio.Task[GuideChanges], list[asyncio.Task[GuideChanges]]]:
    """Start guide 1 (it waits for the lock), then queue the others behind it."""
    first = asyncio.create_task(writer.write_guide(*guide(1), ITEMS, SYNCED))
    await asyncio.sleep(0)  # guide 1 is queued and its group handed to the writer thread
    assert writer.queued == 0
    queued = [
        asyncio.create_task(writer.write_guide(*guide(number, *items), ITEMS, SYNCED))
        for number, items in numbers
    ]
    await asyncio.sleep(0)
    assert writer.queued == len(numbers)
    return first, queued


async def test_guides_queued_behind_a_write_are_committed_together(
    index: Path, writer: SqliteGuideWriter
) -> None:
    with write_lock_held(index) as other:
        first, queued = await queue_behind_a_blocked_write(
            writer, [(number, ()) for number in range(2, 7)]
        )
        other.execute("ROLLBACK")
        results = await asyncio.wait_for(asyncio.gather(first, *queued), 30)
    assert all(changes.guide_created and changes.usages_created == 1 for changes in results)
    # Guide 1 alone, then the five that queued meanwhile in one transaction.
    assert writer.transactions == 2
    assert writer.guides_written == 6
    assert stored_guides(index) == dict.fromkeys(range(1, 7), 1)


async def test_a_group_holds_at_most_max_group_guides(
    index: Path, writer: SqliteGuideWriter
) -> None:
    count = MAX_GROUP + 3
    with write_lock_held(index) as other:
        first, queued = await queue_behind_a_blocked_write(
            writer, [(number, ()) for number in range(2, count + 2)]
        )
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.gather(first, *queued), 30)
    assert writer.transactions == 3  # 1, then MAX_GROUP, then the rest
    assert len(stored_guides(index)) == count + 1


async def write_a_group_with_a_failing_guide(
    index: Path, writer: SqliteGuideWriter, raise_action: str
) -> list[asyncio.Task[GuideChanges]]:
    """Guides 2, 3 and 4 written as one group; a trigger fails guide 3's usage of item "boom"
    with `RAISE(raise_action, message)`. Returns the group's tasks, done."""
    with sqlite3.connect(index) as connection:
        connection.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON item_usages WHEN NEW.item_id = 'boom' "
            f"BEGIN SELECT RAISE({raise_action}); END"
        )
    connection.close()
    with write_lock_held(index) as other:
        first, queued = await queue_behind_a_blocked_write(
            writer, [(2, ("a",)), (3, ("a", "boom")), (4, ("a",))]
        )
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.wait([first, *queued]), 30)
    return queued


async def test_a_failing_guide_rolls_back_alone_and_the_others_are_written(
    index: Path, writer: SqliteGuideWriter
) -> None:
    queued = await write_a_group_with_a_failing_guide(index, writer, "ABORT, 'injected failure'")
    assert queued[0].result().guide_created
    with pytest.raises(IndexDatabaseError, match="guides/3 failed: injected failure"):
        queued[1].result()
    assert queued[2].result().guide_created
    # Guide 3's guide and build rows, written before its usage failed, were rolled back too.
    assert stored_guides(index) == {1: 1, 2: 1, 4: 1}
    with sqlite3.connect(index) as connection:
        assert connection.execute("SELECT count(*) FROM guides WHERE id = 3").fetchone() == (0,)
    connection.close()
    assert writer.transactions == 2


async def test_a_guide_that_loses_the_whole_transaction_never_takes_the_others_with_it(
    index: Path, writer: SqliteGuideWriter
) -> None:
    """RAISE(ROLLBACK) ends the whole transaction, as a full disk or an I/O error can: the guides
    written before it in the group are written again, never reported written and lost."""
    queued = await write_a_group_with_a_failing_guide(index, writer, "ROLLBACK, 'transaction lost'")
    with pytest.raises(IndexDatabaseError, match="guides/3 failed: transaction lost"):
        queued[1].result()
    reported = {2 + i for i, task in enumerate(queued) if task.exception() is None}
    assert reported == {2, 4}
    assert stored_guides(index) == {1: 1, 2: 1, 4: 1}
    assert writer.transactions == 3  # guide 1; the lost group; guides 2 and 4 again


async def test_a_write_cancelled_before_its_group_starts_is_not_written(
    index: Path, writer: SqliteGuideWriter
) -> None:
    with write_lock_held(index) as other:
        first, queued = await queue_behind_a_blocked_write(writer, [(2, ()), (3, ())])
        queued[0].cancel()
        other.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.wait([first, *queued]), 30)
    assert queued[0].cancelled()
    assert queued[1].result().guide_created
    assert stored_guides(index) == {1: 1, 3: 1}


async def test_closing_the_writer_waits_for_the_queued_guides(index: Path) -> None:
    writer = SqliteGuideWriter(index, busy_timeout_seconds=30)
    with write_lock_held(index) as other:
        first, queued = await queue_behind_a_blocked_write(writer, [(2, ()), (3, ())])
        closing = asyncio.create_task(writer.aclose())
        await asyncio.sleep(0)
        assert not closing.done()
        other.execute("ROLLBACK")
        await asyncio.wait_for(closing, 30)
    assert all(task.done() and task.exception() is None for task in [first, *queued])
    assert stored_guides(index) == {1: 1, 2: 1, 3: 1}


async def test_a_lock_held_past_the_busy_timeout_fails_the_whole_group_cleanly(
    index: Path,
) -> None:
    writer = SqliteGuideWriter(index, busy_timeout_seconds=0.2)
    try:
        with write_lock_held(index):
            first, queued = await queue_behind_a_blocked_write(writer, [(2, ()), (3, ())])
            await asyncio.wait_for(asyncio.wait([first, *queued]), 30)
        for number, task in enumerate([first, *queued], start=1):
            with pytest.raises(IndexDatabaseError, match=f"guides/{number} failed: .*locked"):
                task.result()
        assert stored_guides(index) == {}
        # Usable again once the lock is gone.
        assert (await writer.write_guide(*guide(9), ITEMS, SYNCED)).guide_created
    finally:
        await writer.aclose()
