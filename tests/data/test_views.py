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
