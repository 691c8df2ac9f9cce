"""The `job_claims` table: at most one run of a job at a time, across every process of a job store.

A run claims its job before it starts and releases the claim when it ends, on every path. The claim
is one row per job id under the primary key, so taking it is atomic: an INSERT that ignores the
conflict, else one conditional UPDATE that takes over a claim only when it is stale and still the
very claim we read (same holder, same run). Two processes racing for a job can never both win,
on SQLite or PostgreSQL, on one host or several; there is no check-then-start window.

A claim is stale when its process is gone (it ran on this host and its pid no longer exists:
`worker_process_alive`), or when it expired: a claim lasts the job's timeout plus `CLAIM_MARGIN_SECONDS`, which no run outlives, so
a process that died on another host blocks the job at most that long (and a new scheduler leader
frees the claims of the scheduled runs it marks abandoned at once, see run_history.py). Expiry is
measured on the PostgreSQL server's clock there, on this host's clock with SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy import Column, Connection, Engine, Float, Table, Text, and_, delete, select, update

from d3_item_salvager.data.dialects import insert_ignoring_conflicts
from d3_item_salvager.workers.job_store_db import ABANDONED_ERROR, job_runs, metadata
from d3_item_salvager.workers.lease import database_now
from d3_item_salvager.workers.runs import Outcome
from d3_item_salvager.workers.worker_identity import worker_process_alive

# Registered on the job store's metadata, so the job store creates it with its other tables
# (an older job store gains it on the next start).
job_claims = Table(
    "job_claims",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("holder", Text, nullable=False),  # host:pid:nonce of the claiming process
    Column("run_id", Text, nullable=False),
    Column("trigger", Text, nullable=False),  # a workers.runs.Trigger
    Column("claimed_at", Float, nullable=False),  # epoch seconds
    Column("expires_at", Float, nullable=False),
)

# Beyond the job's timeout: time to write the outcome and release after a run is cut off.
CLAIM_MARGIN_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a job's claim, for which run."""

    job_id: str
    holder: str
    run_id: str
    trigger: str
    expires_at: float


class JobClaims:
    """Claim and release jobs for one worker identity; each call is one transaction in a thread."""

    def __init__(
        self, engine: Engine, worker: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.worker = worker
        self._clock = clock

    def _now(self, connection: Connection) -> float:
        server = database_now(connection)
        return server if server is not None else self._clock()

    def _stale(self, claim: Claim, now: float) -> bool:
        return claim.expires_at < now or not worker_process_alive(claim.holder)

    def claim_in(
        self,
        connection: Connection,
        job_id: str,
        run_id: str,
        trigger: str,
        ttl_seconds: float,
    ) -> Claim | None:
        """Claim `job_id` for `run_id` inside a transaction; None when it is ours now, else the
        live claim that holds it.

        Holding the claim means no live run of the job exists anywhere: a run of it still
        `running` in the history was left by a process that died (a killed `run JOB`, say), and
        is marked `abandoned` in the same transaction, whoever takes the claim next.
        """
        held = self._take(connection, job_id, run_id, trigger, ttl_seconds)
        if held is None:
            connection.execute(
                update(job_runs)
                .where(
                    and_(
                        job_runs.c.job_id == job_id,
                        job_runs.c.run_id != run_id,
                        job_runs.c.finished_at.is_(None),
                    )
                )
                .values(
                    finished_at=datetime.now(UTC).isoformat(),  # as run_history writes it
                    outcome=str(Outcome.ABANDONED),
                    error=ABANDONED_ERROR,
                )
            )
        return held

    def _take(
        self,
        connection: Connection,
        job_id: str,
        run_id: str,
        trigger: str,
        ttl_seconds: float,
    ) -> Claim | None:
        now = self._now(connection)
        values = {
            "holder": self.worker,
            "run_id": run_id,
            "trigger": str(trigger),
            "claimed_at": now,
            "expires_at": now + ttl_seconds,
        }
        # RETURNING rather than rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
        insert = (
            insert_ignoring_conflicts(job_claims, connection.dialect.name)
            .values(job_id=job_id, **values)
            .returning(job_claims.c.job_id)
        )
        if connection.execute(insert).first() is not None:
            return None
        for _ in range(3):  # the claim we read may change under us: read it again
            row = connection.execute(
                select(job_claims).where(job_claims.c.job_id == job_id)
            ).first()
            if row is None:  # released meanwhile: the insert decides again
                if connection.execute(insert).first() is not None:
                    return None
                continue
            held = Claim(row.job_id, row.holder, row.run_id, row.trigger, row.expires_at)
            if not self._stale(held, now):
                return held
            # Take over only the very claim judged stale: a racer that took it first wins.
            taken = connection.execute(
                update(job_claims)
                .where(
                    and_(
                        job_claims.c.job_id == job_id,
                        job_claims.c.holder == held.holder,
                        job_claims.c.run_id == held.run_id,
                    )
                )
                .values(**values)
            )
            if taken.rowcount == 1:
                return None
        row = connection.execute(select(job_claims).where(job_claims.c.job_id == job_id)).first()
        if row is None:
            raise RuntimeError(f"the claim of {job_id} kept changing; try again")
        return Claim(row.job_id, row.holder, row.run_id, row.trigger, row.expires_at)

    async def claim(
        self, job_id: str, run_id: str, trigger: str, ttl_seconds: float
    ) -> Claim | None:
        """Claim `job_id` for `run_id`: None when this run holds it now, else the live claim of
        the run that does (another process's, or this runtime's own running one)."""

        def transaction() -> Claim | None:
            with self._engine.begin() as connection:
                return self.claim_in(connection, job_id, run_id, trigger, ttl_seconds)

        return await anyio.to_thread.run_sync(transaction)

    async def release(self, job_id: str, run_id: str) -> bool:
        """Release our claim of `job_id` for `run_id`; False when we no longer held it."""
        statement = delete(job_claims).where(
            and_(
                job_claims.c.job_id == job_id,
                job_claims.c.run_id == run_id,
                job_claims.c.holder == self.worker,
            )
        )

        def transaction() -> bool:
            with self._engine.begin() as connection:
                return bool(connection.execute(statement).rowcount == 1)

        return await anyio.to_thread.run_sync(transaction)

    async def current(self, job_id: str) -> Claim | None:
        """The claim of `job_id` as stored (stale or not), if any."""

        def read() -> Claim | None:
            with self._engine.connect() as connection:
                row = connection.execute(
                    select(job_claims).where(job_claims.c.job_id == job_id)
                ).first()
            return (
                Claim(row.job_id, row.holder, row.run_id, row.trigger, row.expires_at)
                if row
                else None
            )

        return await anyio.to_thread.run_sync(read)


def release_runs(connection: Connection, run_ids: list[str]) -> int:
    """Inside a transaction: drop the claims of these runs (their rows were marked abandoned)."""
    if not run_ids:
        return 0
    return int(
        connection.execute(delete(job_claims).where(job_claims.c.run_id.in_(run_ids))).rowcount
    )
