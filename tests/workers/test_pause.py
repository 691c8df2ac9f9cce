"""Pause and resume: kept in the job store, honoured by the leader, across restarts and processes."""

from __future__ import annotations

import json
import logging
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.scheduler import (
    SchedulerRetryPlanner,
    build_scheduler,
    register_jobs,
    stop_scheduler,
)
from tests.conftest import make_config, only_jobs
from tests.processes import WorkerProcess, run_cli, write_config


def cleanup_only(tmp_path: Path, store: dict[str, Any] | None = None, **cleanup: Any) -> AppConfig:
    """Only cleanup_logs enabled (a cheap job), hourly unless `cleanup` says otherwise; the job
    store as `store` says (SQLite by default)."""
    return make_config(
        tmp_path,
        scheduler={
            **(store or {}),
            "jobs": only_jobs(cleanup_logs={"interval_minutes": 60, **cleanup}),
        },
    )


def next_run(runtime: WorkerRuntime, job_id: str = "cleanup_logs") -> datetime | None:
    assert runtime.scheduler is not None
    moment: datetime | None = runtime.scheduler.get_job(job_id).next_run_time
    return moment


async def test_a_paused_job_does_not_run_on_schedule_but_runs_by_hand(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """Paused, a due job is not run by the scheduler (burst mode here); `run_job` still runs it."""
    config = cleanup_only(tmp_path, job_store_settings)
    async with WorkerRuntime(config, burst=True) as runtime:
        assert runtime.scheduler is not None
        runtime.scheduler.modify_job(
            "cleanup_logs", next_run_time=datetime.now(UTC) - timedelta(seconds=1)
        )
        assert await runtime.pause_job("cleanup-logs") is True
        assert await runtime.pause_job("cleanup_logs") is False  # already paused
        assert next_run(runtime) is None
        assert await runtime.run_due_jobs() == []
        manual = await runtime.run_job("cleanup_logs")
    assert (manual.trigger, manual.outcome) == ("manual", "success")


async def test_resume_runs_once_at_once_when_runs_fell_due_during_the_pause(
    tmp_path: Path, job_store_settings: dict[str, Any]
) -> None:
    """A job whose next run passed while paused (many one-minute fires) runs once on resume."""
    config = cleanup_only(tmp_path, job_store_settings, interval_minutes=1)
    async with WorkerRuntime(config, burst=True) as runtime:
        assert runtime.scheduler is not None
        runtime.scheduler.modify_job(
            "cleanup_logs", next_run_time=datetime.now(UTC) - timedelta(minutes=10)
        )
        await runtime.pause_job("cleanup_logs")
        before = datetime.now(UTC)
        assert await runtime.resume_job("cleanup_logs") is True
        resumed_at = next_run(runtime)
        runs = await runtime.run_due_jobs()
        following = next_run(runtime)
    assert resumed_at is not None
    assert resumed_at >= before
    assert [run.outcome for run in runs] == ["success"]
    assert following is not None
    assert following > resumed_at


async def test_resume_keeps_the_next_fire_time_when_none_fell_due(tmp_path: Path) -> None:
    """Resumed before its next run time, the job keeps that time: nothing runs at once."""
    config = cleanup_only(tmp_path, cron="17 4 * * *", interval_minutes=None)
    async with WorkerRuntime(config, burst=True) as runtime:
        held = next_run(runtime)
        await runtime.pause_job("cleanup_logs")
        assert await runtime.resume_job("cleanup_logs") is True
        assert await runtime.resume_job("cleanup_logs") is False  # not paused any more
        resumed = next_run(runtime)
        assert await runtime.run_due_jobs() == []
    assert held is not None
    assert resumed == held


async def test_a_pause_holds_across_restarts_and_a_rescheduling_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Paused by a runtime without a scheduler, the job stays paused when a scheduler registers
    it, rescheduled by a new interval and new to the store alike; `run_new_jobs_at_once` does not
    start it."""
    config = cleanup_only(tmp_path)
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        assert await runtime.pause_job("cleanup_logs") is True

    scheduler = build_scheduler(config)  # the seed's API honours it too
    try:
        report = register_jobs(scheduler, config)
        assert scheduler.get_job("cleanup_logs").next_run_time is None
        assert report.paused == ["cleanup_logs"]
    finally:
        await stop_scheduler(scheduler, None, 0)

    changed = make_config(
        tmp_path,
        scheduler={
            "run_new_jobs_at_once": True,
            "jobs": only_jobs(cleanup_logs={"cron": "*/5 * * * *"}),
        },
    )
    with caplog.at_level(logging.INFO):
        async with WorkerRuntime(changed, burst=True) as runtime:
            assert runtime.is_leader
            paused = next_run(runtime)
            assert await runtime.run_due_jobs() == []
            await runtime.resume_job("cleanup_logs")
            resumed = next_run(runtime)
    assert paused is None
    assert resumed is not None
    assert not [r for r in caplog.records if "running it now" in r.getMessage()]


async def test_a_paused_job_gets_no_retry_and_loses_its_pending_one(tmp_path: Path) -> None:
    """Pausing drops a pending retry run, and no new retry is planned while paused."""
    config = cleanup_only(tmp_path)
    async with WorkerRuntime(config, burst=True) as runtime:
        assert runtime.scheduler is not None
        planner = SchedulerRetryPlanner(runtime.scheduler)
        assert planner.schedule_retry("cleanup_logs", 1, 60) is not None
        await runtime.pause_job("cleanup_logs")
        assert runtime.scheduler.get_job("cleanup_logs:retry") is None
        assert planner.schedule_retry("cleanup_logs", 1, 60) is None


async def test_the_paused_gauge_follows_pause_and_resume(tmp_path: Path) -> None:
    """`d3is_job_paused{job}` is 1 while the job is paused, else 0, for every scheduled job."""
    config = make_config(tmp_path)
    async with WorkerRuntime(config, burst=True) as runtime:
        registry = runtime.metrics.registry

        def gauge() -> dict[str, float | None]:
            return {
                job_id: registry.get_sample_value("d3is_job_paused", {"job": job_id})
                for job_id in BUILTIN_JOBS.ids
            }

        assert set(gauge().values()) == {0}
        await runtime.pause_job("refresh_cache")
        assert gauge() == {job_id: int(job_id == "refresh_cache") for job_id in BUILTIN_JOBS.ids}
        await runtime.resume_job("refresh_cache")
        assert set(gauge().values()) == {0}


# Through the CLI, across processes


def cli_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite'}"},
            "cache": {"dir": str(tmp_path / "cache")},
            "logging": {"dir": str(tmp_path / "logs")},
            "scheduler": {
                "job_store_path": str(tmp_path / "jobs.sqlite"),
                "lease_seconds": 4,
                "shutdown_timeout_seconds": 5,
                "run_new_jobs_at_once": False,
                "jobs": only_jobs(cleanup_logs={"interval_minutes": 60}),
            },
        },
    )


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(*args, "--config", str(tmp_path / "workers.toml"), cwd=tmp_path)


async def jobs_status(tmp_path: Path) -> dict[str, dict[str, Any]]:
    code, stdout, stderr = await cli(tmp_path, "status", "--json")
    assert code == 0, stderr
    return {job["job_id"]: job for job in json.loads(stdout)["jobs"]}


async def test_pause_and_resume_reach_a_scheduler_in_another_process(tmp_path: Path) -> None:
    """`pause` from one process reaches the leader of another within a lease period, without a
    restart; status marks the job paused and --check stays healthy; `resume` brings it back."""
    cli_config(tmp_path)
    worker = await WorkerProcess.start(
        "run-scheduler", "--config", str(tmp_path / "workers.toml"), cwd=tmp_path
    )
    try:
        await worker.wait_for("holding the scheduler lease")
        code, stdout, stderr = await cli(tmp_path, "pause", "cleanup-logs")
        assert code == 0, stderr
        assert "cleanup-logs: paused" in stdout
        await worker.wait_for("paused jobs: cleanup_logs: paused", within=4)

        cleanup = (await jobs_status(tmp_path))["cleanup_logs"]
        assert (cleanup["paused"], cleanup["next_run_time"]) == (True, None)
        assert cleanup["paused_since"] is not None
        code, stdout, _ = await cli(tmp_path, "status", "--check")
        assert code == 0, stdout
        assert "cleanup_logs: paused since" in stdout
        code, stdout, _ = await cli(tmp_path, "status", "--check", "--json")
        check = json.loads(stdout)
        assert (code, check["healthy"], check["problems"]) == (0, True, [])
        assert [line.split(":")[0] for line in check["paused"]] == ["cleanup_logs"]
        code, stdout, _ = await cli(tmp_path, "status")
        assert "paused" in stdout

        code, stdout, stderr = await cli(tmp_path, "resume", "cleanup-logs")
        assert code == 0, stderr
        assert "cleanup-logs: resumed" in stdout
        await worker.wait_for("paused jobs: cleanup_logs: resumed", within=4)
        cleanup = (await jobs_status(tmp_path))["cleanup_logs"]
        assert cleanup["paused"] is False
        assert cleanup["next_run_time"] is not None
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()


async def test_pause_and_resume_say_when_nothing_changes(tmp_path: Path) -> None:
    """Pausing twice or resuming a running job exits 0 and says so; the first pause needs no
    running scheduler and creates the job store."""
    cli_config(tmp_path)
    assert (await cli(tmp_path, "resume", "cleanup_logs"))[:2] == (
        0,
        "cleanup-logs: was not paused\n",
    )
    assert (await cli(tmp_path, "pause", "cleanup_logs"))[0] == 0
    assert (await cli(tmp_path, "pause", "cleanup_logs"))[:2] == (
        0,
        "cleanup-logs: already paused\n",
    )
    assert (await jobs_status(tmp_path))["cleanup_logs"]["paused"] is True


@pytest.mark.parametrize("command", ["pause", "resume"])
async def test_an_unknown_job_exits_2(tmp_path: Path, command: str) -> None:
    """`pause`/`resume` of a job that does not exist: exit 2, naming it and the known ones."""
    cli_config(tmp_path)
    code, stdout, stderr = await cli(tmp_path, command, "scrape-guidez")
    assert code == 2
    assert "unknown job 'scrape-guidez'" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert not (tmp_path / "jobs.sqlite").exists()
