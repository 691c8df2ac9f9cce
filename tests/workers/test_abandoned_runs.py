"""Runs left `running` by a process that died: closed by the next user of the job, and run again
at once by the next leader (as systemd timers' `Persistent=`)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from d3_item_salvager.config import AppConfig
from d3_item_salvager.workers import JobContext, JobSpec, WorkerRuntime
from tests.conftest import make_config, only_jobs
from tests.workers.job_store_sql import job_runs, job_store


async def ping(ctx: JobContext) -> dict[str, Any]:
    return {"pong": 1}


PING = JobSpec("ping", ping, interval_minutes=600, timeout_minutes=1)


def dead_worker() -> str:
    """The identity of a process of this host that has exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    return f"{socket.gethostname()}:{child.stdout.strip()}:gone"


def left_running(config: AppConfig, job_id: str, trigger: str, *, claimed: bool) -> None:
    """A run of `job_id` as a killed process leaves it: its row open, maybe its claim held."""
    worker = dead_worker()
    with job_store(config) as connection:
        connection.execute(
            text(
                "INSERT INTO job_runs (run_id, job_id, trigger, started_at, attempt, worker)"
                " VALUES ('killed', :job, :trigger, :started, 0, :worker)"
            ),
            {
                "job": job_id,
                "trigger": trigger,
                "worker": worker,
                "started": time.time(),
            },
        )
        if claimed:
            connection.execute(
                text("INSERT INTO job_claims VALUES (:job, :worker, 'killed', :trigger, 0, 9e12)"),
                {"job": job_id, "worker": worker, "trigger": trigger},
            )


def only_ping(tmp_path: Path) -> AppConfig:
    return make_config(tmp_path, scheduler={"jobs": only_jobs(), "run_new_jobs_at_once": True})


async def test_the_next_run_of_a_job_closes_a_killed_manual_run(tmp_path: Path) -> None:
    """A killed `run JOB` leaves its row `running`; the next process to run that job (here by
    hand, no scheduler anywhere) marks it abandoned."""
    config = make_config(tmp_path)
    async with WorkerRuntime(config, run_scheduler=False) as runtime:  # creates the job store
        pass
    left_running(config, "cleanup_logs", "manual", claimed=True)
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        assert (await runtime.run_job("cleanup_logs")).succeeded
    outcomes = {row["run_id"]: row["outcome"] for row in job_runs(config)}
    assert outcomes.pop("killed") == "abandoned"
    assert list(outcomes.values()) == ["success"]


async def test_a_job_whose_last_run_was_abandoned_runs_at_once_under_the_next_leader(
    tmp_path: Path,
) -> None:
    """Not one whole interval later: a job that had succeeded, then was killed mid-run, runs as
    soon as a scheduler leads."""
    config = only_ping(tmp_path)
    async with WorkerRuntime(config, extra_jobs=[PING]) as first:
        with anyio.fail_after(30):
            await first.wait_for_runs("ping", 1)  # new to the store: runs at once
        assert first.scheduler is not None
        next_regular = first.scheduler.get_job("ping").next_run_time
    left_running(config, "ping", "scheduled", claimed=False)
    async with WorkerRuntime(config, extra_jobs=[PING]) as second:
        with anyio.fail_after(30):
            [run] = await second.wait_for_runs("ping", 1)
    assert run.succeeded
    outcomes = [row["outcome"] for row in job_runs(config)]
    assert outcomes == ["success", "abandoned", "success"]
    assert next_regular is not None
