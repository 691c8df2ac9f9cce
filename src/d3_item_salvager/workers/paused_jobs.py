"""The `paused_jobs` table: which jobs an operator paused, and how the scheduler leader honours it.

`pause JOB` and `resume JOB` (or `WorkerRuntime.pause_job` / `resume_job`) only write this table,
so a pause holds across restarts and reaches a scheduler running in another process. The process
leading the scheduler applies the table with APScheduler's public API when it registers the jobs
and in every lease round after (a lease period / 4): pausing clears the job's next run time
(`scheduler.pause_job`), and the time it cleared is kept here (`held_next_run_time`, written first,
so a paused job always has it). Resuming sets that time back (`modify_job(next_run_time=...)`), or
now when it passed during the pause: the job runs once at once, never once per fire time it
missed. A paused job's pending retry run is dropped; a manual run is not affected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Table,
    Text,
    inspect,
    select,
    update,
)

from d3_item_salvager.data.dialects import insert_ignoring_conflicts
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.workers.job_store_db import metadata
from d3_item_salvager.workers.jobs import retry_job_id

_log = get_logger(__name__)

# Registered on the job store's metadata, so the job store creates it with its other tables.
paused_jobs = Table(
    "paused_jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("changed_at", Float, nullable=False),  # epoch seconds of the last pause or resume
    # The next run time the leader cleared when it paused the job (epoch seconds); null while
    # running on schedule.
    Column("held_next_run_time", Float),
)


@dataclass(frozen=True, slots=True)
class PauseState:
    """One job's row: paused or resumed, since when, and the next run time a pause holds."""

    job_id: str
    paused: bool
    changed_at: datetime
    held_next_run_time: datetime | None


def _moment(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def read_pause_states(connection: Connection) -> dict[str, PauseState]:
    """Every job ever paused, by id; none when the table does not exist (read-only readers)."""
    if not inspect(connection).has_table(paused_jobs.name):
        return {}
    rows = connection.execute(select(paused_jobs))
    return {
        row.job_id: PauseState(
            row.job_id,
            bool(row.paused),
            datetime.fromtimestamp(row.changed_at, UTC),
            _moment(row.held_next_run_time),
        )
        for row in rows
    }


def _set_paused(connection: Connection, job_id: str, paused: bool) -> bool:
    """Inside a transaction: pause or resume `job_id`; False when it already was so."""
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

    def transaction() -> bool:
        with engine.begin() as connection:
            return _set_paused(connection, job_id, paused)

    return await anyio.to_thread.run_sync(transaction)


async def read_pause_states_async(engine: Engine) -> dict[str, PauseState]:
    """`read_pause_states` in a worker thread, on a connection of its own."""

    def read() -> dict[str, PauseState]:
        with engine.connect() as connection:
            return read_pause_states(connection)

    return await anyio.to_thread.run_sync(read)


def _hold(engine: Engine, job_id: str, next_run_time: datetime | None) -> bool:
    """Note the next run time a pause clears; False when the job was resumed meanwhile."""
    with engine.begin() as connection:
        held = connection.execute(
            update(paused_jobs)
            .where(paused_jobs.c.job_id == job_id, paused_jobs.c.paused.is_(True))
            .values(held_next_run_time=next_run_time.timestamp() if next_run_time else None)
        )
        return bool(held.rowcount == 1)


def _release(engine: Engine, job_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(paused_jobs)
            .where(paused_jobs.c.job_id == job_id, paused_jobs.c.paused.is_(False))
            .values(held_next_run_time=None)
        )


def apply_pause_states(
    scheduler: BaseScheduler,
    engine: Engine,
    states: dict[str, PauseState],
    now: datetime | None = None,
) -> list[str]:
    """Pause and resume the scheduler's jobs as the table says; one line per change.

    Only a job whose state differs is touched, so applying twice changes nothing.
    """
    now = now or datetime.now(UTC)
    changes = []
    for job_id, state in states.items():
        job = scheduler.get_job(job_id)
        if job is None:  # disabled, or not a job of this configuration
            continue
        if state.paused and job.next_run_time is not None:
            if not _hold(engine, job_id, job.next_run_time):
                continue  # resumed since we read the table: the next round sees it
            scheduler.pause_job(job_id)
            changes.append(f"{job_id}: paused (was due at {job.next_run_time.isoformat()})")
            if scheduler.get_job(retry_job_id(job_id)) is not None:
                scheduler.remove_job(retry_job_id(job_id))
                changes.append(f"{job_id}: pending retry run dropped (paused)")
        elif not state.paused and job.next_run_time is None:
            # Due during the pause: once, at once. Never held by us: its next fire time from now.
            held = state.held_next_run_time
            when = max(held, now) if held else job.trigger.get_next_fire_time(None, now)
            scheduler.modify_job(job_id, next_run_time=when)
            _release(engine, job_id)
            changes.append(f"{job_id}: resumed, next run at {when.isoformat()}")
    return changes


def keep_paused(scheduler: BaseScheduler, engine: Engine) -> list[str]:
    """Read the table and apply it now (blocking, as APScheduler's own job store calls are);
    returns the ids of the stored jobs that are paused."""
    with engine.connect() as connection:
        states = read_pause_states(connection)
    _log_changes(apply_pause_states(scheduler, engine, states))
    return sorted(
        job_id
        for job_id, state in states.items()
        if state.paused and scheduler.get_job(job_id) is not None
    )


def _log_changes(changes: list[str]) -> None:
    for change in changes:
        _log.info("paused jobs: %s", change)


class PausedJobsKeeper:
    """A leader's side of the table: applies it when it changed since the last look."""

    def __init__(self, scheduler: BaseScheduler, engine: Engine) -> None:
        self._scheduler = scheduler
        self._engine = engine
        self._seen: dict[str, bool] | None = None  # job id -> paused, as last applied

    def forget(self) -> None:
        """Apply the table at the next check whatever it says (a new term as leader)."""
        self._seen = None

    async def check(self) -> list[str]:
        """Read the table (in a thread); apply it when a job was paused or resumed since."""
        states = await read_pause_states_async(self._engine)
        if not self._scheduler.running:  # shut down on the way out meanwhile
            return []
        wanted = {job_id: state.paused for job_id, state in states.items()}
        if wanted == self._seen:
            return []
        changes = apply_pause_states(self._scheduler, self._engine, states)
        _log_changes(changes)
        self._seen = wanted
        return changes
