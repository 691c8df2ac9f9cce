"""PostgreSQL for the tests: a fresh database per test on the server named by TEST_POSTGRES_URL.

The `postgres` fixture is registered in tests/conftest.py.

`.ci/run` starts a throw-away server and sets the variable. Elsewhere these tests skip and say how
to enable them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL"
)  # read at import: the autouse env cleaner runs later
HOW_TO_ENABLE = (
    "PostgreSQL tests need a server: set TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/postgres "
    '(`eval "$(bash .ci/postgres.sh start /tmp/pg)"` starts one, as .ci/run does)'
)


@dataclass(frozen=True)
class PostgresDatabase:
    """One empty database and its URLs for each driver."""

    name: str
    plain_url: str

    @property
    def asyncpg_url(self) -> str:
        return self.plain_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def psycopg_url(self) -> str:
        return self.plain_url.replace("postgresql://", "postgresql+psycopg://", 1)

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.plain_url, autocommit=True)

    def sessions(self) -> list[tuple[str, str]]:
        """(user, application) of every session connected to this database now."""
        with psycopg.connect(SERVER_URL or "", autocommit=True) as admin:
            rows = admin.execute(
                "SELECT usename, application_name FROM pg_stat_activity"
                " WHERE datname = %s AND backend_type = 'client backend'",
                (self.name,),
            )
            return [(str(user), str(application)) for user, application in rows]

    def wait_until_unused(self, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Wait until no session is connected (a closed client's server process exits a moment
        later); returns the sessions still connected after `timeout`."""
        deadline = time.monotonic() + timeout
        while (sessions := self.sessions()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return sessions


@pytest.fixture
def postgres() -> Iterator[PostgresDatabase]:
    """A new database, dropped after the test."""
    if not SERVER_URL:
        pytest.skip(HOW_TO_ENABLE)
    name = f"d3is_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = SERVER_URL.rsplit("/", 1)[0]
    database = PostgresDatabase(name, f"{base}/{name}")
    left_open: list[tuple[str, str]] = []
    try:
        yield database
        # Everything the test opened is closed by now: a session still connected is a leak
        # (found here, in the test that made it, not when the collector warns in a later one).
        left_open = database.wait_until_unused()
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if left_open:
        pytest.fail(f"connections to the test database left open: {left_open}")
