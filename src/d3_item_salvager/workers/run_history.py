"""The `job_runs` table: one row per run, including missed, skipped and abandoned ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine, RowMapping, and_, delete, func, select, update

from d3_item_salvager.workers.job_claims import JobClaims, release_runs
from d3_item_salvager.workers.job_store_db import ABANDONED_ERROR, job_runs
from d3_item_salvager.workers.runs import Outcome, Trigger
from d3_item_salvager.workers.worker_identity import worker_identity, worker_process_alive

__all__ = [
    "RunHistory",
    "RunRow",
    "utc_now",
    "worker_identity",  # re-exported: callers name them from here
    "worker_process_alive",
]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of `job_runs`."""

    run_id: str
    job_id: str
    trigger: str
    scheduled_for: str | None
    started_at: str
    finished_at: str | None
    outcome: str | None
    error: str | None
    summary: dict[str, Any] | None
    attempt: int
    worker: str

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        started = datetime.fromisoformat(self.started_at)
        return round((datetime.fromisoformat(self.finished_at) - started).total_seconds(), 3)


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
    query = select(job_runs).order_by(*(c.desc() for c in order) if newest_first else order)
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
        select(job_runs)
        .where(job_runs.c.job_id == job_id, job_runs.c.finished_at.is_not(None))
        .order_by(job_runs.c.finished_at.desc(), job_runs.c.run_id.desc())
        .limit(1)
    )
    if skip_cancelled:
        query = query.where(job_runs.c.outcome != str(Outcome.CANCELLED))
    values = connection.execute(query).mappings().first()
    return _run_row(values) if values is not None else None


T = TypeVar("T")


class RunHistory:
    """Writes and reads `job_runs`; each call is one transaction run in a worker thread.

    `claims` are the same job store's job claims (job_claims.py), for the same worker.
    """

    def __init__(self, engine: Engine, worker: str, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self.worker = worker
        self._clock = clock
        self.claims = JobClaims(engine, worker)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        def transaction() -> T:
            with self._engine.begin() as connection:
                return work(connection)

        return await anyio.to_thread.run_sync(transaction)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        def read() -> T:
            with self._engine.connect() as connection:
                return work(connection)

        return await anyio.to_thread.run_sync(read)

    async def start(
        self,
        run_id: str,
        job_id: str,
        trigger: str,
        scheduled_for: datetime | None,
        attempt: int,
    ) -> datetime:
        """Record that a run started; returns the start time."""
        started = self._clock()
        statement = job_runs.insert().values(
            run_id=run_id,
            job_id=job_id,
            trigger=str(trigger),
            scheduled_for=_iso(scheduled_for),
            started_at=_iso(started),
            attempt=attempt,
            worker=self.worker,
        )
        await self._write(lambda connection: connection.execute(statement))
        return started

    async def finish(
        self, run_id: str, outcome: str, error: str | None, summary: dict[str, Any] | None
    ) -> None:
        """Record how a run ended."""
        statement = (
            update(job_runs)
            .where(job_runs.c.run_id == run_id)
            .values(
                finished_at=_iso(self._clock()),
                outcome=str(outcome),
                error=error,
                summary=json.dumps(summary, default=str) if summary is not None else None,
            )
        )
        await self._write(lambda connection: connection.execute(statement))

    async def record(
        self,
        run_id: str,
        job_id: str,
        trigger: str,
        outcome: str,
        scheduled_for: datetime | None,
        error: str | None = None,
    ) -> None:
        """A run that never started (missed, skipped): one finished row."""
        now = _iso(self._clock())
        statement = job_runs.insert().values(
            run_id=run_id,
            job_id=job_id,
            trigger=str(trigger),
            scheduled_for=_iso(scheduled_for),
            started_at=now,
            finished_at=now,
            outcome=str(outcome),
            error=error,
            attempt=0,
            worker=self.worker,
        )
        await self._write(lambda connection: connection.execute(statement))

    async def mark_abandoned(self) -> int:
        """Close runs left unfinished by processes that died (not this one's, not live ones)."""
        now = _iso(self._clock())

        def mark(connection: Connection) -> int:
            rows = connection.execute(
                select(job_runs.c.run_id, job_runs.c.worker, job_runs.c.trigger).where(
                    and_(job_runs.c.finished_at.is_(None), job_runs.c.worker != self.worker)
                )
            )
            # Scheduled runs belong to the previous lease holder, which is gone if we hold the
            # lease; manual runs are abandoned only when their process no longer exists.
            dead = [
                row.run_id
                for row in rows
                if row.trigger != Trigger.MANUAL or not worker_process_alive(row.worker)
            ]
            if dead:
                connection.execute(
                    update(job_runs)
                    .where(job_runs.c.run_id.in_(dead))
                    .values(
                        finished_at=now,
                        outcome=str(Outcome.ABANDONED),
                        error=ABANDONED_ERROR,
                    )
                )
                # Their claims go with them, so the jobs can run again at once.
                release_runs(connection, dead)
            return len(dead)

        return await self._write(mark)

    async def jobs_to_run_at_once(self, job_ids: Collection[str]) -> set[str]:
        """The ids of jobs whose schedule should not wait: no run of them succeeded yet, or
        their last run was abandoned (its process died mid-run), as systemd's Persistent=."""
        succeeded = (
            select(job_runs.c.job_id)
            .where(job_runs.c.outcome == str(Outcome.SUCCESS))
            .group_by(job_runs.c.job_id)
        )
        latest = (
            select(job_runs.c.job_id, func.max(job_runs.c.finished_at).label("finished"))
            .where(job_runs.c.finished_at.is_not(None))
            .group_by(job_runs.c.job_id)
            .subquery()
        )
        abandoned_last = (
            select(job_runs.c.job_id)
            .join(
                latest,
                and_(
                    job_runs.c.job_id == latest.c.job_id,
                    job_runs.c.finished_at == latest.c.finished,
                ),
            )
            .where(job_runs.c.outcome == str(Outcome.ABANDONED))
        )

        def read(connection: Connection) -> tuple[set[str], set[str]]:
            return (
                {row[0] for row in connection.execute(succeeded)},
                {row[0] for row in connection.execute(abandoned_last)},
            )

        ever_succeeded, abandoned = await self._read(read)
        return {job_id for job_id in job_ids if job_id not in ever_succeeded or job_id in abandoned}

    async def runs(self, job_id: str | None = None) -> list[RunRow]:
        """Every run, oldest first (optionally of one job)."""
        return await self._read(lambda connection: read_runs(connection, job_id))

    async def prune(self, older_than: datetime) -> int:
        """Delete finished runs that started before `older_than`."""
        statement = delete(job_runs).where(
            and_(
                job_runs.c.started_at < _iso(older_than),
                job_runs.c.finished_at.is_not(None),
            )
        )
        return await self._write(lambda connection: connection.execute(statement).rowcount)
