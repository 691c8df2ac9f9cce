"""The job store's own tables: every read and write of run history, job claims, the scheduler
lease and paused jobs, for the runtime and for the read-only `status` and `history`.

APScheduler's SQLAlchemyJobStore is synchronous and runs on the event loop. Our tables use a second
synchronous engine on the same store, always through whole transactions run in a worker thread
(`in_thread`). Never an async (aiosqlite) transaction here: one that spans an await would hold the
write lock while the loop is blocked inside the job store waiting for that very lock. Engines use
WAL and the configured busy timeout on SQLite, so several processes share the file.

Every time in these tables is epoch seconds (a float). A `job_runs` table from before, which held
ISO 8601 text, is rewritten once on opening (`_migrate_run_times`); the read-only readers accept
both, so `status` reads a store that no runtime has opened since.

Job claims (one row per job id, its primary key) answer "is this job running anywhere": taking one
is an INSERT that ignores the conflict, else an UPDATE of the very claim judged stale (same holder,
same run), so two processes racing for a job never both win. A claim is stale when its process is
gone (it ran on this host and its pid no longer exists), or when it expired: it lasts the job's
timeout plus `CLAIM_MARGIN_SECONDS`. The scheduler lease is one row: with a lease period L the
holder renews it every L/4 for L/2 and a standby checks every L/4. Expiries are measured on the
PostgreSQL server's clock there (hosts whose clocks disagree still never both hold one), on this
host's clock with SQLite.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import anyio.to_thread
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Float,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    cast,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.config import SchedulerConfig
from d3_item_salvager.data.dialects import (
    insert_ignoring_conflicts,
    retry_schema_race,
    sqlite_pragmas,
)
from d3_item_salvager.errors import ConfigError, damaged_database, disk_full, error_text
from d3_item_salvager.workers.runs import Outcome, Trigger

T = TypeVar("T")

metadata = MetaData()

job_runs = Table(
    "job_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False, index=True),
    Column("trigger", Text, nullable=False),  # a workers.runs.Trigger
    Column("scheduled_for", Float),  # null for manual runs
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),  # null while running
    Column("outcome", Text),  # null while running; then a workers.runs.Outcome
    Column("error", Text),
    Column("summary", Text),  # JSON object
    Column("attempt", Integer, nullable=False, default=0),
    Column("worker", Text, nullable=False),  # host:pid:nonce of the process that ran it
)
job_claims = Table(
    "job_claims",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("holder", Text, nullable=False),  # host:pid:nonce of the claiming process
    Column("run_id", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("claimed_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
paused_jobs = Table(
    "paused_jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("changed_at", Float, nullable=False),  # the last pause or resume
    Column("held_next_run_time", Float),  # the next run time a pause cleared; null otherwise
)

# The error of a run closed as `abandoned`, whoever closes it (a new leader, or the next run of
# that job to take its claim).
ABANDONED_ERROR = "the process running it stopped before it finished"
# Beyond the job's timeout: time to write the outcome and release after a run is cut off.
CLAIM_MARGIN_SECONDS = 120.0
LEASE_NAME = "scheduler"
_MIGRATION_LOCK = 0x6433_6A6F_6273_746F  # a PostgreSQL advisory lock key of our own


# Who runs, and times


def worker_identity(nonce: str) -> str:
    """`host:pid:nonce`: names this process in history rows, the lease and job claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{nonce}"


def worker_process_alive(worker: str) -> bool:
    """False only when the worker (`host:pid:nonce`) ran on this host and its process is gone."""
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # cannot tell for another host: assume it is still running
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def utc_now() -> datetime:
    return datetime.now(UTC)


def moment(value: float | str | None) -> datetime | None:
    """A stored time as an aware datetime: epoch seconds, or ISO 8601 text (a `job_runs` table
    not migrated yet; naive text is UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


class _StoredMoment(TypeDecorator[datetime]):
    """Reads a `job_runs` time as the driver returns it (a float, or text before migration)."""

    impl = String  # no driver-side conversion, whatever the column holds
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return moment(value)


def _server_now() -> ColumnElement[float]:
    """The PostgreSQL server's time now, in epoch seconds."""
    return cast(func.extract("epoch", func.clock_timestamp()), Float)


def database_now(connection: Connection) -> float | None:
    """The clock expiries are measured on: the server's on PostgreSQL, else None (local)."""
    if connection.dialect.name != "postgresql":
        return None
    return float(connection.execute(select(_server_now())).scalar_one())


# Opening


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


