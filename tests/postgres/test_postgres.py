"""The index, the job store, the lease and a real run-scheduler process on PostgreSQL."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import GUIDE_PREFIX, FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config, only_jobs
from tests.index_expectations import expected_rows, rows_from, touch_guide
from tests.postgres_server import PostgresDatabase
from tests.processes import WorkerProcess, write_config


def pg_config(
    tmp_path: Path, fake: FakeMaxroll, postgres: PostgresDatabase, **scheduler: object
) -> AppConfig:
    return make_config(
        tmp_path,
        database={"url": postgres.asyncpg_url},
        maxroll=fake.config_values(),
        scheduler={"job_store_url": postgres.psycopg_url, **scheduler},
    )


async def test_sync_is_exact_and_idempotent_on_postgres(
    tmp_path: Path, fake_maxroll: FakeMaxroll, postgres: PostgresDatabase
) -> None:
    """Exact first sync, no-op second, a changed guide re-synced alone, a vanished one removed."""
    config = pg_config(tmp_path, fake_maxroll, postgres)
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        service: BuildGuideService = await resolve(runtime.container.build_guide_service)
        first = await service.prepare_database()
        with postgres.connect() as connection:
            assert rows_from(connection) == expected_rows(fake_maxroll.site)
        second = await service.prepare_database()
        touch_guide(fake_maxroll.site.guides[0])
        fake_maxroll.reset_log()
        third = await service.prepare_database()
        fake_maxroll.site.guides.pop()
        fourth = await service.prepare_database()
    assert fourth.guides_removed == 1
    assert first.guides_processed == len(fake_maxroll.site.guides) + 1
    assert (second.guides_processed, second.builds_created, second.usages_created) == (0, 0, 0)
    assert third.guides_processed == 1
    assert fake_maxroll.count(GUIDE_PREFIX) == 1
    with postgres.connect() as connection:
        stored, expected = rows_from(connection), expected_rows(fake_maxroll.site)
        [(version,)] = connection.execute("SELECT value FROM schema_meta")
    for table in ("guides", "builds", "item_usages"):
        assert stored[table] == expected[table]
    assert version == "2"


async def test_run_history_and_lease_on_postgres(
    tmp_path: Path, fake_maxroll: FakeMaxroll, postgres: PostgresDatabase
) -> None:
    """Runs are recorded in the PostgreSQL job store; one runtime leads, the other takes over."""
    # Long enough that a busy machine never lets the lease lapse; a clean stop releases it.
    config = pg_config(tmp_path, fake_maxroll, postgres, lease_seconds=2)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(WorkerRuntime(config))
        second = await stack.enter_async_context(WorkerRuntime(config))
        assert (first.is_leader, second.is_leader) == (True, False)
        result = await tasks.cleanup_logs_task(trigger="manual")
        await first.__aexit__(None, None, None)
        with anyio.fail_after(10):
            await second.became_leader.wait()
        assert second.scheduler is not None
        assert second.scheduler.get_job("scrape_guides") is not None
    with postgres.connect() as connection:
        rows = list(connection.execute("SELECT run_id, outcome FROM job_runs"))
        jobs = {job_id for (job_id,) in connection.execute("SELECT id FROM apscheduler_jobs")}
    assert rows == [(result.run_id, "success")]
    assert jobs == set(BUILTIN_JOBS.ids)


@pytest.mark.slow
async def test_run_scheduler_process_on_postgres(
    tmp_path: Path, fake_maxroll: FakeMaxroll, postgres: PostgresDatabase
) -> None:
    """A real run-scheduler with index and job store on PostgreSQL syncs, then stops on SIGTERM."""
    config = write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": postgres.asyncpg_url},
            "maxroll": fake_maxroll.config_values(),
            "cache": {"dir": str(tmp_path / "cache")},
            "logging": {"dir": str(tmp_path / "logs")},
            "scheduler": {
                "job_store_url": postgres.psycopg_url,
                "jobs": only_jobs(scrape_guides={"interval_minutes": 0.02}),
            },
        },
    )
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for(r"\[scrape_guides/\w+\] run finished outcome=success")
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()
    with postgres.connect() as connection:
        assert rows_from(connection) == expected_rows(fake_maxroll.site)
        outcomes = {o for (o,) in connection.execute("SELECT outcome FROM job_runs")}
    assert "success" in outcomes
