"""WorkerRuntime embedded in a host asyncio app, running real jobs on the host's loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from sqlalchemy import text

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.leader_lock import LeaderLock
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config, only_jobs
from tests.index_expectations import expected_rows, stored_rows
from tests.workers.fakes import FakeSyncService
from tests.workers.job_store_sql import job_runs, job_store
from tests.workers.test_leadership import _Seen
from tests.workers.test_tasks import with_fake


async def test_embedded_runtime_runs_jobs_while_the_host_keeps_ticking(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A scheduled scrape fills the index on the host's loop; the host's ticker never stops."""
    fake_maxroll.latency = 0.02
    config = make_config(
        tmp_path,
        maxroll=fake_maxroll.config_values(),
        scheduler={"jobs": only_jobs(scrape_guides={"interval_minutes": 0.02})},
    )
    ticks: list[float] = []

    async def host_ticker() -> None:
        while True:
            ticks.append(time.time())
            await asyncio.sleep(0.005)

    ticker = asyncio.get_running_loop().create_task(host_ticker())
    try:
        async with WorkerRuntime(config) as runtime:
            assert runtime.is_leader
            with anyio.fail_after(60):
                # On a busy machine the next tick may come while the first sync still runs:
                # that run is recorded as skipped, so wait for the success itself.
                runs = await runtime.tracker.wait_for(
                    lambda runs: any(r.outcome == "success" for r in runs)
                )
    finally:
        ticker.cancel()

    [run] = [r for r in runs if r.outcome == "success"]
    assert run.trigger == "scheduled"
    assert {r.outcome for r in runs} <= {"success", "skipped"}
    database = config.database.sqlite_path
    assert database is not None
    assert stored_rows(database) == expected_rows(fake_maxroll.site)
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        [(started_at, finished_at)] = connection.execute(
            "SELECT started_at, finished_at FROM job_runs WHERE run_id = ?", (run.run_id,)
        )
    # The host's ticker kept running while the sync ran on the same loop.
    assert [tick for tick in ticks if started_at < tick < finished_at]


async def test_second_runtime_on_the_same_store_stands_by_then_takes_over(
    tmp_path: Path,
) -> None:
    """Only one runtime holds the lease; when it stops, the standby takes over."""
    # Long enough that a busy machine never lets the lease lapse; a clean stop releases it.
    config = make_config(tmp_path, scheduler={"lease_seconds": 2})
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(WorkerRuntime(config))
        assert first.is_leader
        second = await stack.enter_async_context(WorkerRuntime(config))
        assert not second.is_leader
        assert second.scheduler is not None
        assert second.scheduler.state == STATE_PAUSED  # a standby runs nothing
        await first.__aexit__(None, None, None)
        with anyio.fail_after(10):
            await second.became_leader.wait()
        assert second.is_leader
        assert second.scheduler.state == STATE_RUNNING


def collected(value: object) -> bool:
    """Whether the cyclic collector tracks `value` (frozen objects are out of its reach)."""
    return any(candidate is value for candidate in gc.get_objects())


async def test_embedding_leaves_the_hosts_frozen_objects_frozen(tmp_path: Path) -> None:
    """By default the runtime neither freezes nor unfreezes: what the host froze stays frozen,
    and what the runtime creates is not frozen behind the host's back."""
    host_state: list[object] = [object()]
    gc.freeze()
    try:
        async with WorkerRuntime(make_config(tmp_path)) as runtime:
            assert runtime.is_leader
            assert collected(runtime.container)
        assert not collected(host_state)
    finally:
        gc.unfreeze()
    assert collected(host_state)


async def test_freeze_gc_freezes_start_up_objects_and_hands_them_back(tmp_path: Path) -> None:
    """With freeze_gc=True (the CLI's choice) start-up objects are frozen until exit."""
    async with WorkerRuntime(make_config(tmp_path), run_scheduler=False, freeze_gc=True) as runtime:
        assert not collected(runtime.container)
    assert collected(runtime.container)


async def test_burst_mode_runs_the_due_jobs_once_and_returns(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """run_due_jobs runs every due job once, returns the results, and leaves them scheduled for
    their next time; a second call finds nothing due."""
    config = make_config(
        tmp_path,
        maxroll=fake_maxroll.config_values(),
        scheduler={"run_new_jobs_at_once": True},
    )
    async with WorkerRuntime(config, burst=True) as runtime:
        assert runtime.is_leader
        assert runtime.scheduler is not None
        assert runtime.scheduler.state == STATE_PAUSED  # nothing runs on its own
        results = await runtime.run_due_jobs()
        again = await runtime.run_due_jobs()
        next_runs = {job.id: job.next_run_time for job in runtime.scheduler.get_jobs()}
    assert sorted(r.job_id for r in results) == sorted(BUILTIN_JOBS.ids)
    assert all(r.succeeded and r.trigger == "scheduled" for r in results)
    assert again == []
    assert all(moment > datetime.now(UTC) for moment in next_runs.values())
    database = config.database.sqlite_path
    assert database is not None
    assert stored_rows(database) == expected_rows(fake_maxroll.site)
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        due_times = connection.execute("SELECT scheduled_for FROM job_runs").fetchall()
    assert len(due_times) == len(BUILTIN_JOBS)
    assert all(due is not None for (due,) in due_times)


async def test_a_runtime_left_inside_a_cancelled_anyio_scope_still_stops(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """A host on AnyIO (Starlette's lifespan, a task group) cancels the scope around the
    runtime, which cancels every await inside it, the runtime's stop included: the stop still
    runs whole (it is bounded), so the run going is recorded `cancelled`, its claim given back,
    the leader lock let go and every job-store connection closed."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            **job_store_settings,
            "shutdown_timeout_seconds": 0.1,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
        },
    )
    fake = FakeSyncService("block")
    with anyio.fail_after(60), anyio.CancelScope() as scope:
        runtime = with_fake(WorkerRuntime(config), fake)
        async with runtime, anyio.create_task_group() as host:
            host.start_soon(runtime.run_job, "scrape_guides")
            await fake.started.wait()
            scope.cancel()
            await anyio.sleep_forever()
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")
    with job_store(config) as connection:
        assert list(connection.execute(text("SELECT job_id FROM job_claims"))) == []
    if "job_store_url" not in job_store_settings:
        successor = LeaderLock(config.scheduler.job_store_path)
        assert successor.take()
        successor.let_go()


async def test_a_host_cancelled_again_while_runs_finish_still_closes_them(tmp_path: Path) -> None:
    """The host task is cancelled, then cancelled again while the stop waits for the running
    job: the run is cut short at once rather than left running, so it is still recorded
    `cancelled` and its claim given back (the process lives on: its claim would hold the job
    for its whole timeout)."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            "shutdown_timeout_seconds": 30,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
        },
    )
    fake = FakeSyncService("block")
    waiting = _Seen("waiting for running jobs")
    logger = logging.getLogger("d3_item_salvager")
    logger.addHandler(waiting)
    previous_level = logger.level
    logger.setLevel(logging.INFO)

    async def host() -> None:
        runtime = with_fake(WorkerRuntime(config), fake)
        async with runtime:
            asyncio.get_running_loop().create_task(runtime.run_job("scrape_guides"))
            await asyncio.Event().wait()

    try:
        task = asyncio.get_running_loop().create_task(host())
        with anyio.fail_after(60):
            await fake.started.wait()
            task.cancel()
            await waiting.event.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        logger.removeHandler(waiting)
        logger.setLevel(previous_level)
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")
    with job_store(config) as connection:
        assert list(connection.execute(text("SELECT job_id FROM job_claims"))) == []
