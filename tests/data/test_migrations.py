"""Index migrations: a new index, an index of release 0.1.0, a newer release's, concurrent starts.

Each test runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from d3_item_salvager.data.dialects import create_sqlite_engine
from d3_item_salvager.data.migrations import runner
from d3_item_salvager.data.migrations.runner import HEAD_REVISION, MIGRATIONS_DIR
from d3_item_salvager.data.schema import ensure_schema
from d3_item_salvager.errors import IndexDatabaseError

# The DDL release 0.1.0 ran (SQLAlchemy create_all), written out so the test does not depend on
# today's code. {serial} is INTEGER on SQLite and SERIAL on PostgreSQL.
RELEASE_0_1_0_DDL = """
CREATE TABLE schema_meta ("key" TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE guides (id INTEGER NOT NULL, url TEXT NOT NULL, title TEXT NOT NULL,
    class_name TEXT, modified_unix INTEGER NOT NULL, last_synced_at TEXT NOT NULL,
    PRIMARY KEY (id), UNIQUE (url));
CREATE TABLE items (id TEXT NOT NULL, name TEXT NOT NULL, slot TEXT, quality TEXT NOT NULL,
    set_name TEXT, PRIMARY KEY (id));
CREATE TABLE builds (id {serial} NOT NULL, guide_id INTEGER NOT NULL, planner_id TEXT NOT NULL,
    profile_index INTEGER NOT NULL, name TEXT NOT NULL, class_name TEXT, PRIMARY KEY (id),
    UNIQUE (guide_id, planner_id, profile_index),
    FOREIGN KEY(guide_id) REFERENCES guides (id) ON DELETE CASCADE);
CREATE INDEX ix_builds_guide_id ON builds (guide_id);
CREATE TABLE item_usages (id {serial} NOT NULL, build_id INTEGER NOT NULL,
    item_id TEXT NOT NULL, slot TEXT NOT NULL, context TEXT NOT NULL, PRIMARY KEY (id),
    UNIQUE (build_id, item_id, slot, context),
    CONSTRAINT usage_context CHECK (context IN ('main', 'kanai', 'follower')),
    FOREIGN KEY(build_id) REFERENCES builds (id) ON DELETE CASCADE,
    FOREIGN KEY(item_id) REFERENCES items (id));
CREATE INDEX ix_item_usages_item_id ON item_usages (item_id);
INSERT INTO schema_meta VALUES ('schema_version', '1');
INSERT INTO guides VALUES (7, 'https://maxroll.gg/d3/guides/a-guide', 'A guide', 'barbarian',
    1700000000, '2026-01-01T00:00:00+00:00');
INSERT INTO items VALUES ('Unique_Ring_001', 'Ring One', 'ring', 'legendary', NULL);
INSERT INTO builds (guide_id, planner_id, profile_index, name, class_name)
    VALUES (7, 'abc123', 0, 'Build', 'barbarian');
INSERT INTO item_usages (build_id, item_id, slot, context)
    VALUES (1, 'Unique_Ring_001', 'ring1', 'main');
"""
# What each child process of the concurrency test runs: the program's own start-up schema step.
OPEN_IN_A_CHILD = """
import asyncio, sys
from d3_item_salvager.config import DatabaseConfig
from d3_item_salvager.workers.startup import prepare_off_loop
asyncio.run(prepare_off_loop(DatabaseConfig(url=sys.argv[1], busy_timeout_seconds=30)))
"""
# Far below pytest-timeout's 120 s, far above a busy machine's few seconds.
OPEN_TIMEOUT_SECONDS = 60
DATA_QUERY = (
    "SELECT g.url, b.name, i.name, u.slot FROM guides g JOIN builds b ON b.guide_id = g.id "
    "JOIN item_usages u ON u.build_id = b.id JOIN items i ON i.id = u.item_id"
)


@dataclass
class Backend:
    """One empty index database, reachable by the program and by plain SQL."""

    url: str
    sqlite_path: Path | None
    postgres: Any

    def engine(self, busy_timeout_seconds: float = 30.0) -> AsyncEngine:
        if self.sqlite_path is not None:
            return create_sqlite_engine(self.url, busy_timeout_seconds=busy_timeout_seconds)
        return create_async_engine(self.url)

    def run_sql(self, script: str) -> None:
        serial = "INTEGER" if self.sqlite_path is not None else "SERIAL"
        statements = [s for s in script.format(serial=serial).split(";") if s.strip()]
        with self.connect() as connection:
            for statement in statements:
                connection.execute(statement)
            if self.sqlite_path is not None:
                connection.commit()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connect() as connection:
            return [tuple(row) for row in connection.execute(sql).fetchall()]

    def tables(self) -> set[str]:
        if self.sqlite_path is not None:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {row[0] for row in self.query(sql)}

    def connect(self) -> Any:
        if self.sqlite_path is not None:
            return closing(sqlite3.connect(self.sqlite_path))
        return self.postgres.connect()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        database = request.getfixturevalue("postgres")
        return Backend(database.asyncpg_url, None, database)
    path = tmp_path / "index.sqlite"
    return Backend(f"sqlite+aiosqlite:///{path}", path, None)


@asynccontextmanager
async def opened(backend: Backend, busy_timeout_seconds: float = 30.0) -> AsyncIterator[None]:
    engine = backend.engine(busy_timeout_seconds)
    try:
        await ensure_schema(engine)
        yield
    finally:
        await engine.dispose()


def test_head_revision_matches_the_versions_folder() -> None:
    """The constant the fast start path compares with is the newest migration."""
    assert ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() == HEAD_REVISION


async def test_new_index_is_created_at_the_newest_revision(backend: Backend) -> None:
    async with opened(backend):
        pass
    assert {"guides", "builds", "items", "item_usages", "schema_meta"} <= backend.tables()
    assert backend.query("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


async def test_index_of_release_0_1_0_is_upgraded_in_place(backend: Backend) -> None:
    """An index 0.1.0 wrote (schema_meta 1, no alembic_version) keeps its rows and is upgraded."""
    backend.run_sql(RELEASE_0_1_0_DDL)
    async with opened(backend):
        pass
    assert backend.query("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert backend.query(DATA_QUERY) == [
        ("https://maxroll.gg/d3/guides/a-guide", "Build", "Ring One", "ring1")
    ]
    # 0002: the guides read by 0.1.0 count as checked at their last sync; 0.1.0 now refuses it.
    assert backend.query("SELECT last_checked_at FROM guides") == [("2026-01-01T00:00:00+00:00",)]
    assert backend.query("SELECT value FROM schema_meta") == [("2",)]
    async with opened(backend):  # and opens again as current
        pass
    assert backend.query("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


async def test_index_of_a_newer_release_is_refused_untouched(backend: Backend) -> None:
    backend.run_sql(RELEASE_0_1_0_DDL)
    backend.run_sql(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);"
        "INSERT INTO alembic_version VALUES ('9999')"
    )
    tables = backend.tables()
    with pytest.raises(IndexDatabaseError, match="revision 9999 is not supported.*newer release"):
        async with opened(backend):
            pass
    assert backend.tables() == tables
    assert backend.query("SELECT version_num FROM alembic_version") == [("9999",)]


async def test_a_read_torn_by_another_process_upgrading_is_not_taken_for_a_newer_release(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlocked reads straddling another upgrade (schema_meta at 2, no alembic_version) are not
    refused: the state is judged again under the lock, where it is whole."""
    async with opened(backend):  # made current, as the other process would have
        pass
    whole = runner.read_state
    calls = 0

    def torn_first(connection: Connection) -> runner.SchemaState:
        nonlocal calls
        calls += 1
        if calls == 1:
            return runner.SchemaState(revision=None, legacy_version="2")
        return whole(connection)

    monkeypatch.setattr(runner, "read_state", torn_first)
    async with opened(backend):
        pass
    assert calls == 2


async def test_several_engines_opening_a_new_index_at_once_all_succeed(
    backend: Backend,
) -> None:
    """Separate engines (separate connections, as separate processes have) race on a new file."""
    engines = [backend.engine() for _ in range(6)]
    try:
        with anyio.fail_after(OPEN_TIMEOUT_SECONDS):
            async with anyio.create_task_group() as group:
                for engine in engines:
                    group.start_soon(ensure_schema, engine)
    finally:
        for engine in engines:
            await engine.dispose()
    assert backend.query("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert backend.query("SELECT value FROM schema_meta") == [("2",)]


def test_several_processes_opening_a_new_index_at_once_all_succeed(backend: Backend) -> None:
    """Real processes start at once on a new index, as the program does (off-loop step first).

    Each child is bounded: one that hangs is killed and the test fails with every child's output.
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_IN_A_CHILD, backend.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs, hung = _collect(children, OPEN_TIMEOUT_SECONDS)
    report = "\n".join(
        f"child {i} (exit {c.returncode}):\n{o}"
        for i, (c, o) in enumerate(zip(children, outputs, strict=True))
    )
    assert not hung, f"children still running after {OPEN_TIMEOUT_SECONDS} s, killed:\n{report}"
    assert all(child.returncode == 0 for child in children), report
    assert backend.query("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert backend.query("SELECT value FROM schema_meta") == [("2",)]


def _collect(children: list[subprocess.Popen[str]], timeout: float) -> tuple[list[str], bool]:
    """Every child's output; children still running at the deadline are killed (then True)."""
    deadline = time.monotonic() + timeout
    outputs: list[str] = []
    hung = False
    try:
        for child in children:
            try:
                output, _ = child.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung = True
                child.kill()
                output, _ = child.communicate()
            outputs.append(output)
    finally:
        for child in children:  # whatever went wrong here, no child outlives the test
            if child.poll() is None:
                child.kill()
                child.communicate()
    return outputs, hung


@pytest.fixture
def write_lock(tmp_path: Path) -> Iterator[Path]:
    """A current SQLite index whose write lock another connection holds during the test."""
    path = tmp_path / "index.sqlite"
    release = threading.Event()
    acquired = threading.Event()

    def hold() -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as connection:
            connection.execute("BEGIN IMMEDIATE")
            acquired.set()
            release.wait(30)
            connection.execute("ROLLBACK")

    anyio.run(_open_once, path)
    thread = threading.Thread(target=hold)
    thread.start()
    assert acquired.wait(10)
    yield path
    release.set()
    thread.join()


async def _open_once(path: Path) -> None:
    async with opened(Backend(f"sqlite+aiosqlite:///{path}", path, None)):
        pass


async def test_opening_a_current_index_does_not_write(write_lock: Path) -> None:
    """Another writer holds the lock: opening neither waits for it nor fails (no write on start)."""
    backend = Backend(f"sqlite+aiosqlite:///{write_lock}", write_lock, None)
    with anyio.fail_after(20):
        async with opened(backend, busy_timeout_seconds=0.01):
            pass
