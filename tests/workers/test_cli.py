"""The CLI as operators use it: real subprocesses against the fake Maxroll and real SQLite."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from tests.conftest import only_jobs
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import WorkerProcess, child_env, run_cli, write_config

pytestmark = pytest.mark.slow


def cli_config(tmp_path: Path, fake: FakeMaxroll, **jobs: dict[str, Any]) -> Path:
    """A TOML config whose every file lives in tmp_path and whose Maxroll is the fake."""
    return write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"},
            "maxroll": {
                **fake.config_values(),
                "retry_initial_backoff_seconds": 0,
                "retry_max_backoff_seconds": 0,
            },
            "cache": {"dir": str(tmp_path / "cache")},
            "logging": {"dir": str(tmp_path / "logs")},
            "scheduler": {
                "job_store_path": str(tmp_path / "jobs.sqlite"),
                "shutdown_timeout_seconds": 5,
                "lease_seconds": 4,
                "run_new_jobs_at_once": False,
                "jobs": only_jobs(**jobs),
            },
        },
    )


def job_runs(tmp_path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "jobs.sqlite") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(r) for r in connection.execute("SELECT * FROM job_runs ORDER BY started_at")]


async def test_run_scheduler_fills_the_index_and_stops_on_sigterm(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A real run-scheduler process syncs on schedule, then SIGTERM stops it with exit 0."""
    config = cli_config(tmp_path, fake_maxroll, scrape_guides={"interval_minutes": 0.02})
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for(r"\[scrape_guides/\w+\] run finished outcome=success")
        code = await worker.stop(signal.SIGTERM)
    finally:
        await worker.kill()
    assert code == 0, "\n".join(worker.lines)
    assert worker.count("scheduler stopped") == 1
    assert stored_rows(tmp_path / "index.sqlite") == expected_rows(fake_maxroll.site)
    runs = job_runs(tmp_path)
    assert runs[0]["trigger"] == "scheduled"
    assert runs[0]["outcome"] == "success"
    assert all(run["outcome"] is not None for run in runs)
    assert (tmp_path / "logs" / "workers.log").exists()


async def test_run_json_prints_one_object_and_status_shows_it(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """`run scrape-guides --json` prints exactly one JSON object; `status --json` reports it."""
    config = cli_config(tmp_path, fake_maxroll)
    code, stdout, stderr = await run_cli(
        "run", "scrape-guides", "--json", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, stderr
    result = json.loads(stdout)
    assert stdout.strip().count("\n") == 0
    assert (result["job_id"], result["trigger"], result["outcome"]) == (
        "scrape_guides",
        "manual",
        "success",
    )
    assert result["summary"]["guides_processed"] == len(fake_maxroll.site.guides)
    assert "progress: 5/5 guides" in stderr
    assert fake_maxroll.token not in stdout + stderr

    code, stdout, stderr = await run_cli("status", "--json", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr
    status = json.loads(stdout)
    jobs = {job["job_id"]: job for job in status["jobs"]}
    assert jobs["scrape_guides"]["last_outcome"] == "success"
    assert jobs["scrape_guides"]["last_duration_seconds"] >= 0
    assert jobs["scrape_guides"]["enabled"] is False
    assert jobs["refresh_cache"]["last_outcome"] is None
    assert status["lease"] is None

    code, stdout, _ = await run_cli("run", "scrape-guides", "--config", str(config), cwd=tmp_path)
    assert code == 0
    assert "scrape-guides: success" in stdout
    assert f"guides_skipped: {len(fake_maxroll.site.guides)}" in stdout


async def test_failed_run_exits_1(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """A run that fails (the search refuses the token) exits 1 with the error, token unshown."""
    config = cli_config(tmp_path, fake_maxroll)
    fake_maxroll.token = "another-token"
    code, stdout, stderr = await run_cli(
        "run", "scrape-guides", "--config", str(config), cwd=tmp_path
    )
    assert code == 1
    assert "scrape-guides: failed" in stdout
    assert "HTTP 401" in stdout
    assert "test-token-123" not in stdout + stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "scrape-guides"], {}, "maxroll.bearer_token is not set"),
        (["run", "nothing"], {}, "Invalid value"),
        (["status"], {"D3IS_SCHEDULER__TIMEZONE": "Nowhere/City"}, "scheduler.timezone"),
        (["run-scheduler"], {"D3IS_MAXROLL__MAX_CONCURRENCY": "-1"}, "maxroll.max_concurrency"),
        (["run", "cleanup-logs", "--config", "missing.toml"], {}, "does not exist"),
        (["status"], {"D3IS_DATABASE_URL": "sqlite+aiosqlite:///x"}, "D3IS_DATABASE_URL"),
        (["run-scheduler"], {"D3IS_SCHEDULR__LEASE_SECONDS": "9"}, "D3IS_SCHEDULR__LEASE_SECONDS"),
        (
            ["run-scheduler"],
            {"D3IS_SCHEDULER__JOBS__CLEANUP_LOGS__INTERVAL_MINUTES": "0.001"},
            "scheduler.jobs.cleanup_logs.interval_minutes",
        ),
        (
            ["run", "cleanup-logs"],
            {"D3IS_SCHEDULER__JOBS__SCRAPE_GUIDES__INTERVAL_MINUTES": "1e7"},
            "scheduler.jobs.scrape_guides.interval_minutes",
        ),
    ],
)
async def test_bad_usage_or_config_exits_2_without_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """Configuration and usage errors: one clear message, exit code 2, no traceback."""
    code, _, stderr = await run_cli(*args, cwd=tmp_path, env=env)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr


