"""Runs that do not start (the job already running here) are recorded safely: a cancel arriving
during the history write neither loses the row nor leaves the write's connection open."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from d3_item_salvager.workers.runs import RunFinished, RunResult
from tests.conftest import make_config
from tests.postgres_server import PostgresDatabase
from tests.workers.fakes import FakeSyncService
from tests.workers.job_store_sql import job_runs
from tests.workers.test_job_claims import runtime_with
from tests.workers.test_leadership import _Seen, wait_for_a_statement_waiting_for_a_lock
from tests.workers.test_leadership_stop import exit_while_blocked


async def test_a_cancel_during_the_already_running_write_still_records_it_on_postgres(
    tmp_path: Path, postgres: PostgresDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduled run meeting a run of the same job is recorded `skipped`; its INSERT is held
    up (another transaction holds an uncommitted row with its run id) while the run is
    cancelled and the runtime stops. The stop waits for the write: the row is there, RunFinished
    was published, and no connection is left open."""
    config = make_config(
        tmp_path,
        maxroll={"bearer_token": "t"},
        scheduler={"job_store_url": postgres.psycopg_url},
    )
    fake = FakeSyncService("block")
    seen = _Seen("waiting for run-history writes")
    logger = logging.getLogger("d3_item_salvager")
    logger.addHandler(seen)
    stack = AsyncExitStack()
    stack.enter_context(caplog.at_level(logging.INFO, logger="d3_item_salvager"))
    finished: list[RunResult] = []
    try:
        runtime = await stack.enter_async_context(runtime_with(config, fake))
        runtime.runner.events.subscribe(
            lambda event: finished.append(event.result) if isinstance(event, RunFinished) else None
        )
        running = asyncio.create_task(runtime.run_job("scrape_guides"))
        with postgres.connect() as blocker, anyio.fail_after(30):
            await fake.started.wait()
            blocker.execute("BEGIN")
            blocker.execute(
                "INSERT INTO job_runs (run_id, job_id, trigger, started_at, attempt, worker)"
                " VALUES ('second', 'scrape_guides', 'manual', 'now', 0, 'blocker')"
            )
            second = asyncio.create_task(
                runtime.run_job("scrape_guides", trigger="scheduled", run_id="second")
            )
            await anyio.to_thread.run_sync(wait_for_a_statement_waiting_for_a_lock, postgres)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            exiting = await exit_while_blocked(stack, seen)
            blocker.execute("ROLLBACK")
            await exiting
        assert running.cancelled()
        assert await anyio.to_thread.run_sync(postgres.wait_until_unused) == []
    finally:
        logger.removeHandler(seen)
        await stack.aclose()
    rows = {row["run_id"]: row for row in job_runs(config)}
    assert (rows["second"]["outcome"], rows["second"]["error"]) == ("skipped", "already running")
    assert [(r.run_id, r.outcome, r.error) for r in finished if r.run_id == "second"] == [
        ("second", "skipped", "already running")
    ]
