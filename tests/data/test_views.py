"""The views come with migration 0002: on a new index, on an index at 0001, and no write after."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from d3_item_salvager.container import open_container
from d3_item_salvager.data.migrations.runner import HEAD_REVISION
from tests.conftest import make_config


def view_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {
            row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='view'")
        }


async def test_views_are_created_and_added_to_an_index_at_revision_0001(tmp_path: Path) -> None:
    """A new index has both views; an index at revision 0001 is upgraded and gets them."""
    config = make_config(tmp_path)
    path = tmp_path / "index.sqlite"
    async with open_container(config):
        pass
    assert view_names(path) == {"item_usage", "salvage_candidates"}
    with sqlite3.connect(path) as connection:
        connection.execute("DROP VIEW salvage_candidates")
        connection.execute("DROP VIEW item_usage")
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    async with open_container(config):
        pass
    assert view_names(path) == {"item_usage", "salvage_candidates"}
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]


async def test_an_index_with_its_views_is_not_written_on_start(tmp_path: Path) -> None:
    """Opening an up-to-date index changes nothing in the file (its change counter stays)."""
    config = make_config(tmp_path)
    path = tmp_path / "index.sqlite"
    async with open_container(config):
        pass

    def change_counter() -> int:
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int.from_bytes(path.read_bytes()[24:28], "big")

    before = change_counter()
    async with open_container(config):
        pass
    assert change_counter() == before


async def test_an_index_at_revision_0003_gets_the_build_class_view(tmp_path: Path) -> None:
    """Revision 0004 replaces item_usage: its classes are the builds', not the guides'."""
    config = make_config(tmp_path)
    path = tmp_path / "index.sqlite"
    async with open_container(config):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute("DROP VIEW item_usage")
        connection.execute(
            "CREATE VIEW item_usage AS SELECT g.class_name AS class_names FROM guides g"
        )
        connection.execute("UPDATE alembic_version SET version_num = '0003'")
        connection.execute(
            "INSERT INTO guides (id, url, title, class_name, modified_unix, last_synced_at) "
            "VALUES (1, 'https://maxroll.gg/d3/guides/g', 'G', 'barbarian', 0, '2026-01-01')"
        )
        connection.execute(
            "INSERT INTO builds (id, guide_id, planner_id, profile_index, name, class_name) "
            "VALUES (1, 1, '400000001', 0, 'B', 'necromancer')"
        )
        connection.execute(
            "INSERT INTO items (id, name, slot, quality) VALUES ('I', 'Item', 'head', 'set')"
        )
        connection.execute(
            "INSERT INTO item_usages (build_id, item_id, slot, context) "
            "VALUES (1, 'I', 'head', 'main')"
        )
    async with open_container(config):
        pass
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT classes, class_names FROM item_usage").fetchall()
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert rows == [(1, "necromancer")]
    assert revision == [(HEAD_REVISION,)] == [("0004",)]