def install_connection_settings(sync_engine: Engine, busy_timeout_seconds: float) -> None:
    """How long a job-store statement waits for a lock: SQLite's busy timeout (with WAL), and
    on PostgreSQL the same as `lock_timeout`. Without it a statement waiting for a row another
    session keeps locked (an operator's transaction, a process frozen inside one) would hold
    its thread, and so a runtime's stop and its process's exit, until the row is free.

    On PostgreSQL the server also ends a session of ours idle inside a transaction for as long
    (`idle_in_transaction_session_timeout`; our transactions never wait on anything but the
    database): a process frozen (SIGSTOP) between a lease statement and its commit would
    otherwise keep the lease row locked, and every other process from taking over, for good."""
    if sync_engine.dialect.name == "sqlite":
        event.listen(sync_engine, "connect", sqlite_pragmas(busy_timeout_seconds))
    elif sync_engine.dialect.name == "postgresql":
        event.listen(sync_engine, "connect", _postgres_lock_timeouts(busy_timeout_seconds))


def _postgres_lock_timeouts(busy_timeout_seconds: float) -> Callable[[Any, Any], None]:
    milliseconds = max(int(busy_timeout_seconds * 1000), 1)  # 0 would mean no timeout

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {milliseconds}")
            cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
        dbapi_connection.commit()  # a SET in a transaction rolled back would be undone

    return on_connect


def _run_times_are_text(connection: Connection) -> bool:
    columns = {
        column["name"]: column["type"] for column in inspect(connection).get_columns("job_runs")
    }
    return isinstance(columns["started_at"], String)


def _migrate_run_times(engine: Engine) -> None:
    """Rewrite a `job_runs` table of ISO 8601 text times as epoch seconds, every row kept.

    One write transaction (SQLite's write lock taken at BEGIN; a PostgreSQL advisory lock) that
    checks again inside: of two processes opening an old store at once, one migrates and the
    other finds it done. A failure rolls it all back, leaving the old table as it was.
    """
    with engine.connect() as connection:
        if not _run_times_are_text(connection):
            return  # the usual case: nothing to lock
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        if _run_times_are_text(connection):
            rows = [
                dict(row) for row in connection.execute(text("SELECT * FROM job_runs")).mappings()
            ]
            for row in rows:
                for name in _TIMES:
                    try:
                        row[name] = _epoch(moment(row[name]))
                    except ValueError:
                        raise ValueError(
                            f"cannot convert the run history to epoch seconds: run "
                            f"{row['run_id']}: {name} {row[name]!r} is not ISO 8601"
                        ) from None
            connection.execute(text("ALTER TABLE job_runs RENAME TO job_runs_iso_times"))
            for index in job_runs.indexes:  # kept by the renamed table, under the same name
                connection.execute(text(f"DROP INDEX {index.name}"))
            job_runs.create(connection)
            if rows:
                connection.execute(job_runs.insert(), rows)
            connection.execute(text("DROP TABLE job_runs_iso_times"))
        connection.commit()


def _open_job_store(config: SchedulerConfig, busy_timeout_seconds: float) -> Engine:
    url = sync_job_store_url(config)
    engine = create_engine(url, **engine_options(url, busy_timeout_seconds))
    install_connection_settings(engine, busy_timeout_seconds)
    try:
        retry_schema_race(lambda: metadata.create_all(engine))
        _migrate_run_times(engine)
    except (DBAPIError, ValueError):
        engine.dispose()
        raise
    return engine


def _setting(config: SchedulerConfig) -> str:
    if config.job_store_url is not None:
        return "scheduler.job_store_url"
    return f"scheduler.job_store_path = {str(config.job_store_path)!r}"


def job_store_error(config: SchedulerConfig, error: DBAPIError) -> ConfigError:
    """Why the job store cannot be used, and the remedy: moving the file aside (losing its
    history) only for a damaged file, never for a full disk or a lock."""
    setting = _setting(config)
    folder = Path(config.job_store_path).parent if config.job_store_url is None else None
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
    """Container resource: the engine for our tables (use it from threads: `in_thread`)."""
    try:
        engine = await anyio.to_thread.run_sync(_open_job_store, config, busy_timeout_seconds)
    except DBAPIError as exc:
        raise job_store_error(config, exc) from None
    except ValueError as exc:  # a time in an old run history that is not ISO 8601
        raise ConfigError(f"{_setting(config)}: cannot use the job store ({exc})") from None
    try:
        yield engine
    finally:
        engine.dispose()


