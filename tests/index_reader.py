"""Reads the index of a config, whether it is a SQLite file or a PostgreSQL database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, create_engine, text

from d3_item_salvager.config import AppConfig
from tests.index_expectations import rows_from

TABLES = ("guides", "builds", "items", "item_usages")


class _Statements:
    """Just enough of a DB-API connection for `rows_from`: execute(sql) -> tuples."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str) -> Iterator[tuple[object, ...]]:
        return (tuple(row) for row in self._connection.execute(text(sql)))


class IndexReader:
    """Synchronous reads (and test-only writes) next to the application's async engine."""

    def __init__(self, config: AppConfig) -> None:
        path = config.database.sqlite_path
        url = (
            f"sqlite:///{path}"
            if path is not None
            else config.database.url.replace("+asyncpg", "+psycopg", 1)
        )
        self.engine: Engine = create_engine(url)
        self.dialect = self.engine.dialect.name

    def rows(self) -> dict[str, set[tuple[object, ...]]]:
        with self.engine.connect() as connection:
            return rows_from(_Statements(connection))

    def dump(self) -> str:
        """Every row of every index table, ids and sync times included."""
        with self.engine.connect() as connection:
            tables = {
                table: sorted(
                    (list(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),
                    key=str,
                )
                for table in TABLES
            }
        return json.dumps(tables, default=str)

    def query(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]

    def execute(self, *statements: str) -> None:
        with self.engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))

    def close(self) -> None:
        self.engine.dispose()
