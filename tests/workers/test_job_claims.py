"""Job claims: one run of a job at a time across processes, taken atomically, given back always."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from dependency_injector import providers
from sqlalchemy import Engine, create_engine

from d3_item_salvager.config import AppConfig
from d3_item_salvager.errors import JobRunningElsewhereError
from d3_item_salvager.services.build_guides import SyncSummary
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.job_claims import Claim, JobClaims, job_claims
from d3_item_salvager.workers.job_store_db import engine_options, install_sqlite_pragmas, metadata
from d3_item_salvager.workers.run_history import RunHistory, worker_identity
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.postgres_server import PostgresDatabase
from tests.workers.fakes import FakeSyncService

ROUNDS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        database: PostgresDatabase = request.getfixturevalue("postgres")
        return database.psycopg_url
    return f"sqlite:///{tmp_path / 'jobs.sqlite'}"


@pytest.fixture
def engines(store_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines (two processes' connection pools) on one job store."""
    made = []
    for _ in range(2):
        engine = create_engine(store_url, **engine_options(store_url, 30))
        install_sqlite_pragmas(engine, 30)
        made.append(engine)
    metadata.create_all(made[0])
    try:
        yield made[0], made[1]
    finally:
        for engine in made:
            engine.dispose()


def race(claimers: list[JobClaims], job_id: str) -> list[Claim | None]:
    """Both claimers claim `job_id` at the same moment, each in its own thread and transaction."""
    barrier = threading.Barrier(len(claimers))

    def claim(claimer: JobClaims) -> Claim | None:
        barrier.wait()
        with claimer._engine.begin() as connection:
            return claimer.claim_in(connection, job_id, f"run-{claimer.worker}", "manual", 60)

    with ThreadPoolExecutor(len(claimers)) as pool:
        return list(pool.map(claim, claimers))


def test_two_claimers_racing_never_both_win(engines: tuple[Engine, Engine]) -> None:
    """Many rounds of two connections racing for a free claim, then for a stale one: each
    round exactly one wins and the other is told who holds the job."""
    claimers = [JobClaims(engine, worker_identity(f"n{i}")) for i, engine in enumerate(engines)]
    for round_ in range(ROUNDS):
        results = race(claimers, f"fresh-{round_}")
        assert sorted(result is None for result in results) == [False, True], results
        [winner] = [c.worker for c, r in zip(claimers, results, strict=True) if r is None]
        [refusal] = [r for r in results if r is not None]
        assert refusal.holder == winner

    # Stale claims (their holder's claim expired) are taken over by exactly one racer too.
    with engines[0].begin() as connection:
        connection.execute(
            job_claims.insert(),
            [
                {
                    "job_id": f"stale-{round_}",
                    "holder": "otherhost:1:gone",
                    "run_id": "old",
                    "trigger": "scheduled",
                    "claimed_at": time.time() - 1000,
                    "expires_at": time.time() - 500,
                }
                for round_ in range(ROUNDS)
            ],
        )
    for round_ in range(ROUNDS):
        results = race(claimers, f"stale-{round_}")
        assert sorted(result is None for result in results) == [False, True], results


async def test_stale_claims_are_taken_over_and_live_ones_are_not(tmp_path: Path) -> None:
    """A claim of a dead process on this host and an expired one are stale; a live one (on
    another host, or this process's own) holds until it expires; release frees at once."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    engine = create_engine(url, **engine_options(url, 30))
    metadata.create_all(engine)
    now = [1000.0]
    mine = JobClaims(engine, worker_identity("mine"), clock=lambda: now[0])
    try:
        dead = worker_identity("x").split(":")[0] + ":999999999:dead"  # no such pid
        for holder, expires, taken in [
            (dead, 5000.0, True),
            ("otherhost:1:late", 999.0, True),
            (mine.worker, 5000.0, False),
            ("otherhost:1:live", 5000.0, False),
        ]:
            with engine.begin() as connection:
                connection.execute(job_claims.delete())
                connection.execute(
                    job_claims.insert().values(
                        job_id="j", holder=holder, run_id="r0", trigger="manual",
                        claimed_at=0.0, expires_at=expires,
                    )
                )  # fmt: skip
            held = await mine.claim("j", "r1", "manual", 60)
            assert (held is None) == taken, holder
        held = await mine.claim("j", "r2", "manual", 60)
        assert held is not None
        assert held.holder == "otherhost:1:live"
        assert await mine.release("j", "r2") is False  # never ours
        with engine.begin() as connection:
            connection.execute(job_claims.delete())
        assert await mine.claim("j", "r3", "manual", 60) is None
        assert await mine.release("j", "r3") is True
        assert await mine.current("j") is None
    finally:
        engine.dispose()


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
        assert await first.runner.history.claims.current("scrape_guides") is None
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
        assert await runtime.runner.history.claims.current("scrape_guides") is None


async def test_a_new_leader_frees_the_claims_of_runs_it_marks_abandoned(tmp_path: Path) -> None:
    """The scheduled run of a previous lease holder on another host holds its claim until a new
    leader marks that run abandoned; then the job can run at once."""
    config = make_config(tmp_path, maxroll={"bearer_token": "t"})
    async with runtime_with(config, FakeSyncService(SyncSummary())) as runtime:
        history = runtime.runner.history
        gone = RunHistory(history._engine, "otherhost:7:old")
        await gone.start("old-run", "scrape_guides", "scheduled", None, 0)
        assert await gone.claims.claim("scrape_guides", "old-run", "scheduled", 600) is None
        with pytest.raises(JobRunningElsewhereError):
            await runtime.run_job("scrape_guides")
        assert await history.mark_abandoned() == 1
        assert (await runtime.run_job("scrape_guides")).outcome == "success"
