"""The scheduler lease: only one process runs the jobs of a job store at a time.

A row in `scheduler_lease` names the holder and when its lease expires. With a lease period L, the
holder renews it every L/4 for L/2 (so two renewals may fail in a row before it is lost), and a
standby checks every L/4: after the holder dies, one takes over within 3/4 L, inside the period. Taking it is
one conditional UPDATE (which row-locks on PostgreSQL and write-locks on SQLite) or one INSERT that
ignores conflicts, so two processes racing for a free lease cannot both win, on one host or
several.

Whose clock decides expiry: on PostgreSQL the database server's (`clock_timestamp()` inside each
statement), so hosts whose clocks disagree still never both lead; on SQLite, whose processes share
one host, that host's wall clock (the injected `clock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    and_,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)

from d3_item_salvager.data.dialects import insert_ignoring_conflicts
from d3_item_salvager.workers.job_store_db import scheduler_lease
from d3_item_salvager.workers.worker_identity import worker_process_alive

LEASE_NAME = "scheduler"


def _server_now() -> ColumnElement[float]:
    """The PostgreSQL server's time now, in epoch seconds."""
    return cast(func.extract("epoch", func.clock_timestamp()), Float)


def database_now(connection: Connection) -> float | None:
    """The clock lease expiries are measured on: the server's on PostgreSQL, else None (local)."""
    if connection.dialect.name != "postgresql":
        return None
    return float(connection.execute(select(_server_now())).scalar_one())


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds the lease and until when (epoch seconds)."""

    holder: str
    acquired_at: float
    expires_at: float


class SchedulerLease:
    """Acquire, renew and release the job store's lease for one worker identity.

    Each call is one short transaction run in a worker thread (see job_store_db for why).
    """

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

    async def _transaction(self, work: Callable[[Connection], bool]) -> bool:
        def run() -> bool:
            with self._engine.begin() as connection:
                return work(connection)

        return await anyio.to_thread.run_sync(run)

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True when we hold it now."""

        def acquire(connection: Connection) -> bool:
            now = self._now(connection)
            expires = now + self.ttl
            taken = connection.execute(
                update(scheduler_lease)
                .where(
                    and_(
                        scheduler_lease.c.name == LEASE_NAME,
                        or_(
                            scheduler_lease.c.holder == self.holder,
                            scheduler_lease.c.expires_at < now,
                        ),
                    )
                )
                .values(holder=self.holder, acquired_at=now, expires_at=expires)
            )
            if taken.rowcount == 1:
                return True
            # RETURNING rather than rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
            created = connection.execute(
                insert_ignoring_conflicts(scheduler_lease, connection.dialect.name)
                .values(name=LEASE_NAME, holder=self.holder, acquired_at=now, expires_at=expires)
                .returning(scheduler_lease.c.holder)
            )
            return created.first() is not None

        return await self._transaction(acquire)

    async def renew(self) -> bool:
        """Extend our lease; False when another process holds it now."""

        def extend(connection: Connection) -> bool:
            statement = (
                update(scheduler_lease)
                .where(
                    and_(
                        scheduler_lease.c.name == LEASE_NAME,
                        scheduler_lease.c.holder == self.holder,
                    )
                )
                .values(expires_at=self._now(connection) + self.ttl)
            )
            return connection.execute(statement).rowcount == 1

        return await self._transaction(extend)

    async def release(self) -> None:
        """Give the lease up so a standby takes over at once."""
        statement = delete(scheduler_lease).where(
            and_(scheduler_lease.c.name == LEASE_NAME, scheduler_lease.c.holder == self.holder)
        )
        await self._transaction(lambda connection: connection.execute(statement).rowcount >= 0)

    async def current(self) -> LeaseHolder | None:
        """The current holder, if any (an expired lease is still reported, with its expiry)."""

        def read() -> LeaseHolder | None:
            with self._engine.connect() as connection:
                return read_lease(connection)

        return await anyio.to_thread.run_sync(read)


def read_lease(connection: Connection) -> LeaseHolder | None:
    """The lease row, if any (expired or not)."""
    row = connection.execute(
        select(scheduler_lease).where(scheduler_lease.c.name == LEASE_NAME)
    ).first()
    return LeaseHolder(row.holder, row.acquired_at, row.expires_at) if row else None


def lease_is_live(connection: Connection, lease: LeaseHolder) -> bool:
    """Whether its holder still holds it: unexpired by the clock that decides it (the database
    server's on PostgreSQL) and, on this host, its process still there."""
    now = database_now(connection) or time.time()
    return lease.expires_at > now and worker_process_alive(lease.holder)
