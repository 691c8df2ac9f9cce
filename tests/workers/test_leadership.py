"""Leadership: losing the lease stops scheduled runs, an error steps down without dying, and a
replaced job store ends leading with a clear error.

The lease rules run on SQLite and on PostgreSQL (`job_store_settings`); a job-store *file*
replaced under the scheduler is SQLite's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from d3_item_salvager.errors import TransientFetchError
from d3_item_salvager.services.build_guides import SyncSummary
from d3_item_salvager.workers.background import WAITING_FOR_WRITES
from d3_item_salvager.workers.job_store import install_connection_settings
from d3_item_salvager.workers.leader_lock import leader_lock_path
from d3_item_salvager.workers.leadership import FatalLeadershipError
from d3_item_salvager.workers.runs import Outcome, RunResult, Trigger
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.scheduler import stop_scheduler
from tests.conftest import make_config, only_jobs
from tests.postgres_server import PostgresDatabase
from tests.workers.fakes import FakeSyncService
from tests.workers.job_store_sql import job_runs, job_store, steal_lease
from tests.workers.test_tasks import with_fake


def scrape_only(tmp_path: Path, store: dict[str, Any] | None = None, **job: Any) -> Any:
    return make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            **(store or {}),
            "lease_seconds": 4,
            "jobs": only_jobs(scrape_guides=job),
        },
    )


async def test_losing_the_lease_cancels_running_scheduled_runs(
    tmp_path: Path, lease_store_settings: dict[str, Any]
) -> None:
    """A leader that finds its lease taken pauses, and its running scheduled run is cancelled and
    recorded with the error 'lease lost'."""
    config = scrape_only(tmp_path, lease_store_settings, interval_minutes=1 / 60)
    fake = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        assert runtime.leadership is not None
        with anyio.fail_after(30):
            await fake.started.wait()  # a scheduled run is going
            steal_lease(config)
            await runtime.leadership.round()
            [run] = await runtime.wait_for_runs("scrape_guides", 1)
        assert not runtime.is_leader
        assert runtime.scheduler is not None
        assert runtime.scheduler.state == 2  # STATE_PAUSED
    assert (run.trigger, run.outcome, run.error) == (
        Trigger.SCHEDULED,
        Outcome.CANCELLED,
        "lease lost",
    )
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "lease lost")


async def test_an_error_in_lease_handling_steps_down_and_competes_again(
    tmp_path: Path, job_store_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error while renewing is logged as an error; the process steps down (paused,
    pending retries dropped) and takes the lease again on a later round."""
    config = scrape_only(
        tmp_path, job_store_settings, retry_backoff_seconds=600, interval_minutes=60
    )
    fake = FakeSyncService(TransientFetchError("http://x", "HTTP 503"))
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        leadership = runtime.leadership
        assert leadership is not None
        assert runtime.scheduler is not None
        await runtime.run_job("scrape_guides", trigger=Trigger.SCHEDULED)
        assert runtime.scheduler.get_job("scrape_guides:retry") is not None
        renew = leadership.lease.renew

        async def broken() -> bool:
            raise KeyError("a bug in lease handling")

        leadership.lease.renew = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR):
            await leadership.round()
        assert not runtime.is_leader
        assert runtime.scheduler.state == 2  # STATE_PAUSED
        assert runtime.scheduler.get_job("scrape_guides:retry") is None
        assert "lease handling failed" in caplog.text
        leadership.lease.renew = renew  # type: ignore[method-assign]
        await leadership.round()  # the lease is still ours: take it again
        assert runtime.is_leader
        assert runtime.scheduler.state == 1  # STATE_RUNNING


def move_the_store_aside(store: Path) -> None:
    store.rename(store.with_suffix(".moved"))


def delete_the_leader_lock(store: Path) -> None:
    # Another process could lock a new lock file beside a replaced store.
    leader_lock_path(store).unlink()


