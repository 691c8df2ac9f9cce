"""Crashes, corrupt files and bad settings: each gives a clear error or recovers."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import anyio
import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.testing.fake_site import build_site
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import WorkerProcess, run_cli, write_config
from tests.workers.test_cli import cli_config, job_runs

pytestmark = pytest.mark.slow


async def test_sigkill_mid_sync_then_restart_recovers(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Killed mid-sync: no half-written guide, the run becomes abandoned, the next run finishes."""
    fake_maxroll.site = build_site(30, planners_per_guide=2)
    fake_maxroll.latency = 0.03
    config = cli_config(tmp_path, fake_maxroll, scrape_guides={"interval_minutes": 0.02})
    first = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await first.wait_for(r"progress: \d+/30 guides", count=2)
        first.process.send_signal(signal.SIGKILL)
        assert await first.stop() == -signal.SIGKILL
    finally:
        await first.kill()

    expected = expected_rows(fake_maxroll.site)
    partial = stored_rows(tmp_path / "index.sqlite")
    synced = {row[0] for row in partial["guides"]}
    assert 0 < len(synced) < 30
    for table in ("builds", "item_usages"):
        # Every guide present is complete; no guide has rows without its guide row.
        assert {r for r in partial[table] if r[0] in synced} == {
            r for r in expected[table] if r[0] in synced
        }
        assert {r[0] for r in partial[table]} <= synced
    # Runs due while the sync went on were recorded as skipped; one run was left open.
    [interrupted] = [run for run in job_runs(tmp_path) if run["outcome"] is None]
    assert {run["outcome"] for run in job_runs(tmp_path)} <= {None, "skipped"}

    second = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await second.wait_for(r"abandoned_runs=1")
        await second.wait_for(r"\[scrape_guides/\w+\] run finished outcome=success")
        assert await second.stop() == 0
    finally:
        await second.kill()
    assert stored_rows(tmp_path / "index.sqlite") == expected
    runs = {run["run_id"]: run for run in job_runs(tmp_path)}
    assert runs[interrupted["run_id"]]["outcome"] == "abandoned"
    assert "success" in [run["outcome"] for run in runs.values()]
    assert None not in [run["outcome"] for run in runs.values()]


async def test_three_schedulers_and_a_killed_leader(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Three processes: one leads; SIGKILL it and another takes over; no due time runs twice."""
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 0.017})
    workers = [
        await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
        for _ in range(3)
    ]
    try:
        for worker in workers:
            await worker.wait_for("scheduler started")
        [leader] = [w for w in workers if w.count("holding the scheduler lease")]
        await leader.wait_for(r"\[cleanup_logs/\w+\] run finished", count=3)
        leader.process.send_signal(signal.SIGKILL)
        await leader.stop()
        standbys = [w for w in workers if w is not leader]
        takeover = anyio.Event()

        async def watch(worker: WorkerProcess) -> None:
            await worker.wait_for("holding the scheduler lease")
            takeover.set()

        async with anyio.create_task_group() as group:
            for worker in standbys:
                group.start_soon(watch, worker)
            with anyio.fail_after(30):
                await takeover.wait()
            group.cancel_scope.cancel()
        [new_leader] = [w for w in standbys if w.count("holding the scheduler lease")]
        await new_leader.wait_for(r"\[cleanup_logs/\w+\] run finished", count=2)
        other = next(w for w in standbys if w is not new_leader)
        assert await other.stop() == 0
        assert await new_leader.stop() == 0
    finally:
        for worker in workers:
            await worker.kill()
    runs = [r for r in job_runs(tmp_path) if r["trigger"] == "scheduled"]
    assert len({r["worker"] for r in runs}) == 2
    assert len({r["scheduled_for"] for r in runs}) == len(runs)


async def test_corrupt_job_store_is_a_clear_error(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A job store that is not SQLite: exit 2, the setting named, the file left for inspection."""
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 1})
    (tmp_path / "jobs.sqlite").write_bytes(b"garbage" * 1000)
    code, _, stderr = await run_cli("run-scheduler", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "scheduler.job_store_path" in stderr
    assert "move the file aside" in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "jobs.sqlite").read_bytes().startswith(b"garbage")


async def test_unwritable_log_folder_is_a_clear_error(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """logging.dir that cannot be a folder: exit 2 naming logging.dir."""
    config = cli_config(tmp_path, fake_maxroll)
    (tmp_path / "logs").write_text("a file where the folder should be", encoding="utf-8")
    code, _, stderr = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "logging.dir" in stderr
    assert "Traceback" not in stderr


async def test_corrupt_caches_are_refetched(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """Garbage in every cache file: the next run discards it, refetches and succeeds."""
    config = cli_config(tmp_path, fake_maxroll)
    code, _, stderr = await run_cli("run", "scrape-guides", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    code, _, stderr = await run_cli(
        "run", "scrape-guides", "--force-refresh", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, stderr
    assert "discarding corrupt" in stderr
    assert stored_rows(tmp_path / "index.sqlite") == expected_rows(fake_maxroll.site)


async def test_every_bad_setting_is_listed_in_one_message(tmp_path: Path) -> None:
    """A config file full of bad values: one message naming each, exit 2."""
    config = write_config(
        tmp_path / "bad.toml",
        {
            "database": {"url": "postgres://nope"},
            "maxroll": {
                "site_url": "maxroll.gg",
                "planner_profile_url": "https://x/{id}",
                "max_concurrency": 0,
                "retry_attempts": 100,
            },
            "cache": {"item_catalog_ttl_minutes": -1},
            "logging": {"level": "CHATTY", "file_name": "../escape.log"},
            "scheduler": {
                "timezone": "Atlantis/Capital",
                "max_workers": 0,
                "jobs": {"scrape_guides": {"interval_minutes": 0}},
            },
        },
    )
    code, _, stderr = await run_cli("status", "--config", str(config), cwd=tmp_path)
    assert code == 2
    for setting in (
        "database.url", "maxroll.site_url", "maxroll.planner_profile_url",
        "maxroll.max_concurrency", "maxroll.retry_attempts", "cache.item_catalog_ttl_minutes",
        "logging.level", "logging.file_name", "scheduler.timezone", "scheduler.max_workers",
        "scheduler.jobs.scrape_guides.interval_minutes",
    ):  # fmt: skip
        assert setting in stderr
    assert stderr.count("error:") == 1
    assert "Traceback" not in stderr


async def test_index_with_a_foreign_schema_version_is_refused(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """An index database written by a newer release: exit 2 with the reason, file untouched."""
    config = cli_config(tmp_path, fake_maxroll)
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        connection.execute("CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT)")
        connection.execute("INSERT INTO schema_meta VALUES ('schema_version', '7')")
    code, _, stderr = await run_cli("run", "scrape-guides", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "schema version 7 is not supported" in stderr
