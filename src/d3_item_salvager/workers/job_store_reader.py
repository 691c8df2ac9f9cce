"""Read a job store without changing it: stored jobs, run history and the lease, for `status`.

Nothing here creates a file, a folder or a table. SQLite is opened read-only (`mode=ro`), and jobs
are read through APScheduler's public job-store API (`SQLAlchemyJobStore.lookup_job` on that
read-only engine, never started, so it creates nothing either).
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self
from urllib.parse import quote

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, Engine, create_engine, inspect
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import SchedulerConfig
from d3_item_salvager.crontab import describe_cron
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.job_store_db import job_runs, scheduler_lease
from d3_item_salvager.workers.lease import LeaseHolder, lease_is_live, read_lease
from d3_item_salvager.workers.paused_jobs import PauseState, read_pause_states
from d3_item_salvager.workers.run_history import RunRow, read_last_finished, read_runs

APSCHEDULER_JOBS_TABLE = "apscheduler_jobs"


def describe_interval(interval: timedelta) -> str:
    """`every 7 d`, `every 6 h`, `every 30 min`, `every 1.5 s`: the same text from the config or
    the store."""
    seconds = interval.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"every {seconds / 86400:g} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"every {seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"every {seconds / 60:g} min"
    return f"every {seconds:g} s"


def describe_trigger(trigger: Any) -> str:
    """`every 6 h`, `cron 17 4 * * * (Europe/Berlin)`, with `, jitter 30 s` when it has one."""
    if isinstance(trigger, IntervalTrigger):
        text = describe_interval(trigger.interval)
    elif isinstance(trigger, CronTrigger):
        text = f"{describe_cron(trigger)} ({trigger.timezone})"
    else:
        return str(trigger)
    return f"{text}, jitter {trigger.jitter:g} s" if trigger.jitter else text


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One row of APScheduler's jobs table."""

    job_id: str
    trigger: str
    next_run_time: datetime | None


def _setting(config: SchedulerConfig) -> str:
    if config.job_store_url is not None:
        return "scheduler.job_store_url"
    return f"scheduler.job_store_path = {str(config.job_store_path)!r}"


def _read_only_engine(config: SchedulerConfig, busy_timeout_seconds: float) -> Engine:
    if config.job_store_url is not None and not config.job_store_url.startswith("sqlite"):
        return create_engine(config.job_store_url, pool_pre_ping=True).execution_options(
            postgresql_readonly=True
        )
    path = (
        config.job_store_url.removeprefix("sqlite:///")
        if config.job_store_url is not None
        else str(config.job_store_path)
    )
    if not os.path.isfile(path):
        raise ConfigError(
            f"{_setting(config)}: no job store there (no scheduler or job has run with this "
            "configuration)"
        )
    # mode=ro: SQLite never writes the database. A WAL database in use has its -wal and -shm
    # files, which a reader shares; without them no process has it open (the last one to close
    # removes them), and SQLite would create both to read it, so read it as immutable instead.
    in_use = os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm")
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro" + ("" if in_use else "&immutable=1")
    return create_engine("sqlite://", creator=lambda: _connect_sqlite(uri, busy_timeout_seconds))


def _connect_sqlite(uri: str, busy_timeout_seconds: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds, check_same_thread=False)


class JobStoreReader:
    """One read-only connection to the job store; use as a context manager (blocking calls)."""

    def __init__(self, config: SchedulerConfig, busy_timeout_seconds: float = 30.0) -> None:
        self._config = config
        self._engine = _read_only_engine(config, busy_timeout_seconds)
        self._connection: Connection | None = None
        self._tables: set[str] = set()

    def __enter__(self) -> Self:
        try:
            self._connection = self._engine.connect()
            self._tables = set(inspect(self._connection).get_table_names())
        except DBAPIError as exc:
            self.close()
            raise ConfigError(
                f"{_setting(self._config)}: cannot read the job store ({exc.orig})"
            ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()

    @property
    def connection(self) -> Connection:
        assert self._connection is not None, "use JobStoreReader as a context manager"
        return self._connection

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except (
            DBAPIError,
            pickle.UnpicklingError,
            EOFError,
            ImportError,
            LookupError,
            AttributeError,
            TypeError,
            ValueError,
        ) as exc:
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            raise ConfigError(
                f"{_setting(self._config)}: cannot read {what} from the job store ({reason})"
            ) from None

    def stored_jobs(self, job_ids: Iterable[str]) -> dict[str, StoredJob]:
        """The stored jobs of these scheduler ids, by id (none before a scheduler stored any)."""
        if APSCHEDULER_JOBS_TABLE not in self._tables:
            return {}
        store = SQLAlchemyJobStore(engine=self._engine, tablename=APSCHEDULER_JOBS_TABLE)
        jobs = {}
        with self._reading("the scheduled jobs"):
            for job_id in job_ids:
                job = store.lookup_job(job_id)
                if job is not None:
                    trigger = describe_trigger(job.trigger)
                    jobs[job_id] = StoredJob(job_id, trigger, job.next_run_time)
        return jobs

    def pause_states(self) -> dict[str, PauseState]:
        """Every job ever paused or resumed, by id (see paused_jobs.py)."""
        with self._reading("the paused jobs"):
            return read_pause_states(self.connection)

    def runs(self, job_id: str | None = None, limit: int | None = None) -> list[RunRow]:
        """Finished and running runs, newest first."""
        if job_runs.name not in self._tables:
            return []
        with self._reading("the run history"):
            return read_runs(self.connection, job_id, limit, newest_first=True)

    def last_finished(self, job_id: str, *, skip_cancelled: bool = False) -> RunRow | None:
        """The job's most recently finished run (optionally the last one not cancelled)."""
        if job_runs.name not in self._tables:
            return None
        with self._reading("the run history"):
            return read_last_finished(self.connection, job_id, skip_cancelled=skip_cancelled)

    def lease(self) -> tuple[LeaseHolder, bool] | None:
        """The lease row and whether it is live (see lease.lease_is_live), if there is one."""
        if scheduler_lease.name not in self._tables:
            return None
        with self._reading("the scheduler lease"):
            lease = read_lease(self.connection)
            return (lease, lease_is_live(self.connection, lease)) if lease is not None else None