@pytest.mark.parametrize(
    ("replace", "reason"),
    [(move_the_store_aside, "deleted or replaced"), (delete_the_leader_lock, "lock file")],
)
async def test_a_replaced_job_store_or_lock_file_stops_leading_and_raises_to_the_host(
    tmp_path: Path, replace: Callable[[Path], None], reason: str
) -> None:
    """Deleting the job-store file (or its leader lock file) under a running scheduler is noticed
    on the next lease round: the runtime stops leading, wait_stopped raises, and so does leaving
    the block."""
    config = scrape_only(tmp_path, enabled=False)
    runtime = WorkerRuntime(config)
    await runtime.__aenter__()
    try:
        assert runtime.is_leader
        replace(config.scheduler.job_store_path)
        with anyio.fail_after(30), pytest.raises(FatalLeadershipError, match=reason):
            await runtime.wait_stopped()
        assert not runtime.is_leader
    finally:
        with pytest.raises(FatalLeadershipError):
            await runtime.__aexit__(None, None, None)


async def test_a_retry_due_at_once_finds_the_job_free(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """A retry with no backoff is planned only once the failed run has given its claim back:
    it runs (and succeeds) instead of finding the run still going and being skipped."""
    config = scrape_only(tmp_path, job_store_settings, retry_backoff_seconds=0, max_retries=1)
    fake = FakeSyncService(TransientFetchError("http://x", "HTTP 503"), SyncSummary())
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        await runtime.run_job("scrape_guides", trigger=Trigger.SCHEDULED)
        with anyio.fail_after(20):
            runs = await runtime.wait_for_runs("scrape_guides", 2)
    assert [(r.outcome, r.error) for r in runs][1] == (Outcome.SUCCESS, None)


async def test_scheduled_retries_are_counted(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """d3is_job_retries_scheduled_total counts the retry runs the runner schedules."""
    config = scrape_only(tmp_path, job_store_settings, retry_backoff_seconds=0.05, max_retries=2)
    fake = FakeSyncService(TransientFetchError("http://x", "HTTP 503"), SyncSummary())
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        await runtime.run_job("scrape_guides", trigger=Trigger.SCHEDULED)
        with anyio.fail_after(20):
            runs = await runtime.wait_for_runs("scrape_guides", 2)
        retries = runtime.metrics.retries.labels("scrape_guides")._value.get()
    assert [r.outcome for r in runs] == [Outcome.FAILED, Outcome.SUCCESS]
    assert retries == 1


async def test_manual_runs_survive_losing_the_lease(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """Only scheduled runs belong to the lease holder; a manual run keeps going."""
    config = scrape_only(tmp_path, job_store_settings, interval_minutes=60)
    fake = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        assert runtime.leadership is not None
        manual = asyncio.get_running_loop().create_task(runtime.run_job("scrape_guides"))
        with anyio.fail_after(10):
            await fake.started.wait()
        steal_lease(config)
        await runtime.leadership.round()
        assert not manual.done()
        manual.cancel()
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")


async def test_a_graceful_stop_that_cancels_a_run_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping past the shutdown timeout cancels the scheduled run: one warning line for it,
    no ERROR and no traceback from APScheduler."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            "shutdown_timeout_seconds": 0.1,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 1 / 60}),
        },
    )
    fake = FakeSyncService("block")
    with caplog.at_level(logging.INFO):
        async with with_fake(WorkerRuntime(config), fake):
            with anyio.fail_after(30):
                await fake.started.wait()
    cancelled = [r for r in caplog.records if "run cancelled" in r.getMessage()]
    assert len(cancelled) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not [r for r in caplog.records if r.exc_info]
    [row] = job_runs(config)
    assert (row["outcome"], row["error"]) == ("cancelled", "cancelled while stopping")


async def test_a_first_run_that_never_succeeded_runs_again_at_once(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """With run_new_jobs_at_once, a job whose only run was stopped mid-way runs at once on the
    next start instead of one interval later; a job that succeeded keeps its stored time."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            **job_store_settings,
            "run_new_jobs_at_once": True,
            "shutdown_timeout_seconds": 0,
            "jobs": only_jobs(
                scrape_guides={"interval_minutes": 600}, cleanup_logs={"interval_minutes": 600}
            ),
        },
    )
    first = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config), first) as runtime:
        with anyio.fail_after(30):
            await first.started.wait()
            await runtime.wait_for_runs("cleanup_logs", 1)
    second = FakeSyncService(SyncSummary())
    async with with_fake(WorkerRuntime(config), second) as runtime:
        with anyio.fail_after(30):
            [run] = await runtime.wait_for_runs("scrape_guides", 1)
        assert runtime.scheduler is not None
        cleanup_next = runtime.scheduler.get_job("cleanup_logs").next_run_time
    assert (run.trigger, run.outcome) == (Trigger.SCHEDULED, Outcome.SUCCESS)
    assert [row["outcome"] for row in job_runs(config) if row["job_id"] == "scrape_guides"] == [
        "cancelled",
        "success",
    ]
    assert (cleanup_next - datetime.now(UTC)).total_seconds() > 60 * 60


def runs_in_file(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM job_runs ORDER BY started_at, run_id")
        return [dict(row) for row in rows]


@pytest.mark.slow
async def test_a_scheduler_on_a_replaced_job_store_never_runs_beside_the_old_leader(
    tmp_path: Path,
) -> None:
    """The job store is moved aside while the leader's scheduled run is going. A second runtime
    started on the new, empty file meanwhile waits for the leader lock: it leads and runs only
    after the old leader noticed and stopped, so their runs never overlap."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            "lease_seconds": 8,  # the old leader checks its store every 2 s
            "run_new_jobs_at_once": True,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
        },
    )
    store = config.scheduler.job_store_path
    moved = store.with_suffix(".moved")
    old_service, new_service = FakeSyncService("block"), FakeSyncService(SyncSummary())
    first = with_fake(WorkerRuntime(config), old_service)
    await first.__aenter__()
    try:
        with anyio.fail_after(30):
            await old_service.started.wait()  # the old leader's run is going
        # Moved aside whole: SQLite finds the -wal and -shm files by the store's name.
        for suffix in ("", "-wal", "-shm"):
            os.rename(f"{store}{suffix}", f"{moved}{suffix}")
        async with with_fake(WorkerRuntime(config), new_service) as second:
            with anyio.fail_after(30):
                [new_run] = await second.wait_for_runs("scrape_guides", 1)
            assert first.leadership is not None
            assert first.leadership.stopped.is_set()
            assert not first.is_leader
    finally:
        with pytest.raises(FatalLeadershipError, match="deleted or replaced"):
            await first.__aexit__(None, None, None)
    [old_row] = runs_in_file(moved)
    [new_row] = job_runs(config)
    assert (old_row["outcome"], old_row["error"]) == ("cancelled", "lease lost")
    assert (new_run.outcome, new_row["run_id"]) == (Outcome.SUCCESS, new_run.run_id)
    assert new_row["started_at"] >= old_row["finished_at"]


