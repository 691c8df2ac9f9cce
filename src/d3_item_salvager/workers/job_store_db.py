"""The job-store database: APScheduler's jobs table, plus run history and the scheduler lease.

APScheduler's SQLAlchemyJobStore is synchronous and runs on the event loop. The run history and
the lease use a second synchronous engine on the same file, always through whole transactions run
in a worker thread. Never an async (aiosqlite) transaction here: one that spans an await would hold
the write lock while the loop is blocked inside the job store waiting for that very lock. Both
engines use WAL and the configured busy timeout (`database.busy_timeout_seconds`), so several
processes share the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread
from sqlalchemy import Column, Engine, Float, Integer, MetaData, Table, Text, create_engine, event
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import SchedulerConfig
from d3_item_salvager.data.dialects import retry_schema_race, sqlite_pragmas
from d3_item_salvager.errors import ConfigError, damaged_database, disk_full, error_text

metadata = MetaData()

job_runs = Table(
    "job_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False, index=True),
    Column("trigger", Text, nullable=False),  # a workers.runs.Trigger
    Column("scheduled_for", Text),  # ISO 8601 UTC; null for manual runs
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),  # null while running
    Column("outcome", Text),  # null while running; then a workers.runs.Outcome
    Column("error", Text),
    Column("summary", Text),  # JSON object
    Column("attempt", Integer, nullable=False, default=0),
    Column("worker", Text, nullable=False),  # host:pid:nonce of the process that ran it
)

# The error of a run closed as `abandoned`: the one text, whoever closes it (a new leader, or
# the next run to take that job's claim).
ABANDONED_ERROR = "the process running it stopped before it finished"

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
    """The synchronous URL of the job store: `job_store_url`, else the SQLite file at the path."""
    if config.job_store_url is not None:
        return config.job_store_url
    return f"sqlite:///{job_store_file(config)}"


def engine_options(url: str, busy_timeout_seconds: float) -> dict[str, Any]:
    """create_engine options for the job store's URL."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": busy_timeout_seconds, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def install_sqlite_pragmas(sync_engine: Engine, busy_timeout_seconds: float) -> None:
    """WAL and busy timeout on a SQLite job-store engine (nothing for PostgreSQL)."""
    if sync_engine.dialect.name == "sqlite":
        event.listen(sync_engine, "connect", sqlite_pragmas(busy_timeout_seconds))


def _open_job_store(config: SchedulerConfig, busy_timeout_seconds: float) -> Engine:
    url = sync_job_store_url(config)
    engine = create_engine(url, **engine_options(url, busy_timeout_seconds))
    install_sqlite_pragmas(engine, busy_timeout_seconds)
    try:
        retry_schema_race(lambda: metadata.create_all(engine))
    except DBAPIError:
        engine.dispose()
        raise
    return engine


def job_store_error(config: SchedulerConfig, error: DBAPIError) -> ConfigError:
    """Why the job store cannot be used, and the remedy: moving the file aside (losing its
    history) only for a damaged file, never for a full disk or a lock."""
    if config.job_store_url is not None:
        setting, folder = "scheduler.job_store_url", None
    else:
        setting = f"scheduler.job_store_path = {str(config.job_store_path)!r}"
        folder = Path(config.job_store_path).parent
    reason = error_text(error)
    if disk_full(error, folder):
        return ConfigError(
            f"{setting}: the disk holding the job store is full ({reason}); free some space and "
            "start again: the stored jobs and run history are kept"
        )
    if folder is not None and damaged_database(error):
        return ConfigError(
            f"{setting}: cannot use the job store ({reason}); move the file aside to start with "
            "an empty one"
        )
    return ConfigError(f"{setting}: cannot use the job store ({reason})")


async def job_store_engine_resource(
    config: SchedulerConfig, busy_timeout_seconds: float
) -> AsyncIterator[Engine]:
    """Container resource: the engine for run history and the lease (use it from threads)."""
    try:
        engine = await anyio.to_thread.run_sync(_open_job_store, config, busy_timeout_seconds)
    except DBAPIError as exc:
        raise job_store_error(config, exc) from None
    try:
        yield engine
    finally:
        engine.dispose()
