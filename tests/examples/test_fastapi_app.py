"""examples/fastapi_app.py through its real lifespan (asgi-lifespan + httpx) against FakeMaxroll."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from examples.fastapi_app import create_app
from prometheus_client.parser import text_string_to_metric_families

from d3_item_salvager.testing import FakeMaxroll
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.index_expectations import expected_rows, stored_rows


def log_file(home: Path) -> Path:
    """The example app's log file for a config made under `home`."""
    [path] = (home / "logs").glob("*.log")
    return path


@asynccontextmanager
async def serving(
    maxroll: FakeMaxroll, home: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, WorkerRuntime]]:
    """A client talking ASGI to the example app, started through its lifespan; and its runtime."""
    # Jobs wait for their interval: the test decides when a run happens.
    app = create_app(maxroll.config(home, scheduler={"run_new_jobs_at_once": False}))
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://app"
        ) as client,
    ):
        yield client, app.state.workers


async def test_manual_run_health_and_metrics_through_the_real_lifespan(tmp_path: Path) -> None:
    """POST starts a run and answers 202 at once; GET follows it; health and metrics report it."""
    async with FakeMaxroll() as maxroll, serving(maxroll, tmp_path) as (client, runtime):
        health = await client.get("/health")
        assert (health.status_code, health.json()) == (200, {"healthy": True, "problems": []})

        started = await client.post("/jobs/scrape-guides/runs")
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        assert (await client.get(f"/runs/{run_id}")).json()["state"] in ("running", "finished")

        with anyio.fail_after(60):
            [finished] = await runtime.wait_for_runs("scrape_guides", 1)
        assert finished.run_id == run_id  # the id the app answered with is the recorded one
        run = (await client.get(f"/runs/{run_id}")).json()
        assert (run["state"], run["outcome"], run["trigger"]) == ("finished", "success", "manual")
        assert run["summary"]["guides_seen"] == len(maxroll.site.guides)
        database = runtime.config.database.sqlite_path
        assert database is not None
        assert stored_rows(database)["guides"] == expected_rows(maxroll.site)["guides"]

        metrics = await client.get("/metrics/")
        runs = {
            (sample.labels["job"], sample.labels["outcome"]): sample.value
            for family in text_string_to_metric_families(metrics.text)
            for sample in family.samples
            if sample.name == "d3is_job_runs_total"
        }
        assert runs[("scrape_guides", "success")] == 1

        assert (await client.post("/jobs/no-such-job/runs")).status_code == 404
        assert (await client.get("/runs/unknown")).status_code == 404


async def test_health_is_503_with_the_problem_after_a_failed_run(tmp_path: Path) -> None:
    """A run that fails (the search token was rotated) makes /health answer 503 naming it."""
    async with FakeMaxroll() as maxroll, serving(maxroll, tmp_path) as (client, runtime):
        maxroll.token = "rotated-by-maxroll"
        run_id = (await client.post("/jobs/scrape_guides/runs")).json()["run_id"]
        with anyio.fail_after(60):
            await runtime.wait_for_runs("scrape_guides", 1)
        assert (await client.get(f"/runs/{run_id}")).json()["outcome"] == "failed"
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["healthy"] is False
        assert any("scrape_guides: last run failed" in line for line in health.json()["problems"])


@pytest.mark.parametrize("when", ["at once", "waiting on Maxroll"])
async def test_shutdown_mid_run_cancels_it_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """Stopping the app right after a manual run was started (while its task resolves its
    services), or while it waits on Maxroll, records the run `cancelled` and logs no error and
    no traceback: no InvalidStateError from dependency-injector's cancelled futures, and the
    job's claim is given back."""
    answer = threading.Event()

    def hold(_method: str, _path: str) -> None:
        answer.wait(60)  # the fake's serving thread: the request waits until the test ends

    caplog.set_level(logging.DEBUG)
    async with FakeMaxroll() as maxroll:
        maxroll.fault_hook = hold
        try:
            async with serving(maxroll, tmp_path) as (client, runtime):
                run_id = (await client.post("/jobs/scrape-guides/runs")).json()["run_id"]
                with anyio.fail_after(60):
                    while when == "waiting on Maxroll" and not maxroll.in_flight:
                        assert runtime.tracker.runs("scrape_guides") == []
                        await anyio.sleep(0.01)  # look again: the run is on its way to Maxroll
                history = runtime.runner.history
        finally:
            answer.set()
    [row] = [row for row in await history.runs() if row.run_id == run_id]
    assert row.outcome == "cancelled"
    assert await history.claim("scrape_guides") is None  # given back
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems]
    # The app logs our records to its log file (they do not reach caplog meanwhile).
    logged = [json.loads(line) for line in log_file(tmp_path).read_text().splitlines()]
    assert any(entry["message"] == "run started" for entry in logged)
    assert [e for e in logged if e["level"] == "ERROR" or "exception" in e] == []


async def test_a_run_refused_by_another_worker_is_409_and_in_the_shared_history(
    tmp_path: Path,
) -> None:
    """Two workers of one server (two apps on one job store): while one runs the sync, the
    other's POST answers 409 naming the holder, and its refused run reads the same (`skipped`)
    from either worker."""
    answer = threading.Event()

    def hold(_method: str, _path: str) -> None:
        answer.wait(60)  # the first worker's sync waits here until the second was refused

    async with FakeMaxroll() as maxroll:
        maxroll.fault_hook = hold
        try:
            async with (
                serving(maxroll, tmp_path) as (first, first_runtime),
                serving(maxroll, tmp_path) as (second, _),
            ):
                started = await first.post("/jobs/scrape-guides/runs")
                assert started.status_code == 202
                refused = await second.post("/jobs/scrape-guides/runs")
                assert refused.status_code == 409
                detail = refused.json()["detail"]
                assert detail["error"].startswith("refused: scrape_guides is running now in ")
                answer.set()
                with anyio.fail_after(60):
                    await first_runtime.wait_for_runs("scrape_guides", 1)
                views = [(await client.get(detail["url"])).json() for client in (first, second)]
        finally:
            answer.set()
    for view in views:
        assert (view["state"], view["outcome"], view["trigger"]) == (
            "finished",
            "skipped",
            "manual",
        )
        assert view["error"].startswith("running now in ")
