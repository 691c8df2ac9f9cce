"""Index schema: created on start, versioned, and refused when unknown or corrupt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from d3_item_salvager.container import open_container
from d3_item_salvager.errors import IndexDatabaseError
from tests.conftest import make_config


async def test_schema_is_created_with_version_and_fixed_names(tmp_path: Path) -> None:
    """A new database gets the four index tables and schema version 2."""
    async with open_container(make_config(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = connection.execute(
            "SELECT value FROM schema_meta WHERE key='schema_version'"
        ).fetchone()
        usage_columns = [row[1] for row in connection.execute("PRAGMA table_info(item_usages)")]
    assert {"guides", "builds", "items", "item_usages", "schema_meta"} <= tables
    assert version == ("2",)
    assert usage_columns == ["id", "build_id", "item_id", "slot", "context"]


async def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    """A database from a newer release is not touched and the error says why."""
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        connection.execute("CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        connection.execute("INSERT INTO schema_meta VALUES ('schema_version', '99')")
    with pytest.raises(IndexDatabaseError, match="schema version 99 is not supported"):
        async with open_container(make_config(tmp_path)):
            pass
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"schema_meta", "sqlite_autoindex_schema_meta_1"}


async def test_corrupt_database_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives an IndexDatabaseError, and the file is left as it was."""
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database, just text" * 200)
    with pytest.raises(IndexDatabaseError, match="cannot open the index database"):
        async with open_container(make_config(tmp_path)):
            pass
    assert path.read_bytes().startswith(b"this is not a database")
