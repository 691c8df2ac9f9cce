"""On PostgreSQL the lease expires by the server's clock; status judges it by the same clock."""

from __future__ import annotations

import time
from pathlib import Path

import anyio.to_thread
from sqlalchemy import text

from d3_item_salvager.container import resolve
from d3_item_salvager.workers.container import open_worker_container
from d3_item_salvager.workers.job_store import SchedulerLease
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import collect_status, health_problems
from tests.conftest import make_config
from tests.postgres_server import PostgresDatabase

SKEW = 10.0


async def test_hosts_with_skewed_clocks_never_both_lead(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """A host 10 s ahead cannot take a live lease; one 10 s behind takes an expired one."""
    config = make_config(tmp_path, scheduler={"job_store_url": postgres.psycopg_url})
    async with open_worker_container(config) as container:
        engine = await resolve(container.job_store_engine)
        # Lease period 8 s: held for 4 s per renewal, well under the 10 s skew.
        punctual = SchedulerLease(engine, "punctual", 8, clock=time.time)
        ahead = SchedulerLease(engine, "ahead", 8, clock=lambda: time.time() + SKEW)
        behind = SchedulerLease(engine, "behind", 8, clock=lambda: time.time() - SKEW)

        assert await punctual.try_acquire() is True
        # By its own clock the fast host sees the lease expired 6 s ago; the server says live.
        assert await ahead.try_acquire() is False
        assert await behind.try_acquire() is False
        assert await punctual.renew() is True
        assert await ahead.try_acquire() is False

        await punctual.release()
        assert await ahead.try_acquire() is True
        assert await punctual.try_acquire() is False
        assert await behind.try_acquire() is False

        # The leader dies; once its expiry passes by the server's clock the slow host takes over,
        # though by its own clock the lease still has 10 s to run.
        with engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE scheduler_lease "
                    "SET expires_at = extract(epoch from clock_timestamp()) - 0.5"
                )
            )
        assert await behind.try_acquire() is True
        assert await ahead.renew() is False
        assert await ahead.try_acquire() is False
        holder = await behind.current()
        assert holder is not None
        assert holder.holder == "behind"


async def test_status_reads_a_postgres_job_store(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """status finds the live lease holder and the registered jobs on PostgreSQL."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={"job_store_url": postgres.psycopg_url, "lease_seconds": 8},
    )
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(30):
            await runtime.became_leader.wait()
        report = await anyio.to_thread.run_sync(collect_status, config)
    assert report["lease"]["live"] is True
    jobs = {job["job_id"]: job for job in report["jobs"]}
    assert jobs["scrape_guides"]["trigger"] == "every 6 h"
    assert jobs["scrape_guides"]["next_run_time"] is not None
    assert health_problems(report, 15) == []
