"""Every job-store connection is closed, on every path: no psycopg connection is left to the
garbage collector (which warns, ResourceWarning, in whatever test happens to run then)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import psycopg
import pytest
from sqlalchemy import create_engine

from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.job_store import metadata
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.postgres_server import SERVER_URL, PostgresDatabase


@pytest.fixture
def role_without_create(postgres: PostgresDatabase) -> Iterator[str]:
    """A job-store URL for a role that may use the run-history and lease tables (made here)
    but not create tables, so APScheduler's job store fails to start."""
    engine = create_engine(postgres.psycopg_url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    role = f"d3is_limited_{uuid.uuid4().hex[:8]}"
    with postgres.connect() as connection:
        connection.execute(f'CREATE ROLE "{role}" LOGIN')
        connection.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        connection.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        connection.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
    try:
        yield postgres.psycopg_url.replace("postgres@", f"{role}@", 1)
    finally:
        # Roles are cluster-wide: drop its grants in this database, then the role itself.
        with postgres.connect() as connection:
            connection.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(SERVER_URL or "", autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_a_scheduler_that_fails_to_start_closes_its_connections(
    tmp_path: Path, postgres: PostgresDatabase, role_without_create: str
) -> None:
    """APScheduler's job store cannot create its table: start fails with one clear error, and
    every connection the runtime opened is closed (none is left for the garbage collector)."""
    config = make_config(
        tmp_path, maxroll={"bearer_token": "t"}, scheduler={"job_store_url": role_without_create}
    )
    with pytest.raises(ConfigError, match="scheduler.job_store_url: cannot load the job store"):
        async with WorkerRuntime(config):
            pass
    role = role_without_create.split("://", 1)[1].split("@", 1)[0]
    sessions = await anyio.to_thread.run_sync(postgres.wait_until_unused)
    assert [user for user, _ in sessions if user == role] == []