async def test_a_standby_whose_job_store_was_replaced_never_leads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store is replaced by a copy (a backup restored) under a leader and its standby: the
    leader stops, and the standby, whose connections may still reach the old file, stops too
    instead of taking the lock the leader let go and running jobs on the files it opened."""
    config = scrape_only(tmp_path, interval_minutes=60)
    store = config.scheduler.job_store_path
    first, second = WorkerRuntime(config), WorkerRuntime(config)
    await first.__aenter__()
    try:
        await second.__aenter__()
        try:
            assert (first.is_leader, second.is_leader) == (True, False)
            copy = store.with_suffix(".copy")
            with sqlite3.connect(store) as source, sqlite3.connect(copy) as target:
                source.backup(target)
            source.close()
            target.close()
            with caplog.at_level(logging.INFO):
                caplog.clear()  # only what follows the replacement
                os.replace(copy, store)
                with anyio.fail_after(30):
                    with pytest.raises(FatalLeadershipError, match="replaced"):
                        await first.wait_stopped()  # and lets the lock go
                    with pytest.raises(FatalLeadershipError, match="replaced"):
                        await second.wait_stopped()
            assert not second.is_leader
            assert "holding the scheduler lease" not in caplog.text
        finally:
            with pytest.raises(FatalLeadershipError):
                await second.__aexit__(None, None, None)
    finally:
        with pytest.raises(FatalLeadershipError):
            await first.__aexit__(None, None, None)


async def test_a_runtime_on_its_way_out_never_takes_the_lease(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """A standby whose scheduler was already shut down (its runtime is exiting) does not take a
    lease that fell free meanwhile: leading would start the scheduler again, with nothing left to
    shut it down and close its job store's connections."""
    config = scrape_only(tmp_path, job_store_settings, interval_minutes=60)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(WorkerRuntime(config))
        second = await stack.enter_async_context(WorkerRuntime(config))
        assert (first.is_leader, second.is_leader) == (True, False)
        assert second.scheduler is not None
        assert second.leadership is not None
        await first.__aexit__(None, None, None)  # releases the lease
        await stop_scheduler(second.scheduler, second.runner, 0)  # second is on its way out
        await second.leadership.round()
        assert not second.is_leader
        assert not second.scheduler.running


