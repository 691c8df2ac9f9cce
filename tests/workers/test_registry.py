"""The job registry: a fourth job added by one registry entry is scheduled, run, counted and
reported like the built-in ones, with no other edit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from apscheduler.events import EVENT_SCHEDULER_PAUSED

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import resolve
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers.binding import current_container
from d3_item_salvager.workers.job_runner import JobRunner, WorkResult
from d3_item_salvager.workers.jobs import (
    JOBS,
    JobSpec,
    check_jobs_config,
    job_settings,
    job_spec,
    register_job,
    unregister_job,
)
from d3_item_salvager.workers.runs import Outcome, RunFinished, RunResult, Trigger
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import collect_status
from tests.conftest import make_config

BUILT_IN = {"scrape_guides": "scrape-guides", "refresh_cache": "refresh-cache"}


async def ping_task(*, trigger: str = Trigger.SCHEDULED, attempt: int = 0) -> RunResult:
    """The fourth job's task: resolve the runner of the current runtime and report a summary."""
    runner: JobRunner = await resolve(current_container().job_runner)

    async def work() -> WorkResult:
        return WorkResult({"pong": 1})

    return await runner.run("ping", work, trigger=trigger, attempt=attempt)


@pytest.fixture
def ping_job() -> Iterator[JobSpec]:
    """The one registry entry that adds the job (removed again after the test)."""
    spec = register_job(
        JobSpec("ping", f"{__name__}:ping_task", interval_minutes=0.003, timeout_minutes=1)
    )
    yield spec
    unregister_job("ping")


def only_ping(tmp_path: Path, **ping: object) -> AppConfig:
    jobs: dict[str, dict[str, object]] = {job_id: {"enabled": False} for job_id in JOBS}
    jobs["ping"] = dict(ping)
    return make_config(tmp_path, scheduler={"jobs": jobs})


async def test_a_job_added_through_the_registry_alone_runs_everywhere(
    tmp_path: Path, ping_job: JobSpec
) -> None:
    """Scheduled from its registry defaults, stored as a text reference, runnable by name,
    counted in the metrics and listed by `status`."""
    config = only_ping(tmp_path)
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(30):
            # On a busy machine a run can outlast the 0.18 s interval: the next one is then
            # recorded `skipped` (one instance at a time), so wait for two that ran.
            recent = await runtime.tracker.wait_for(
                lambda seen: sum(r.job_id == "ping" and r.succeeded for r in seen) >= 2
            )
        runs = [r for r in recent if r.job_id == "ping"]
        assert runtime.scheduler is not None
        stored = runtime.scheduler.get_job("ping")
        assert stored.func_ref == ping_job.task
        assert stored.trigger.interval.total_seconds() == pytest.approx(0.18)
    async with WorkerRuntime(config, run_scheduler=False) as one_off:
        manual = await one_off.run_job("ping")
        counted = one_off.metrics.runs.labels("ping", "manual", "success")._value.get()
    assert {r.trigger for r in runs} == {Trigger.SCHEDULED}
    assert {r.outcome for r in runs} <= {Outcome.SUCCESS, Outcome.SKIPPED}
    assert all(r.summary == {"pong": 1} for r in runs if r.succeeded)
    assert (manual.trigger, manual.summary) == (Trigger.MANUAL, {"pong": 1})
    assert counted == 1
    report = collect_status(config)
    assert [job["job_id"] for job in report["jobs"]] == [*JOBS]
    assert report["jobs"][-1]["last_outcome"] == "success"


def test_config_sections_follow_the_registry(tmp_path: Path, ping_job: JobSpec) -> None:
    """A new job's section is accepted and sets its settings; a misspelt job id is an error."""
    config = only_ping(tmp_path, timeout_minutes=5)
    settings = job_settings(config, "ping")
    assert (settings.interval_minutes, settings.timeout_minutes) == (0.003, 5)
    check_jobs_config(config)
    typo = make_config(tmp_path, scheduler={"jobs": {"pnig": {"enabled": False}}})
    with pytest.raises(ConfigError, match=r"scheduler\.jobs\.pnig: unknown job"):
        check_jobs_config(typo)
    with pytest.raises(ConfigError, match="unknown job"):
        WorkerRuntime(typo)


def test_jobs_are_named_by_id_or_cli_name() -> None:
    """`run scrape-guides` and `run scrape_guides` name the same registry entry."""
    for job_id, cli_name in BUILT_IN.items():
        assert job_spec(job_id) is job_spec(cli_name) is JOBS[job_id]
        assert JOBS[job_id].cli_name == cli_name
        assert JOBS[job_id].needs_token
    assert not JOBS["cleanup_logs"].needs_token
    with pytest.raises(ConfigError, match="unknown job 'nope'"):
        job_spec("nope")


def test_registering_a_job_twice_or_without_a_reference_fails(ping_job: JobSpec) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_job(ping_job)
    with pytest.raises(ValueError, match="module:function"):
        register_job(JobSpec("pong", "not_a_reference", 1, 1))


# A run the scheduler handed to the loop that reaches the runner only as the runtime stops.
_gate: dict[str, asyncio.Event] = {}
_late_runs: list[asyncio.Task[Any]] = []


async def late_task(*, trigger: str = Trigger.SCHEDULED, attempt: int = 0) -> RunResult:
    runner: JobRunner = await resolve(current_container().job_runner)
    current = asyncio.current_task()
    assert current is not None
    _late_runs.append(current)
    _gate["waiting"].set()
    await _gate["go"].wait()

    async def work() -> WorkResult:
        return WorkResult({"late": 1})

    return await runner.run("late", work, trigger=trigger, attempt=attempt)


async def test_a_run_submitted_as_the_runtime_stops_ends_before_it_has_stopped(
    tmp_path: Path,
) -> None:
    """A scheduled run that reaches the runner after the stop began (its task was created just
    before the pause) is waited for like any running job: on exit its claim is released and its
    row closed, so the next runtime of this process may run the job at once."""
    _gate.update(waiting=asyncio.Event(), go=asyncio.Event())
    _late_runs.clear()
    register_job(
        JobSpec("late", f"{__name__}:late_task", interval_minutes=0.003, timeout_minutes=1)
    )
    try:
        jobs = {job_id: {"enabled": job_id == "late"} for job_id in JOBS}
        config = make_config(tmp_path, scheduler={"jobs": jobs})
        async with WorkerRuntime(config) as runtime:
            with anyio.fail_after(30):
                await _gate["waiting"].wait()
            assert runtime.scheduler is not None
            # The run goes on once the stop has paused the scheduler (before it waits for runs).
            runtime.scheduler.add_listener(lambda _event: _gate["go"].set(), EVENT_SCHEDULER_PAUSED)
            events: list[RunFinished] = []
            runtime.runner.events.subscribe(
                lambda event: events.append(event) if isinstance(event, RunFinished) else None
            )
        [late] = _late_runs
        assert late.done()
        assert [(e.result.job_id, e.result.outcome) for e in events] == [("late", "success")]
        async with WorkerRuntime(config, run_scheduler=False) as one_off:
            assert await one_off.runner.history.claims.current("late") is None
            manual = await one_off.run_job("late")
        assert manual.succeeded
    finally:
        unregister_job("late")
