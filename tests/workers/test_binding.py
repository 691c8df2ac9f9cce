"""Tasks run in their own runtime: several runtimes in one process never share a container."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from d3_item_salvager.config import load_config
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll, serve
from d3_item_salvager.testing.fake_site import build_site
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runs import Outcome, Trigger
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import only_jobs
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import write_config
from tests.workers.test_cli import cli_config


def own_toml(folder: Path, fake: FakeMaxroll) -> Path:
    """A TOML config with everything in `folder`: the sync runs once at start, then hourly."""
    return write_config(
        folder / "workers.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{folder / 'index.sqlite'}"},
            "maxroll": {**fake.config_values(), "retry_initial_backoff_seconds": 0},
            "cache": {"dir": str(folder / "cache")},
            "logging": {"dir": str(folder / "logs")},
            "scheduler": {
                "job_store_path": str(folder / "jobs.sqlite"),
                "run_new_jobs_at_once": True,
                "jobs": only_jobs(scrape_guides={"interval_minutes": 60}),
            },
        },
    )


async def test_two_runtimes_sync_into_their_own_index_and_outlive_each_other(
    tmp_path: Path,
) -> None:
    """Two runtimes with their own TOML configs sync scheduled runs into their own index; after
    the first exits, a manual scrape in the second still runs in the second."""
    with serve(build_site(3, seed=1)) as fake_a, serve(build_site(4, seed=2)) as fake_b:
        folder_a, folder_b = tmp_path / "a", tmp_path / "b"
        folder_a.mkdir()
        folder_b.mkdir()
        config_a = load_config(own_toml(folder_a, fake_a))
        config_b = load_config(own_toml(folder_b, fake_b))
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(WorkerRuntime(config_a))
            second = await stack.enter_async_context(WorkerRuntime(config_b))
            assert first.is_leader  # two job stores: two leaders
            assert second.is_leader
            with anyio.fail_after(60):
                for runtime in (first, second):
                    await runtime.tracker.wait_for(
                        lambda runs: any(r.outcome is Outcome.SUCCESS for r in runs)
                    )
            assert stored_rows(folder_a / "index.sqlite") == expected_rows(fake_a.site)
            assert stored_rows(folder_b / "index.sqlite") == expected_rows(fake_b.site)
            searched_b = len(fake_b.paths("POST"))

            await first.__aexit__(None, None, None)
            manual = await tasks.scrape_guides_task(trigger="manual")
            explicit = await second.run_job("scrape-guides")
        assert (manual.outcome, manual.trigger) == (Outcome.SUCCESS, Trigger.MANUAL)
        assert explicit.succeeded
        assert len(fake_b.paths("POST")) > searched_b  # the second's Maxroll, not the first's
        assert stored_rows(folder_b / "index.sqlite") == expected_rows(fake_b.site)


async def test_run_job_picks_its_runtime_whichever_is_current(tmp_path: Path) -> None:
    """`runtime.run_job` runs in that runtime even when another was entered after it."""
    with serve(build_site(2, seed=3)) as fake_a, serve(build_site(3, seed=4)) as fake_b:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        config_a = load_config(cli_config(tmp_path / "a", fake_a))
        config_b = load_config(cli_config(tmp_path / "b", fake_b))
        async with (
            WorkerRuntime(config_a, run_scheduler=False) as first,
            WorkerRuntime(config_b, run_scheduler=False),
        ):
            result = await first.run_job("scrape_guides")
        assert result.succeeded
        assert fake_a.paths("POST")
        assert not fake_b.paths("POST")
        assert stored_rows(tmp_path / "a" / "index.sqlite") == expected_rows(fake_a.site)


async def test_a_task_outside_any_runtime_says_how_to_run_it() -> None:
    """Calling a task with no open runtime is a clear error, not an injection placeholder."""
    with pytest.raises(RuntimeError, match="WorkerRuntime"):
        await tasks.cleanup_logs_task(trigger="manual")