async def in_thread(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in one transaction in a worker thread: the one way our tables are used from
    the loop."""

    def transaction() -> T:
        with engine.begin() as connection:
            return work(connection)

    return await anyio.to_thread.run_sync(transaction)


# Rows


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of `job_runs`."""

    run_id: str
    job_id: str
    trigger: str
    scheduled_for: datetime | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    summary: dict[str, Any] | None
    attempt: int
    worker: str

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a job's claim, for which run."""

    job_id: str
    holder: str
    run_id: str
    trigger: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds the lease and until when (epoch seconds)."""

    holder: str
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class PauseState:
    """One job's row: paused or resumed, since when, and the next run time a pause holds."""

    job_id: str
    paused: bool
    changed_at: datetime
    held_next_run_time: datetime | None


_TIMES = ("scheduled_for", "started_at", "finished_at")
_RUN_COLUMNS = [
    type_coerce(column, _StoredMoment()).label(column.name) if column.name in _TIMES else column
    for column in job_runs.c
]


def _run_row(values: RowMapping) -> RunRow:
    """The one decoder of a `job_runs` row (its summary is JSON text)."""
    summary = values["summary"]
    return RunRow(**{**values, "summary": json.loads(summary) if summary else None})


def read_runs(
    connection: Connection,
    job_id: str | None = None,
    limit: int | None = None,
    *,
    newest_first: bool = False,
) -> list[RunRow]:
    """Runs, finished and running, oldest first (or newest first), optionally of one job."""
    order = (job_runs.c.started_at, job_runs.c.run_id)
    query = select(*_RUN_COLUMNS).order_by(*(c.desc() for c in order) if newest_first else order)
    if job_id is not None:
        query = query.where(job_runs.c.job_id == job_id)
    if limit is not None:
        query = query.limit(limit)
    return [_run_row(values) for values in connection.execute(query).mappings()]


def read_last_finished(
    connection: Connection, job_id: str, *, skip_cancelled: bool = False
) -> RunRow | None:
    """The job's most recently finished run (optionally the last one not cancelled)."""
    query = (
        select(*_RUN_COLUMNS)
        .where(job_runs.c.job_id == job_id, job_runs.c.finished_at.is_not(None))
        .order_by(job_runs.c.finished_at.desc(), job_runs.c.run_id.desc())
        .limit(1)
    )
    if skip_cancelled:
        query = query.where(job_runs.c.outcome != str(Outcome.CANCELLED))
    values = connection.execute(query).mappings().first()
    return _run_row(values) if values is not None else None


def read_claim(connection: Connection, job_id: str) -> Claim | None:
    """The claim of `job_id` as stored (stale or not), if any."""
    row = connection.execute(select(job_claims).where(job_claims.c.job_id == job_id)).first()
    return Claim(row.job_id, row.holder, row.run_id, row.trigger, row.expires_at) if row else None


def read_lease(connection: Connection) -> LeaseHolder | None:
    """The lease row, if any (expired or not)."""
    query = select(scheduler_lease).where(scheduler_lease.c.name == LEASE_NAME)
    row = connection.execute(query).first()
    return LeaseHolder(row.holder, row.acquired_at, row.expires_at) if row else None


def lease_is_live(connection: Connection, lease: LeaseHolder) -> bool:
    """Whether its holder still holds it: unexpired by the clock that decides it (the database
    server's on PostgreSQL) and, on this host, its process still there."""
    now = database_now(connection) or time.time()
    return lease.expires_at > now and worker_process_alive(lease.holder)


def read_pause_states(connection: Connection) -> dict[str, PauseState]:
    """Every job ever paused or resumed, by id; none when the table is not there (a store that
    only APScheduler has used, or read-only)."""
    if not inspect(connection).has_table(paused_jobs.name):
        return {}
    return {
        row.job_id: PauseState(
            row.job_id,
            bool(row.paused),
            datetime.fromtimestamp(row.changed_at, UTC),
            moment(row.held_next_run_time),
        )
        for row in connection.execute(select(paused_jobs))
    }


# Run history and job claims


def _take_claim(
    connection: Connection, job_id: str, values: dict[str, Any], now: float
) -> Claim | None:
    """Claim `job_id` with `values`: None when it is ours now, else the live claim holding it."""
    # RETURNING rather than rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
    insert = (
        insert_ignoring_conflicts(job_claims, connection.dialect.name)
        .values(job_id=job_id, **values)
        .returning(job_claims.c.job_id)
    )
    for _ in range(3):  # the claim we read may change under us: read it again
        if connection.execute(insert).first() is not None:
            return None
        held = read_claim(connection, job_id)
        if held is None:  # released meanwhile: the insert decides again
            continue
        if held.expires_at >= now and worker_process_alive(held.holder):
            return held
        # Take over only the very claim judged stale: a racer that took it first wins.
        taken = connection.execute(
            update(job_claims)
            .where(
                job_claims.c.job_id == job_id,
                job_claims.c.holder == held.holder,
                job_claims.c.run_id == held.run_id,
            )
            .values(**values)
        )
        if taken.rowcount == 1:
            return None
    held = read_claim(connection, job_id)
    if held is None:
        raise RuntimeError(f"the claim of {job_id} kept changing; try again")
    return held


class RunHistory:
    """`job_runs` and `job_claims` for one worker identity; each call is one transaction in a
    worker thread. `clock` gives epoch seconds (the claims' clock on SQLite, every run time)."""

    def __init__(
        self, engine: Engine, worker: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.worker = worker
        self._clock = clock

    async def begin(
        self,
        run_id: str,
        job_id: str,
        trigger: str,
        scheduled_for: datetime | None,
        attempt: int,
        claim_seconds: float,
    ) -> Claim | None:
        """Start a run, in one transaction: take its job's claim, close as `abandoned` the
        job's runs left `running` (holding the claim means no live run of it exists: a killed
        `run JOB` left them), and write the start row. None when the run started, else the
        live claim of the run that holds the job (then nothing is written)."""

        def begin(connection: Connection) -> Claim | None:
            now = database_now(connection) or self._clock()
            claim = {
                "holder": self.worker,
                "run_id": run_id,
                "trigger": str(trigger),
                "claimed_at": now,
                "expires_at": now + claim_seconds,
            }
            held = _take_claim(connection, job_id, claim, now)
            if held is not None:
                return held
            self._abandon(connection, job_runs.c.job_id == job_id)
            self._insert(connection, run_id, job_id, trigger, scheduled_for, attempt=attempt)
            return None

        return await in_thread(self.engine, begin)

    def _insert(
        self,
        connection: Connection,
        run_id: str,
        job_id: str,
        trigger: str,
        scheduled_for: datetime | None,
        **values: Any,
    ) -> None:
        values.setdefault("started_at", self._clock())
        row = {"trigger": str(trigger), "scheduled_for": _epoch(scheduled_for), **values}
        connection.execute(
            job_runs.insert().values(run_id=run_id, job_id=job_id, worker=self.worker, **row)
        )

    def _abandon(self, connection: Connection, which: ColumnElement[bool]) -> None:
        """Close the unfinished runs `which` selects as `abandoned`."""
        connection.execute(
            update(job_runs)
            .where(which, job_runs.c.finished_at.is_(None))
            .values(
                finished_at=self._clock(), outcome=str(Outcome.ABANDONED), error=ABANDONED_ERROR
            )
        )

    def _release(self, connection: Connection, job_id: str, run_id: str) -> bool:
        mine = delete(job_claims).where(
            job_claims.c.job_id == job_id,
            job_claims.c.run_id == run_id,
            job_claims.c.holder == self.worker,
        )
        return bool(connection.execute(mine).rowcount == 1)

    async def end(
        self,
        run_id: str,
        job_id: str,
        outcome: str,
        error: str | None,
        summary: dict[str, Any] | None,
    ) -> bool:
        """End a started run, in one transaction: write how it ended and give its job's claim
        back. False when the claim had been taken over meanwhile."""
        statement = (
            update(job_runs)
            .where(job_runs.c.run_id == run_id)
            .values(
                finished_at=self._clock(),
                outcome=str(outcome),
                error=error,
                summary=json.dumps(summary, default=str) if summary is not None else None,
            )
        )

        def end(connection: Connection) -> bool:
            connection.execute(statement)
            return self._release(connection, job_id, run_id)

        return await in_thread(self.engine, end)

    async def release(self, job_id: str, run_id: str) -> bool:
        """Only give the claim back (after `end` failed); False when we no longer held it."""
        return await in_thread(self.engine, lambda c: self._release(c, job_id, run_id))

    async def record(
        self,
        run_id: str,
        job_id: str,
        trigger: str,
        outcome: str,
        scheduled_for: datetime | None,
        error: str | None = None,
    ) -> None:
        """A run that never started (missed, skipped, cancelled): one finished row."""
        now = self._clock()
        await in_thread(
            self.engine,
            lambda connection: self._insert(
                connection, run_id, job_id, trigger, scheduled_for, attempt=0,
                started_at=now, finished_at=now, outcome=str(outcome), error=error,
            ),
        )  # fmt: skip

    async def mark_abandoned(self) -> int:
        """Close runs left unfinished by processes that died (not this one's, not live ones),
        and free their claims."""
        unfinished = select(job_runs.c.run_id, job_runs.c.worker, job_runs.c.trigger).where(
            job_runs.c.finished_at.is_(None), job_runs.c.worker != self.worker
        )

        def mark(connection: Connection) -> int:
            # Scheduled runs belong to the previous lease holder, which is gone if we hold the
            # lease; manual runs are abandoned only when their process no longer exists.
            dead = [
                row.run_id
                for row in connection.execute(unfinished)
                if row.trigger != Trigger.MANUAL or not worker_process_alive(row.worker)
            ]
            if dead:
                self._abandon(connection, job_runs.c.run_id.in_(dead))
                connection.execute(delete(job_claims).where(job_claims.c.run_id.in_(dead)))
            return len(dead)

        return await in_thread(self.engine, mark)

    async def jobs_to_run_at_once(self, job_ids: Collection[str]) -> set[str]:
        """The ids of jobs whose schedule should not wait: no run of them succeeded yet, or
        their last run was abandoned (its process died mid-run), as systemd's Persistent=."""
        succeeded = select(job_runs.c.job_id).where(job_runs.c.outcome == str(Outcome.SUCCESS))

        def read(connection: Connection) -> set[str]:
            ever_succeeded = set(connection.execute(succeeded.distinct()).scalars())
            lasts = {job_id: read_last_finished(connection, job_id) for job_id in job_ids}
            return {
                job_id
                for job_id, last in lasts.items()
                if job_id not in ever_succeeded or (last and last.outcome == Outcome.ABANDONED)
            }

        return await in_thread(self.engine, read)

    async def runs(self, job_id: str | None = None) -> list[RunRow]:
        """Every run, oldest first (optionally of one job)."""
        return await in_thread(self.engine, lambda connection: read_runs(connection, job_id))

    async def claim(self, job_id: str) -> Claim | None:
        """The claim of `job_id` as stored (stale or not), if any."""
        return await in_thread(self.engine, lambda connection: read_claim(connection, job_id))

    async def prune(self, older_than: datetime) -> int:
        """Delete finished runs that started before `older_than`."""
        statement = delete(job_runs).where(
            job_runs.c.started_at < older_than.timestamp(), job_runs.c.finished_at.is_not(None)
        )
        return await in_thread(self.engine, lambda c: int(c.execute(statement).rowcount))


# The scheduler lease


class SchedulerLease:
    """Acquire, renew and release the job store's lease for one worker identity; each call is
    one short transaction in a worker thread."""

    def __init__(
        self,
        engine: Engine,
        holder: str,
        lease_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._mine = and_(scheduler_lease.c.name == LEASE_NAME, scheduler_lease.c.holder == holder)

    @property
    def check_interval(self) -> float:
        """How often the holder renews and a standby tries to take over."""
        return self.lease_seconds / 4

    @property
    def ttl(self) -> float:
        """How long one renewal (or taking the lease) holds it."""
        return self.lease_seconds / 2

    def _now(self, connection: Connection) -> ColumnElement[float]:
        """Now, as an SQL expression: the server's clock on PostgreSQL, ours elsewhere."""
        if connection.dialect.name == "postgresql":
            return _server_now()
        return literal(self._clock(), Float)

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True when we hold it now.

        One conditional UPDATE (a row lock on PostgreSQL, the write lock on SQLite), else one
        INSERT that ignores conflicts: two processes racing for a free lease never both win.
        """

        def acquire(connection: Connection) -> bool:
            now = self._now(connection)
            values = {"holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}
            free = or_(scheduler_lease.c.holder == self.holder, scheduler_lease.c.expires_at < now)
            taken = connection.execute(
                update(scheduler_lease)
                .where(scheduler_lease.c.name == LEASE_NAME, free)
                .values(**values)
            )
            if taken.rowcount == 1:
                return True
            created = connection.execute(
                insert_ignoring_conflicts(scheduler_lease, connection.dialect.name)
                .values(name=LEASE_NAME, **values)
                .returning(scheduler_lease.c.holder)
            )
            return created.first() is not None

        return await in_thread(self._engine, acquire)

    async def renew(self) -> bool:
        """Extend our lease; False when another process holds it now."""

        def extend(connection: Connection) -> bool:
            expires = self._now(connection) + self.ttl
            statement = update(scheduler_lease).where(self._mine).values(expires_at=expires)
            return bool(connection.execute(statement).rowcount == 1)

        return await in_thread(self._engine, extend)

    async def release(self) -> None:
        """Give the lease up so a standby takes over at once."""
        await in_thread(
            self._engine, lambda c: c.execute(delete(scheduler_lease).where(self._mine))
        )

    def stepped_down(self) -> None:
        """Nothing to do at once: a lease row is given back by `release` on stop, or runs out
        (a leader that stepped down after an error may still hold it)."""

    async def current(self) -> LeaseHolder | None:
        """The current holder, if any (an expired lease is still reported, with its expiry)."""
        return await in_thread(self._engine, read_lease)


# Paused jobs (the scheduler side, applying them, is paused_jobs.py)


def _set_paused(connection: Connection, job_id: str, paused: bool) -> bool:
    now = time.time()
    if paused:
        insert = (
            insert_ignoring_conflicts(paused_jobs, connection.dialect.name)
            .values(job_id=job_id, paused=True, changed_at=now)
            .returning(paused_jobs.c.job_id)
        )
        if connection.execute(insert).first() is not None:
            return True
    changed = connection.execute(
        update(paused_jobs)
        .where(paused_jobs.c.job_id == job_id, paused_jobs.c.paused == (not paused))
        .values(paused=paused, changed_at=now)
    )
    return bool(changed.rowcount == 1)


async def set_paused(engine: Engine, job_id: str, paused: bool) -> bool:
    """Pause (or resume) a job in the job store; False when it already was paused (resumed)."""
    return await in_thread(engine, lambda connection: _set_paused(connection, job_id, paused))


def hold_next_run_time(engine: Engine, job_id: str, next_run_time: datetime | None) -> bool:
    """Blocking: keep the next run time a pause clears, or drop it (None) once the job is
    resumed; False when the job was resumed (paused) meanwhile."""
    paused = next_run_time is not None
    with engine.begin() as connection:
        held = connection.execute(
            update(paused_jobs)
            .where(paused_jobs.c.job_id == job_id, paused_jobs.c.paused.is_(paused))
            .values(held_next_run_time=_epoch(next_run_time))
        )
        return bool(held.rowcount == 1)


# Read-only, for `status` and `history`


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

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds, check_same_thread=False)

    return create_engine("sqlite://", creator=connect)


class JobStoreReader:
    """One read-only connection to the job store (blocking calls; a context manager). Nothing
    here creates a file, a folder or a table: SQLite is opened `mode=ro`, PostgreSQL read-only,
    and a table not there yet reads as empty."""

    def __init__(self, config: SchedulerConfig, busy_timeout_seconds: float = 30.0) -> None:
        self._config = config
        self.engine = _read_only_engine(config, busy_timeout_seconds)
        self._connection: Connection | None = None
        self.tables: set[str] = set()

    def __enter__(self) -> Self:
        try:
            self._connection = self.engine.connect()
            self.tables = set(inspect(self._connection).get_table_names())
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
        self.engine.dispose()

    @contextmanager
    def reading(self, what: str) -> Iterator[Connection]:
        """The connection, any failure to read `what` (or to unpickle it) as a ConfigError."""
        assert self._connection is not None, "use JobStoreReader as a context manager"
        try:
            yield self._connection
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

    def pause_states(self) -> dict[str, PauseState]:
        """Every job ever paused or resumed, by id."""
        with self.reading("the paused jobs") as connection:
            return read_pause_states(connection)

    def runs(self, job_id: str | None = None, limit: int | None = None) -> list[RunRow]:
        """Finished and running runs, newest first."""
        if job_runs.name not in self.tables:
            return []
        with self.reading("the run history") as connection:
            return read_runs(connection, job_id, limit, newest_first=True)

    def last_finished(self, job_id: str, *, skip_cancelled: bool = False) -> RunRow | None:
        """The job's most recently finished run (optionally the last one not cancelled)."""
        if job_runs.name not in self.tables:
            return None
        with self.reading("the run history") as connection:
            return read_last_finished(connection, job_id, skip_cancelled=skip_cancelled)

    def lease(self) -> tuple[LeaseHolder, bool] | None:
        """The lease row and whether it is live, if there is one."""
        if scheduler_lease.name not in self.tables:
            return None
        with self.reading("the scheduler lease") as connection:
            lease = read_lease(connection)
            return (lease, lease_is_live(connection, lease)) if lease is not None else None
