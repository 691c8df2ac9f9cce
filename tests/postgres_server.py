"""PostgreSQL for the tests: a fresh database per test on the server named by TEST_POSTGRES_URL.

The `postgres` fixture is registered in tests/conftest.py.

`.ci/run` starts a throw-away server and sets the variable. Elsewhere these tests skip and say how
to enable them.
"""

from __future__ import annotations

import os
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


@pytest.fixture
def postgres() -> Iterator[PostgresDatabase]:
    """A new database, dropped after the test."""
    if not SERVER_URL:
        pytest.skip(HOW_TO_ENABLE)
    name = f"d3is_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = SERVER_URL.rsplit("/", 1)[0]
    try:
        yield PostgresDatabase(name, f"{base}/{name}")
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
