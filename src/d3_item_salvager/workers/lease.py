"""The scheduler lease: only one process runs the jobs of a job store at a time.

A row in `scheduler_lease` names the holder and when its lease expires. With a lease period L, the
holder renews it every L/4 for L/2 (so two renewals may fail in a row before it is lost), and a
standby checks every L/4: after the holder dies, one takes over within 3/4 L, inside the period. Taking it is
one conditional UPDATE (which row-locks on PostgreSQL and write-locks on SQLite) or one INSERT that
ignores conflicts, so two processes racing for a free lease cannot both win, on one host or
several. Expiry uses each host's wall clock: hosts sharing a PostgreSQL job store need NTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Connection, Engine, and_, delete, or_, select, update

from d3_item_salvager.data.dialects import insert_ignoring_conflicts
from d3_item_salvager.workers.job_store_db import scheduler_lease

LEASE_NAME = "scheduler"


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
    def _ttl(self) -> float:
        return self.lease_seconds / 2

    async def _transaction(self, work: Callable[[Connection], bool]) -> bool:
        def run() -> bool:
            with self._engine.begin() as connection:
                return work(connection)

        return await anyio.to_thread.run_sync(run)

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True when we hold it now."""
        now = self._clock()
        expires = now + self._ttl

        def acquire(connection: Connection) -> bool:
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
        statement = (
            update(scheduler_lease)
            .where(
                and_(scheduler_lease.c.name == LEASE_NAME, scheduler_lease.c.holder == self.holder)
            )
            .values(expires_at=self._clock() + self._ttl)
        )
        return await self._transaction(
            lambda connection: connection.execute(statement).rowcount == 1
        )

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
                row = connection.execute(
                    select(scheduler_lease).where(scheduler_lease.c.name == LEASE_NAME)
                ).first()
            return LeaseHolder(row.holder, row.acquired_at, row.expires_at) if row else None

        return await anyio.to_thread.run_sync(read)