class RecordingService(FakeSyncService):
    """A fake sync that notes in a shared timeline when each of its runs starts and ends."""

    def __init__(self, name: str, timeline: list[str], *behaviours: Any) -> None:
        super().__init__(*behaviours)
        self.name, self.timeline = name, timeline

    async def prepare_database(
        self, force_refresh: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> SyncSummary:
        self.timeline.append(f"{self.name} starts")
        try:
            return await super().prepare_database(force_refresh, progress)
        finally:
            self.timeline.append(f"{self.name} ends")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the lock's abstract socket is Linux's")
async def test_a_scheduler_on_a_deleted_store_folder_never_runs_beside_the_old_leader(
    tmp_path: Path,
) -> None:
    """The job store's whole folder, lock file included, is deleted under a leader whose run is
    going; a second runtime started on the same path meanwhile runs only after the old leader
    noticed and stopped."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={
            "job_store_path": "jobs/scheduler.sqlite",
            "lease_seconds": 8,  # the old leader checks its store every 2 s
            "run_new_jobs_at_once": True,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
        },
    )
    timeline: list[str] = []
    old_service = RecordingService("old", timeline, "block")
    new_service = RecordingService("new", timeline, SyncSummary())
    first = with_fake(WorkerRuntime(config), old_service)
    await first.__aenter__()
    try:
        with anyio.fail_after(30):
            await old_service.started.wait()
        await anyio.to_thread.run_sync(shutil.rmtree, config.scheduler.job_store_path.parent)
        async with with_fake(WorkerRuntime(config), new_service) as second:
            with anyio.fail_after(30):
                [new_run] = await second.wait_for_runs("scrape_guides", 1)
    finally:
        with pytest.raises(FatalLeadershipError, match="deleted or replaced"):
            await first.__aexit__(None, None, None)
    assert new_run.outcome is Outcome.SUCCESS
    assert timeline == ["old starts", "old ends", "new starts", "new ends"]


async def test_a_leader_that_cannot_renew_in_time_steps_down_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """A renewal that never returns (the database unreachable): when the lease the leader last
    confirmed runs out, it steps down on its own and its running run is cancelled, before a
    standby on another host could take the expired lease. (On SQLite the leader lock keeps
    every other process from competing meanwhile.)"""
    store = {"job_store_url": postgres.psycopg_url}
    config = scrape_only(tmp_path, store, interval_minutes=1 / 60)
    # The stop gives the never-ending renewal up after the busy timeout and a margin.
    config = config.model_copy(
        update={"database": config.database.model_copy(update={"busy_timeout_seconds": 1.0})}
    )
    fake = FakeSyncService("block")
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        leadership = runtime.leadership
        assert leadership is not None

        async def unreachable() -> bool:
            await asyncio.Event().wait()
            return True

        with anyio.fail_after(30):
            await fake.started.wait()
            leadership.lease.renew = unreachable  # type: ignore[method-assign]
            leadership.lease.try_acquire = unreachable  # type: ignore[method-assign]
            finished = 0
            cancelled: list[RunResult] = []
            while not cancelled:  # later due times are recorded `skipped` while the run blocks
                finished += 1
                runs = await runtime.wait_for_runs("scrape_guides", finished)
                cancelled = [r for r in runs if r.outcome is Outcome.CANCELLED]
        assert not runtime.is_leader
    assert [r.error for r in cancelled] == ["lease lost"]


class _Seen(logging.Handler):
    """Sets an event when a record containing `text` is logged (on the loop's thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_stopping_during_a_renewal_closes_its_connection_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal still running in its thread when the runtime stops (here: waiting for a row
    lock) is waited for: the engine is not disposed under the connection it uses, which would
    then stay open (a server session) until the garbage collector found it."""
    config = scrape_only(tmp_path, {"job_store_url": postgres.psycopg_url})
    seen = _Seen(WAITING_FOR_WRITES)
    logger = logging.getLogger("d3_item_salvager")
    logger.addHandler(seen)
    stack = AsyncExitStack()
    stack.enter_context(caplog.at_level(logging.INFO, logger="d3_item_salvager"))
    try:
        runtime = await stack.enter_async_context(WorkerRuntime(config))
        assert runtime.is_leader
        with postgres.connect() as blocker, anyio.fail_after(30):
            with blocker.transaction():
                blocker.execute("SELECT * FROM scheduler_lease FOR UPDATE")
                # The next renewal (every lease period / 4) now waits for the row.
                await anyio.to_thread.run_sync(wait_for_a_statement_waiting_for_a_lock, postgres)
                exiting = asyncio.create_task(stack.aclose())
                # The row is given back once the stop waits for the renewal. (A stop that does
                # not wait goes on to release the lease, which waits for the row as well: then
                # neither happens and the timeout fails the test.)
                waiting = asyncio.create_task(seen.event.wait())
                await asyncio.wait({exiting, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
            await exiting
        assert await anyio.to_thread.run_sync(postgres.wait_until_unused) == []
    finally:
        logger.removeHandler(seen)
        await stack.aclose()


def sessions_but(postgres: PostgresDatabase, application: str) -> list[tuple[str, str]]:
    """Wait until no session but the named application's is connected, for 10 s at most;
    returns the others still connected then."""
    deadline = time.monotonic() + 10
    while (others := [s for s in postgres.sessions() if s[1] != application]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return others


def quick_giving_up(tmp_path: Path, postgres: PostgresDatabase) -> Any:
    """A PostgreSQL job store whose statements give up waiting for a lock after half a second."""
    return make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        database={"busy_timeout_seconds": 0.5},
        scheduler={
            "job_store_url": postgres.psycopg_url,
            "lease_seconds": 4,
            "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
        },
    )


async def test_a_stop_while_the_lease_row_stays_locked_closes_every_connection_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """A lease statement waits for a row lock no longer than `database.busy_timeout_seconds`,
    as a SQLite writer does: a runtime stopped while another session keeps the lease row locked
    (an operator's transaction, a process frozen inside one) still stops, and leaves no session
    of its own behind (none waiting for the row, none left to the garbage collector)."""
    config = quick_giving_up(tmp_path, postgres)
    runtime = WorkerRuntime(config)
    await runtime.__aenter__()
    try:
        assert runtime.is_leader
    finally:
        blocker = psycopg.connect(postgres.plain_url, autocommit=True, application_name="blocker")
        try:
            with blocker.transaction():
                blocker.execute("SELECT * FROM scheduler_lease FOR UPDATE")
                await anyio.to_thread.run_sync(wait_for_a_statement_waiting_for_a_lock, postgres)
                with anyio.fail_after(60):
                    await runtime.__aexit__(None, None, None)
                left = await anyio.to_thread.run_sync(sessions_but, postgres, "blocker")
        finally:
            blocker.close()
    assert left == []


async def test_a_process_frozen_inside_a_lease_transaction_is_replaced_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    """A process of ours frozen (SIGSTOP) between a lease statement and its commit keeps the
    lease row locked: the server ends that session once it has idled in its transaction for
    `database.busy_timeout_seconds`, so another process still takes the lease over."""
    config = quick_giving_up(tmp_path, postgres)
    async with WorkerRuntime(config) as first:
        assert first.is_leader
    with job_store(config) as connection:  # the frozen process's lease, expired since
        connection.execute(
            text(
                "INSERT INTO scheduler_lease (name, holder, acquired_at, expires_at)"
                " VALUES ('scheduler', 'otherhost:1:frozen', 0, 0)"
            )
        )
    frozen_engine = create_engine(postgres.psycopg_url)
    install_connection_settings(frozen_engine, 0.5)
    try:
        frozen = frozen_engine.connect()
        frozen.execute(text("SELECT * FROM scheduler_lease FOR UPDATE"))  # and never commits
        try:
            async with WorkerRuntime(config) as second:
                with anyio.fail_after(30):
                    await second.became_leader.wait()
        finally:
            with contextlib.suppress(DBAPIError):  # the server ended its session
                frozen.close()
    finally:
        frozen_engine.dispose()


def wait_for_a_statement_waiting_for_a_lock(postgres: PostgresDatabase) -> None:
    """Poll the server (there is no event to wait on) until a session of the test database waits
    for a lock, for 30 s at most."""
    deadline = time.monotonic() + 30
    with postgres.connect() as connection:
        while not connection.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (postgres.name,),
        ).fetchone():
            assert time.monotonic() < deadline, "no statement ever waited for the row lock"
            time.sleep(0.05)
