"""Runs that do not start are recorded, and never run their work: a scheduled or retry run that
starts after its runtime lost the lease (submitted while it led), or meets a run of its job
already going here. A cancel arriving during that history write neither loses the row nor leaves
the write's connection open."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from sqlalchemy import text

from d3_item_salvager.services.build_guides import SyncSummary
from d3_item_salvager.workers.background import WAITING_FOR_WRITES
from d3_item_salvager.workers.runs import Outcome, RunFinished, RunResult, Trigger
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.tasks import Submission
from tests.conftest import make_config
from tests.postgres_server import PostgresDatabase
from tests.workers.fakes import FakeSyncService
from tests.workers.job_store_sql import job_runs, job_store
from tests.workers.test_job_claims import runtime_with
from tests.workers.test_leadership import (
    _Seen,
    scrape_only,
    wait_for_a_statement_waiting_for_a_lock,
)
from tests.workers.test_leadership_stop import exit_while_blocked
from tests.workers.test_tasks import with_fake


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
    seen = _Seen(WAITING_FOR_WRITES)
    logger = logging.getLogger("d3_item_salvager")
    logger.addHandler(seen)
    stack = AsyncExitStack()
    stack.enter_context(caplog.at_level(logging.INFO, logger="d3_item_salvager"))
    finished: list[RunResult] = []
    try:
        runtime = await stack.enter_async_context(runtime_with(config, fake))
        worker = runtime.runner.history.worker
        runtime.runner.events.subscribe(
            lambda event: finished.append(event.result) if isinstance(event, RunFinished) else None
        )
        running = asyncio.create_task(runtime.run_job("scrape_guides"))
        with postgres.connect() as blocker, anyio.fail_after(30):
            await fake.started.wait()
            blocker.execute("BEGIN")
            blocker.execute(
                "INSERT INTO job_runs (run_id, job_id, trigger, started_at, attempt, worker)"
                " VALUES ('second', 'scrape_guides', 'manual', 0, 0, 'blocker')"
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
    holding = f"running now in {worker}"
    assert (rows["second"]["outcome"], rows["second"]["error"]) == ("skipped", holding)
    assert [(r.run_id, r.outcome, r.error) for r in finished if r.run_id == "second"] == [
        ("second", "skipped", holding)
    ]


async def test_a_run_submitted_before_the_lease_was_lost_does_not_start(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """The scheduler submits a run; before it starts, another process takes the lease and this
    one steps down. The run never reaches its work: it is recorded `cancelled`, "lease lost".
    Nor does a scheduled run started by hand on the standby; a manual run still runs."""
    config = scrape_only(tmp_path, job_store_settings, interval_minutes=1 / 60)
    fake = FakeSyncService(SyncSummary())
    async with with_fake(WorkerRuntime(config), fake) as runtime:
        leadership, scheduler = runtime.leadership, runtime.scheduler
        assert leadership is not None
        assert scheduler is not None
        submitted: list[str] = []

        def lose_the_lease(event: JobSubmissionEvent) -> None:
            # Called on the loop as the scheduler submits the run (after the runtime's own
            # listener): the run's task exists, and starts only after this returns.
            if submitted:
                return
            submitted.append(event.job_id)
            with job_store(config) as connection:  # taken for good by another process
                connection.execute(
                    text(
                        "UPDATE scheduler_lease SET holder = 'otherhost:1:thief',"
                        " expires_at = expires_at + 3600"
                    )
                )
            leadership.step_down("lost the scheduler lease; standing by")

        scheduler.add_listener(lose_the_lease, EVENT_JOB_SUBMITTED)
        with anyio.fail_after(30):
            [run] = await runtime.wait_for_runs("scrape_guides", 1)
        assert submitted == ["scrape_guides"]
        assert not runtime.is_leader
        by_hand = await runtime.run_job("scrape_guides", trigger=Trigger.SCHEDULED)
        assert fake.calls == []
        manual = await runtime.run_job("scrape_guides")
        assert fake.calls == [False]
    assert (run.trigger, run.outcome, run.error) == (
        Trigger.SCHEDULED,
        Outcome.CANCELLED,
        "lease lost",
    )
    assert (by_hand.outcome, by_hand.error) == (Outcome.CANCELLED, "lease lost")
    assert manual.outcome is Outcome.SUCCESS
    assert [(row["trigger"], row["outcome"], row["error"]) for row in job_runs(config)] == [
        ("scheduled", "cancelled", "lease lost"),
        ("scheduled", "cancelled", "lease lost"),
        ("manual", "success", None),
    ]
    assert job_runs(config)[0]["scheduled_for"] is not None  # its due time is kept


async def test_a_run_submitted_in_an_earlier_lease_term_does_not_start(tmp_path: Path) -> None:
    """A run submitted while leading, which starts only after the lease was lost and taken
    again, does not run either: it belonged to the earlier term. One submitted in the new term
    runs."""
    config = make_config(tmp_path, maxroll={"bearer_token": "t"})
    fake = FakeSyncService(SyncSummary())
    async with runtime_with(config, fake) as runtime:
        runner = runtime.runner
        due = datetime.now(UTC)
        runner.lead()
        earlier = Submission(due, runner.term)  # as the scheduler's executor stamps it
        runner.stand_by("lease lost")
        runner.lead()
        stale = await runtime.run_job(
            "scrape_guides", trigger=Trigger.SCHEDULED, submission=earlier
        )
        assert fake.calls == []
        fresh = await runtime.run_job(
            "scrape_guides", trigger=Trigger.SCHEDULED, submission=Submission(due, runner.term)
        )
    assert (stale.outcome, stale.error) == (Outcome.CANCELLED, "lease lost")
    assert fresh.outcome is Outcome.SUCCESS
    assert fake.calls == [False]
