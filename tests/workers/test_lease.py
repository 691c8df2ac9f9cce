"""SchedulerLease on a real job store: SQLite with a clock the test moves, and the same rules on
SQLite and PostgreSQL with expiry forced in the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from d3_item_salvager.container import resolve
from d3_item_salvager.workers.container import open_worker_container
from d3_item_salvager.workers.job_store_db import scheduler_lease
from d3_item_salvager.workers.lease import SchedulerLease
from tests.conftest import make_config


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_lease_is_exclusive_expires_and_is_taken_over(tmp_path: Path) -> None:
    """One holder at a time; renewals keep it; once expired a standby takes it; release frees it."""
    clock = Clock()
    async with open_worker_container(make_config(tmp_path)) as container:
        engine = await resolve(container.job_store_engine)
        first = SchedulerLease(engine, "first", 8, clock=clock)
        second = SchedulerLease(engine, "second", 8, clock=clock)
        assert (first.check_interval, await first.try_acquire()) == (2, True)
        assert await second.try_acquire() is False
        clock.now += 3
        assert await first.renew() is True  # held until 1003 + 4
        clock.now += 3.9
        assert await second.try_acquire() is False
        clock.now += 0.2  # first missed two renewals: its lease has expired
        assert await second.try_acquire() is True
        assert await first.renew() is False
        holder = await first.current()
        assert holder is not None
        assert (holder.holder, holder.expires_at) == ("second", clock.now + 4)
        await second.release()
        assert await first.current() is None
        assert await first.try_acquire() is True


async def test_lease_rules_hold_on_either_backend(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """One holder at a time, renewals keep it, an expired lease is taken over and its former
    holder cannot renew, and a released lease is free at once: on SQLite and on PostgreSQL."""
    config = make_config(tmp_path, scheduler=job_store_settings)
    async with open_worker_container(config) as container:
        engine = await resolve(container.job_store_engine)
        first = SchedulerLease(engine, "first", 8)
        second = SchedulerLease(engine, "second", 8)
        assert await first.try_acquire() is True
        assert await first.try_acquire() is True  # ours already: taking it again renews it
        assert await second.try_acquire() is False
        assert await first.renew() is True
        assert await second.renew() is False
        assert await second.try_acquire() is False
        with engine.begin() as connection:  # the holder stopped renewing long ago
            connection.execute(update(scheduler_lease).values(expires_at=0.0))
        assert await second.try_acquire() is True
        assert await first.renew() is False
        assert await first.try_acquire() is False
        holder = await first.current()
        assert holder is not None
        assert holder.holder == "second"
        await second.release()
        assert await second.current() is None
        assert await first.try_acquire() is True