async def test_two_schedulers_on_one_store_run_each_scheduled_run_once(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """With two processes on one job store, one runs the jobs; no due time runs twice."""
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 0.017})
    first = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    second = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await first.wait_for("scheduler started")
        await second.wait_for("scheduler started")
        pattern = r"\[cleanup_logs/\w+\] run finished"
        # Wait on whichever runs the jobs: exactly one of them holds the lease.
        leader, standby = (first, second) if first.count("holding") else (second, first)
        await leader.wait_for(pattern, count=4)
        # Stop the standby first: stopping the leader first hands it the lease, as designed.
        codes = [await standby.stop(), await leader.stop()]
    finally:
        await first.kill()
        await second.kill()
    assert codes == [0, 0]
    assert (
        first.count("holding the scheduler lease") + second.count("holding the scheduler lease")
        == 1
    )
    runs = [r for r in job_runs(tmp_path) if r["trigger"] == "scheduled"]
    assert len(runs) >= 4
    assert len({r["scheduled_for"] for r in runs}) == len(runs)
    assert len({r["worker"] for r in runs}) == 1


async def test_sigterm_cancels_a_manual_run_and_json_still_prints_one_object(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """`run scrape_guides --json` (the job id works as well as the CLI name) stopped by SIGTERM:
    the run is recorded cancelled, stdout holds one JSON object, the exit code is 130."""
    config = cli_config(tmp_path, fake_maxroll)
    fake_maxroll.latency = 1.0  # a sync that takes a while
    output = tmp_path / "stdout.json"
    worker = await WorkerProcess.start(
        "run", "scrape_guides", "--json", "--config", str(config), cwd=tmp_path, stdout=output
    )
    try:
        await worker.wait_for("run started")
        code = await worker.stop(signal.SIGTERM)
    finally:
        await worker.kill()
    assert code == 130, "\n".join(worker.lines)
    text = output.read_text(encoding="utf-8")
    assert text.strip().count("\n") == 0
    result = json.loads(text)
    assert (result["job_id"], result["outcome"]) == ("scrape_guides", "cancelled")
    [row] = job_runs(tmp_path)
    assert (row["run_id"], row["outcome"]) == (result["run_id"], "cancelled")
    assert "Traceback" not in "\n".join(worker.lines)


async def test_run_is_refused_while_another_process_runs_the_job(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """A manual run of a job another live process is running now exits 3 with one line."""
    config = cli_config(tmp_path, fake_maxroll)
    answer = threading.Event()

    def hold(_method: str, _path: str) -> None:
        answer.wait(60)  # the first run's sync waits here until the second has been refused

    fake_maxroll.fault_hook = hold
    first = await WorkerProcess.start("run", "scrape-guides", "--config", str(config), cwd=tmp_path)
    try:
        await first.wait_for("run started")
        code, stdout, stderr = await run_cli(
            "run", "scrape-guides", "--config", str(config), cwd=tmp_path
        )
        other = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
        answer.set()
        with anyio.fail_after(60):
            first_code = await first.process.wait()
    finally:
        answer.set()
        await first.kill()
    assert code == 3, stderr
    assert "refused: scrape-guides is running now in" in stderr
    assert stdout == ""
    assert other[0] == 0  # another job is not held up
    assert first_code == 0, "\n".join(first.lines)
    runs = sorted((r["job_id"], r["trigger"], r["outcome"], r["error"]) for r in job_runs(tmp_path))
    # The refused run is in the shared history, naming the process that runs the job.
    [(_, _, _, refusal)] = [run for run in runs if run[2] == "skipped"]
    assert refusal is not None
    assert refusal.startswith("running now in ")
    assert [run[:3] for run in runs] == [
        ("cleanup_logs", "manual", "success"),
        ("scrape_guides", "manual", "skipped"),
        ("scrape_guides", "manual", "success"),
    ]


async def wait_until_open(pid: int, path: Path, running: asyncio.Future[Any]) -> None:
    """Wait until process `pid` has `path` open (it is then waiting on the lock, or about to)."""
    with anyio.fail_after(60):
        while not any(Path(f.path) == path for f in psutil.Process(pid).open_files()):
            assert not running.done(), "the program ended while the job store was locked"
            await asyncio.sleep(0.01)  # look again: the child is still starting


async def test_two_runs_started_together_run_the_job_once(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Two `run scrape-guides` started at the same moment: exactly one runs, the other exits 3
    with the refusal line and a `skipped` row. The test holds the job store's write lock until
    both processes have it open, so both reach the start of the run together (a check-then-start
    would let both through), and Maxroll answers nothing until one process has been refused."""
    config = cli_config(tmp_path, fake_maxroll)
    code, _, stderr = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr  # the job store exists, with all its tables
    answer = threading.Event()

    def hold(_method: str, _path: str) -> None:
        answer.wait(60)  # in the fake's serving thread: the request waits, then is answered

    fake_maxroll.fault_hook = hold
    store = tmp_path / "jobs.sqlite"
    lock = sqlite3.connect(store, isolation_level=None)
    workers: list[WorkerProcess] = []
    try:
        lock.execute("BEGIN IMMEDIATE")  # every write waits (busy timeout: 30 s)
        workers = [
            await WorkerProcess.start("run", "scrape-guides", "--config", str(config), cwd=tmp_path)
            for _ in range(2)
        ]
        exits = {asyncio.ensure_future(w.process.wait()): w for w in workers}
        for running, worker in exits.items():
            await wait_until_open(worker.process.pid, store, running)
        lock.execute("ROLLBACK")
        with anyio.fail_after(60):
            done, _ = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
        [refused] = [exits[task] for task in done]
        [winner] = [w for w in workers if w is not refused]
        answer.set()
        with anyio.fail_after(60):
            refused_code = await refused.process.wait()
            winner_code = await winner.process.wait()
    finally:
        answer.set()
        lock.close()
        for worker in workers:
            await worker.kill()
    assert refused_code == 3, "\n".join(refused.lines)
    assert any(
        line.startswith("refused: scrape-guides is running now in ") for line in refused.lines
    ), "\n".join(refused.lines)
    assert refused.count("run started") == 0
    assert winner_code == 0, "\n".join(winner.lines)
    assert winner.count("run started") == 1
    rows = [r for r in job_runs(tmp_path) if r["job_id"] == "scrape_guides"]
    assert sorted((row["trigger"], row["outcome"]) for row in rows) == [
        ("manual", "skipped"),
        ("manual", "success"),
    ]
    [row] = [r for r in rows if r["outcome"] == "success"]
    assert str(winner.process.pid) in row["worker"]


async def test_run_scheduler_exits_1_when_its_job_store_is_replaced(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Deleting the job-store file under run-scheduler stops it within a lease period: exit 1
    with one line naming the setting."""
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 60})
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for("holding the scheduler lease")
        store = tmp_path / "jobs.sqlite"
        store.rename(tmp_path / "jobs.sqlite.moved")
        with anyio.fail_after(60):
            code = await worker.process.wait()
    finally:
        await worker.kill()
    assert code == 1, "\n".join(worker.lines)
    assert any(
        line.startswith("error: scheduler.job_store_path") and "deleted or replaced" in line
        for line in worker.lines
    )
    assert "Traceback" not in "\n".join(worker.lines)


async def test_help_lists_the_commands_without_importing_the_config_asyncio_or_rich(
    tmp_path: Path,
) -> None:
    """`--help` stays fast: pydantic (via the config), asyncio and rich load only when needed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "d3_item_salvager.workers", "--help",
        cwd=tmp_path, env=child_env({"COLUMNS": "240"}), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0
    for command in ("run-scheduler", "run", "status", "history", "--version"):
        assert command in stdout.decode()
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.decode().splitlines()}
    assert "d3_item_salvager.workers.cli" in imported
    slow = {"d3_item_salvager.config", "pydantic", "asyncio", "typer.rich_utils", "rich"}
    assert not slow & imported
