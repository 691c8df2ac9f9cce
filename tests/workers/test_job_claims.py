"""Job claims through the runner: one run of a job at a time across runtimes, given back always
(the claim's own race and staleness rules: test_job_store.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from dependency_injector import providers

from d3_item_salvager.config import AppConfig
from d3_item_salvager.errors import JobRunningElsewhereError
from d3_item_salvager.services.build_guides import SyncSummary
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.job_store import RunHistory
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.workers.fakes import FakeSyncService

# Through the runner: two runtimes on one job store stand for two processes.


def job_runs(config: AppConfig) -> list[dict[str, Any]]:
    with sqlite3.connect(config.scheduler.job_store_path) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute("SELECT * FROM job_runs ORDER BY started_at, rowid")
        return [dict(row) for row in rows]


def runtime_with(config: AppConfig, fake: FakeSyncService) -> WorkerRuntime:
    runtime = WorkerRuntime(config, run_scheduler=False)
    runtime.container.build_guide_service.override(providers.Object(fake))
    return runtime


async def test_a_job_running_in_one_runtime_is_refused_or_skipped_in_another(
    tmp_path: Path,
) -> None:
    """While one runtime runs scrape_guides, another's manual run is refused (recorded skipped) and its
    scheduled run is recorded skipped; once the first ends, the job runs again."""
    config = make_config(tmp_path, maxroll={"bearer_token": "t"})
    first_fake, second_fake = FakeSyncService("block"), FakeSyncService(SyncSummary())
    async with (
        runtime_with(config, first_fake) as first,
        runtime_with(config, second_fake) as second,
    ):
        running = asyncio.get_running_loop().create_task(first.run_job("scrape_guides"))
        with anyio.fail_after(10):
            await first_fake.started.wait()
        with pytest.raises(JobRunningElsewhereError) as refused:
            await second.run_job("scrape_guides")
        assert refused.value.holder == first.runner.history.worker
        skipped = await second.run_job("scrape_guides", trigger="scheduled")
        assert (skipped.outcome, skipped.error) == (
            "skipped",
            f"running now in {first.runner.history.worker}",
        )
        assert second_fake.calls == []
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        # The cancelled run gave its claim back: the job runs in the other runtime now.
        assert await first.runner.history.claim("scrape_guides") is None
        again = await second.run_job("scrape_guides")
        assert again.outcome == "success"
    outcomes = sorted((row["trigger"], row["outcome"]) for row in job_runs(config))
    assert outcomes == [
        ("manual", "cancelled"),
        ("manual", "skipped"),
        ("manual", "success"),
        ("scheduled", "skipped"),
    ]


@pytest.mark.parametrize("behaviour", [RuntimeError("bug"), SyncSummary()])
async def test_the_claim_is_released_after_a_crash_or_a_success(
    tmp_path: Path, behaviour: Any
) -> None:
    """Whatever way the run ends, the job's claim is gone after it."""
    config = make_config(tmp_path, maxroll={"bearer_token": "t"})
    async with runtime_with(config, FakeSyncService(behaviour)) as runtime:
        await tasks.scrape_guides_task(trigger="manual")
        assert await runtime.runner.history.claim("scrape_guides") is None


async def test_a_new_leader_frees_the_claims_of_runs_it_marks_abandoned(tmp_path: Path) -> None:
    """The scheduled run of a previous lease holder on another host holds its claim until a new
    leader marks that run abandoned; then the job can run at once."""
    config = make_config(tmp_path, maxroll={"bearer_token": "t"})
    async with runtime_with(config, FakeSyncService(SyncSummary())) as runtime:
        history = runtime.runner.history
        gone = RunHistory(history.engine, "otherhost:7:old")
        assert await gone.begin("old-run", "scrape_guides", "scheduled", None, 0, 600) is None
        with pytest.raises(JobRunningElsewhereError):
            await runtime.run_job("scrape_guides")
        assert await history.mark_abandoned() == 1
        assert (await runtime.run_job("scrape_guides")).outcome == "success"
