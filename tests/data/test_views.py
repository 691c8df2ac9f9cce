"""The views exist on every index, are added to an index that lacks them, and cost no write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from d3_item_salvager.container import open_container
from tests.conftest import make_config


def view_sql(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as connection:
        return dict(connection.execute("SELECT name, sql FROM sqlite_master WHERE type='view'"))


async def test_views_are_created_and_added_to_an_index_without_them(tmp_path: Path) -> None:
    """A new index has both views; an index from before them gets them on the next start."""
    config = make_config(tmp_path)
    path = tmp_path / "index.sqlite"
    async with open_container(config):
        pass
    assert set(view_sql(path)) == {"item_usage", "salvage_candidates"}
    with sqlite3.connect(path) as connection:
        connection.execute("DROP VIEW salvage_candidates")
    async with open_container(config):
        pass
    assert set(view_sql(path)) == {"item_usage", "salvage_candidates"}


async def test_an_index_with_its_views_is_not_written_on_start(tmp_path: Path) -> None:
    """Opening an up-to-date index changes nothing in the file (its change counter stays)."""
    config = make_config(tmp_path)
    path = tmp_path / "index.sqlite"
    async with open_container(config):
        pass

    def data_version() -> int:
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int.from_bytes(path.read_bytes()[24:28], "big")  # the file change counter

    before = data_version()
    async with open_container(config):
        pass
    assert data_version() == before
