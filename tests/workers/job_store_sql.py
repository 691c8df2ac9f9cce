"""Read and change a job store behind the runtime's back, on SQLite or PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, text

from d3_item_salvager.config import AppConfig
from d3_item_salvager.workers.job_store import sync_job_store_url


@contextmanager
def job_store(config: AppConfig) -> Iterator[Connection]:
    """One transaction on the configured job store, as another process would open it."""
    engine = create_engine(sync_job_store_url(config.scheduler))
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def steal_lease(config: AppConfig) -> None:
    """Another process takes the lease (as after our renewals failed for a whole period)."""
    with job_store(config) as connection:
        connection.execute(text("UPDATE scheduler_lease SET holder = 'otherhost:1:thief'"))


def job_runs(config: AppConfig) -> list[dict[str, Any]]:
    """Every run-history row, oldest first."""
    with job_store(config) as connection:
        rows = connection.execute(text("SELECT * FROM job_runs ORDER BY started_at, run_id"))
        return [dict(row._mapping) for row in rows]
