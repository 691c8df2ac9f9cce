"""`status` and `history`: read-only reports on real job stores, through real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers.leader_lock import leader_lock_path
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import (
    collect_status,
    describe_interval,
    describe_trigger,
    health_problems,
    render_history,
    render_status,
)
from tests.conftest import make_config, only_jobs
from tests.processes import WorkerProcess, run_cli, write_config

pytestmark = pytest.mark.slow


def status_config(tmp_path: Path, store: Path, **jobs: dict[str, Any]) -> Path:
    """A config with every file under tmp_path and the job store at `store`; jobs disabled."""
    return write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"},
            "cache": {"dir": str(tmp_path / "cache")},
            "logging": {"dir": str(tmp_path / "logs")},
            "scheduler": {
                "job_store_path": str(store),
                "shutdown_timeout_seconds": 5,
                "lease_seconds": 4,
                "run_new_jobs_at_once": False,
                "jobs": only_jobs(**jobs),
            },
        },
    )


def tree(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its content (folders as '<dir>')."""
    return {
        str(path.relative_to(root)): "<dir>"
        if path.is_dir()
        else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("command", [["status"], ["status", "--check"], ["history"]])
async def test_no_job_store_is_one_line_exit_2_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """With no job store at the configured place: one line, exit 2, no file or folder made."""
    config = status_config(tmp_path, tmp_path / "missing" / "jobs.sqlite")
    before = tree(tmp_path)
    code, stdout, stderr = await run_cli(*command, "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert stdout == ""
    assert stderr.strip().count("\n") == 0
    assert "no job store there" in stderr
    assert "missing/jobs.sqlite" in stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", [["status"], ["status", "--check"], ["history"]])
async def test_corrupt_job_store_is_one_line_exit_2_untouched(
    tmp_path: Path, command: list[str]
) -> None:
    """A job store that is not a database: one line, exit 2, no traceback, nothing written."""
    store = tmp_path / "jobs.sqlite"
    store.write_bytes(b"this is not a database\n" * 200)
    config = status_config(tmp_path, store)
    before = tree(tmp_path)
    code, _, stderr = await run_cli(*command, "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0
    assert "cannot read the job store" in stderr
    assert tree(tmp_path) == before


async def test_status_and_check_follow_a_real_scheduler_and_write_nothing(tmp_path: Path) -> None:
    """Trigger text is the same before and after registration; --check needs a live lease holder.

    Status never changes the store: its bytes are identical before and after each read.
    """
    store = tmp_path / "jobs.sqlite"
    config = status_config(
        tmp_path, store, cleanup_logs={"enabled": True, "interval_minutes": 0.017}
    )
    code, _, stderr = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr

    # Before any scheduler registered the job, the trigger comes from the configuration.
    code, stdout, stderr = await run_cli("status", "--json", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr
    jobs = {job["job_id"]: job for job in json.loads(stdout)["jobs"]}
    assert jobs["cleanup_logs"]["trigger"] == "every 1.02 s"
    assert jobs["cleanup_logs"]["next_run_time"] is None
    code, stdout, _ = await run_cli("status", "--check", "--config", str(config), cwd=tmp_path)
    assert (code, stdout.strip().count("\n")) == (1, 0)
    assert "no live process holds the scheduler lease" in stdout

    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for(r"\[cleanup_logs/\w+\] run finished outcome=success", count=2)
        code, stdout, stderr = await run_cli(
            "status", "--json", "--config", str(config), cwd=tmp_path
        )
        assert code == 0, stderr
        report = json.loads(stdout)
        jobs = {job["job_id"]: job for job in report["jobs"]}
        assert jobs["cleanup_logs"]["trigger"] == "every 1.02 s"  # as stored by APScheduler
        assert jobs["cleanup_logs"]["next_run_time"] is not None
        assert report["lease"]["live"] is True
        code, stdout, stderr = await run_cli(
            "status", "--check", "--config", str(config), cwd=tmp_path
        )
        assert code == 0, stdout + stderr
        assert stdout.strip() == "ok: 1 enabled job(s) healthy"
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()

    before = tree(tmp_path)
    code, stdout, _ = await run_cli("status", "--check", "--config", str(config), cwd=tmp_path)
    assert (code, stdout.strip()) == (
        1,
        "no scheduler is running: no live process holds the scheduler lease",
    )
    code, stdout, _ = await run_cli("status", "--config", str(config), cwd=tmp_path)
    assert code == 0
    assert "every 1.02 s" in stdout
    assert tree(tmp_path) == before


async def test_check_after_a_killed_leader_is_unhealthy_at_once(tmp_path: Path) -> None:
    """A SIGKILLed leader's lease row has not expired yet, but its process is gone: unhealthy."""
    config = status_config(tmp_path, tmp_path / "jobs.sqlite", cleanup_logs={"enabled": True})
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for("holding the scheduler lease")
    finally:
        await worker.kill()
    code, stdout, _ = await run_cli("status", "--check", "--config", str(config), cwd=tmp_path)
    assert code == 1
    assert "no live process holds the scheduler lease" in stdout


async def test_a_run_cancelled_by_a_graceful_stop_is_not_a_failure(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """SIGTERM cancels a slow sync (recorded cancelled); with a scheduler back, --check is ok."""
    fake_maxroll.latency = 2
    config = write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"},
            "maxroll": {**fake_maxroll.config_values(), "retry_attempts": 1},
            "cache": {"dir": str(tmp_path / "cache")},
            "logging": {"dir": str(tmp_path / "logs")},
            "scheduler": {
                "job_store_path": str(tmp_path / "jobs.sqlite"),
                "shutdown_timeout_seconds": 0,
                "lease_seconds": 4,
                "run_new_jobs_at_once": True,
                "jobs": only_jobs(scrape_guides={}),
            },
        },
    )
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for(r"\[scrape_guides/\w+\] run started")
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()
    code, stdout, _ = await run_cli(
        "history", "--json", "--job", "scrape-guides", "--config", str(config), cwd=tmp_path
    )
    assert code == 0
    assert [run["outcome"] for run in json.loads(stdout)["runs"]] == ["cancelled"]

    fake_maxroll.latency = 0
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for("holding the scheduler lease")
        code, stdout, stderr = await run_cli(
            "status", "--check", "--config", str(config), cwd=tmp_path
        )
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()
    assert (code, stdout.strip()) == (0, "ok: 1 enabled job(s) healthy"), stdout + stderr


def add_run(store: Path, run_id: str, started: datetime, **values: Any) -> None:
    row = {
        "run_id": run_id,
        "job_id": "scrape_guides",
        "trigger": "scheduled",
        "scheduled_for": started.timestamp() - 1,
        "started_at": started.timestamp(),
        "finished_at": started.timestamp() + 2.5,
        "outcome": "success",
        "error": None,
        "summary": None,
        "attempt": 0,
        "worker": "elsewhere:1:abc",
        **values,
    }
    with sqlite3.connect(store) as connection:
        connection.execute(
            f"INSERT INTO job_runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )


async def test_history_lists_runs_newest_first_with_problems(tmp_path: Path) -> None:
    """history shows trigger, due, start, duration, outcome, error and problems, newest first."""
    store = tmp_path / "jobs.sqlite"
    config = status_config(tmp_path, store)
    code, _, stderr = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr
    start = datetime.now(UTC) + timedelta(minutes=1)
    add_run(store, "r1", start, summary=json.dumps({"problems": 0}))
    add_run(
        store,
        "r2",
        start + timedelta(minutes=1),
        outcome="failed",
        error="FetchError: HTTP 503 from a much longer error text than any other column",
        summary=json.dumps({"problems": 3, "guides_processed": 2}),
    )
    add_run(store, "r3", start + timedelta(minutes=2), trigger="manual", scheduled_for=None)

    code, stdout, stderr = await run_cli(
        "history", "--json", "--job", "scrape-guides", "--limit", "2", "--config", str(config),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    runs = json.loads(stdout)["runs"]
    assert [run["run_id"] for run in runs] == ["r3", "r2"]
    assert runs[1]["problems"] == 3
    assert runs[1]["duration_seconds"] == 2.5
    assert runs[0]["scheduled_for"] is None

    code, stdout, _ = await run_cli("history", "--config", str(config), cwd=tmp_path)
    assert code == 0
    lines = stdout.splitlines()
    assert [line.split("|")[1].strip() for line in lines if line.startswith("|")][:4] == [
        "job",
        "scrape_guides",
        "scrape_guides",
        "scrape_guides",
    ]
    assert_columns_line_up(lines)
    assert "cleanup_logs" in lines[-2]  # the oldest run, the manual cleanup, comes last

    # A run cancelled by a stop is shown as the last run, but health judges the one before it.
    add_run(store, "r4", start + timedelta(minutes=3), outcome="cancelled")
    code, stdout, _ = await run_cli("status", "--json", "--config", str(config), cwd=tmp_path)
    jobs = {job["job_id"]: job for job in json.loads(stdout)["jobs"]}
    scrape = jobs["scrape_guides"]
    assert (scrape["last_outcome"], scrape["last_problems"]) == ("cancelled", None)
    assert scrape["conclusive_outcome"] == "success"


def assert_columns_line_up(lines: list[str]) -> None:
    """Every row of an ASCII table has its column separators at the same places."""
    rows = [line for line in lines if line.startswith(("|", "+"))]
    assert len(rows) >= 5
    positions = {
        tuple(i for i, char in enumerate(row) if char == row[0]) for row in rows
    }  # "+" joints on borders, "|" between cells
    assert len(positions) == 1, "\n".join(rows)


@pytest.mark.parametrize("minutes", [360, 60, 1440, 0.017, 1 / 60, 1.5, 525600])
def test_trigger_text_is_the_same_from_config_and_store(minutes: float) -> None:
    """The configured interval and APScheduler's stored trigger read alike."""
    stored = IntervalTrigger(minutes=minutes, timezone="UTC")
    assert describe_trigger(stored) == describe_interval(timedelta(minutes=minutes))


def job(job_id: str, **values: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "enabled": True,
        "trigger": "every 6 h",
        "next_run_time": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "retry_pending": False,
        "last_outcome": None,
        "last_finished_at": None,
        "last_duration_seconds": None,
        "last_error": None,
        "last_problems": None,
        "conclusive_outcome": None,
        "conclusive_error": None,
        **values,
    }


LIVE = {"holder": "h:1:x", "expires_at": "2030-01-01T00:00:00+00:00", "live": True}


def test_health_judges_the_last_run_that_was_not_cancelled() -> None:
    """A cancelled last run hides neither health nor an earlier failure."""
    cancelled_after_success = job(
        "scrape_guides", last_outcome="cancelled", conclusive_outcome="success"
    )
    cancelled_after_failure = job(
        "refresh_cache",
        last_outcome="cancelled",
        conclusive_outcome="failed",
        conclusive_error="HTTP 401",
    )
    report = {"jobs": [cancelled_after_success, cancelled_after_failure], "lease": LIVE}
    assert health_problems(report, 15) == ["refresh_cache: last run failed: HTTP 401"]


def test_tables_line_up_whatever_the_widths() -> None:
    """Long and short values alike keep every column aligned."""
    report = {
        "jobs": [
            job("scrape_guides", trigger="every 0.0166667 h", last_duration_seconds=12345.6),
            job("x", enabled=False, next_run_time=None, last_outcome="failed", last_problems=12),
        ],
        "lease": None,
    }
    rendered = render_status(report).splitlines()
    assert_columns_line_up(rendered)
    assert [cell.strip() for cell in rendered[4].split("|")][-2] == "12"  # the problems column
    runs = [
        {
            "job_id": "cleanup_logs",
            "trigger": "manual",
            "scheduled_for": None,
            "started_at": "2026-01-01T00:00:00+00:00",
            "duration_seconds": None,
            "outcome": "running",
            "problems": None,
            "error": "e" * 300,
        }
    ]
    assert_columns_line_up(render_history(runs).splitlines())


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_status_fits_100_columns_with_times_people_read() -> None:
    """Relative times (`in 5 h 58 min`, `success 3 min ago`), a pending retry in the table, the
    lease's end in the configured timezone, long errors wrapped below: nothing over 100 wide."""
    report = {
        "jobs": [
            job(
                "scrape_guides",
                trigger="cron 17 4 * * * (Europe/Berlin), jitter 90 s",
                next_run_time=(NOW + timedelta(hours=5, minutes=58)).isoformat(),
                last_outcome="success",
                last_finished_at=(NOW - timedelta(minutes=3)).isoformat(),
                last_duration_seconds=0.042,
                last_error="x" * 400,
            ),
            job(
                "refresh_cache",
                next_run_time=(NOW + timedelta(hours=6)).isoformat(),
                retry_pending=True,
                retry_at=(NOW + timedelta(seconds=40)).isoformat(),
                last_outcome="failed",
                last_finished_at=(NOW - timedelta(days=2, hours=1)).isoformat(),
                last_duration_seconds=3725,
            ),
            job("cleanup_logs", trigger="every 7 d", paused=True),
        ],
        "lease": {
            "holder": "a-rather-long-host-name.example.internal:123456:0123abcd",
            "expires_at": "2026-03-01T12:00:30+00:00",
            "live": True,
        },
    }
    text = render_status(report, "Europe/Berlin", now=NOW)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100, text
    assert_columns_line_up(lines)
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("|")}
    assert "cron 17 4 * * * ~90 s" in rows["scrape_guides"]
    assert "in 5 h 58 min" in rows["scrape_guides"]
    assert "success 3 min ago" in rows["scrape_guides"]
    assert "42 ms" in rows["scrape_guides"]
    assert "retry in 40 s" in rows["refresh_cache"]
    assert "failed 2 d 1 h ago" in rows["refresh_cache"]
    assert "1 h 2 min" in rows["refresh_cache"]
    assert "paused" in rows["cleanup_logs"]
    assert "(live, until 13:00:30)" in text  # 12:00:30 UTC in Berlin
    assert "x" * 90 in text  # the error is there, wrapped, not cut


def test_history_fits_100_columns() -> None:
    """Start and due times as clock times today (dates other days), a long error cut to its
    start: the whole row within 100 columns."""
    runs: list[dict[str, Any]] = [
        {
            "job_id": "scrape_guides",
            "trigger": "scheduled",
            "scheduled_for": "2026-03-01T10:00:00.123456+00:00",
            "started_at": "2026-03-01T10:00:00.654321+00:00",
            "duration_seconds": 12.41,
            "outcome": "failed",
            "problems": 7,
            "error": "HTTP 503 from https://maxroll.gg/indexes/wp_posts_1/search " * 5,
        },
        {
            "job_id": "cleanup_logs",
            "trigger": "manual",
            "scheduled_for": None,
            "started_at": "2026-02-27T23:59:59+00:00",
            "duration_seconds": 0.004,
            "outcome": "success",
            "problems": None,
            "error": None,
        },
    ]
    text = render_history(runs, "UTC", now=NOW)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100, text
    assert "10:00:00" in lines[3]
    assert "123456" not in text
    assert "Feb 27 23:59" in text
    assert "4 ms" in text


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(10080, "every 7 d"), (1440, "every 1 d"), (360, "every 6 h"), (30, "every 30 min")],
)
def test_intervals_read_in_their_largest_whole_unit(minutes: float, text: str) -> None:
    """A weekly job is `every 7 d`, not `every 168 h`."""
    assert describe_interval(timedelta(minutes=minutes)) == text


def test_the_run_summary_lists_failures_and_warnings_and_shows_milliseconds() -> None:
    """`run JOB` for people: a short run in ms, figures, then each failure and warning on its
    own line (empty lists left out)."""
    from d3_item_salvager.workers.cli import _run_summary
    from d3_item_salvager.workers.runs import Outcome, RunResult, Trigger

    summary = {
        "guides_processed": 3,
        "failures": [{"url": "https://maxroll.gg/d3/guides/a", "error": "HTTP 503",
                      "transient": True}],
        "warnings": [],
        "problems": 1,
    }  # fmt: skip
    result = RunResult("r1", "scrape_guides", Trigger.MANUAL, Outcome.SUCCESS, None, summary, 0.012)
    text = _run_summary("scrape-guides", result)
    assert text.splitlines() == [
        "scrape-guides: success in 12 ms",
        "  guides_processed: 3",
        "  problems: 1",
        "  failures (1):",
        "    - https://maxroll.gg/d3/guides/a: HTTP 503 (transient)",
    ]


async def test_a_leader_that_stopped_its_rounds_is_not_live(tmp_path: Path) -> None:
    """A SQLite store's leader that went through no round for a lease period (a frozen
    process, which still holds the lock) is reported not live, and the health check says so:
    the kernel's lock alone would keep saying live."""
    config = make_config(tmp_path, scheduler={"lease_seconds": 60, "jobs": only_jobs()})
    async with WorkerRuntime(config) as runtime:
        assert runtime.is_leader
        lease = collect_status(config)["lease"]
        assert (lease["holder"], lease["live"]) == (runtime.runner.history.worker, True)
        # Its last round a lease period ago (the next one is 15 s away: none comes meanwhile).
        long_ago = time.time() - 61
        os.utime(leader_lock_path(config.scheduler.job_store_path), (long_ago, long_ago))
        report = collect_status(config)
    assert report["lease"]["live"] is False
    assert health_problems(report, margin_minutes=15) == [
        "no scheduler is running: no live process holds the scheduler lease"
    ]
