"""The job-store database: APScheduler's jobs table, plus run history and the scheduler lease.

APScheduler's SQLAlchemyJobStore is synchronous, so it gets its own small engine; the run history
and the lease are written through an async (aiosqlite) engine on the same file. Both use WAL and a
busy timeout, so several processes (a scheduler, a `run` command, `status`) share the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.config import SchedulerConfig
from d3_item_salvager.data.sqlite import create_sqlite_engine, create_tables, sqlite_pragmas
from d3_item_salvager.errors import ConfigError

BUSY_TIMEOUT_SECONDS = 30.0
RUN_OUTCOMES = ("success", "failed", "timeout", "missed", "skipped", "cancelled", "abandoned")
RUN_TRIGGERS = ("scheduled", "manual", "retry")

metadata = MetaData()

job_runs = Table(
    "job_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False, index=True),
    Column("trigger", Text, nullable=False),  # scheduled | manual | retry
    Column("scheduled_for", Text),  # ISO 8601 UTC; null for manual runs
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),  # null while running
    Column("outcome", Text),  # null while running; then one of RUN_OUTCOMES
    Column("error", Text),
    Column("summary", Text),  # JSON object
    Column("attempt", Integer, nullable=False, default=0),
    Column("worker", Text, nullable=False),  # host:pid:nonce of the process that ran it
)

scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("acquired_at", Float, nullable=False),  # epoch seconds (wall clock: shared by hosts)
    Column("expires_at", Float, nullable=False),
)


def job_store_file(config: SchedulerConfig) -> Path:
    """The job-store path, its folder created."""
    path = Path(config.job_store_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"scheduler.job_store_path = {str(path)!r}: cannot create its folder ({exc.strerror})"
        ) from None
    return path


def sync_job_store_url(config: SchedulerConfig) -> str:
    """The URL APScheduler's SQLAlchemyJobStore uses."""
    return f"sqlite:///{job_store_file(config)}"


def install_sqlite_pragmas(sync_engine: object) -> None:
    """WAL and busy timeout for APScheduler's own (sync) engine."""
    event.listen(sync_engine, "connect", sqlite_pragmas(BUSY_TIMEOUT_SECONDS))


async def job_store_engine_resource(config: SchedulerConfig) -> AsyncIterator[AsyncEngine]:
    """Container resource: the async engine for run history and the lease."""
    url = f"sqlite+aiosqlite:///{job_store_file(config)}"
    engine = create_sqlite_engine(url, busy_timeout_seconds=BUSY_TIMEOUT_SECONDS)
    try:
        try:
            await create_tables(engine, metadata)
        except DBAPIError as exc:
            raise ConfigError(
                f"scheduler.job_store_path = {str(config.job_store_path)!r}: cannot use the job "
                f"store ({exc.orig}); move the file aside to start with an empty one"
            ) from None
        yield engine
    finally:
        await engine.dispose()
