"""The job registry: a host app's job, passed to its runtime as `extra_jobs`, is scheduled, run,
counted and reported like the built-in ones, and only by that runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest
from apscheduler.events import EVENT_SCHEDULER_PAUSED

from d3_item_salvager.config import AppConfig
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.workers import JobContext, JobFailedError, JobSpec, WorkerRuntime
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.jobs import JobRegistry
from d3_item_salvager.workers.runs import Outcome, RetryScheduled, RunFinished, Trigger
from d3_item_salvager.workers.status import collect_status
from d3_item_salvager.workers.tasks import STORED_ENTRY
from tests.conftest import make_config

BUILT_IN = {"scrape_guides": "scrape-guides", "refresh_cache": "refresh-cache"}


async def ping(ctx: JobContext) -> dict[str, Any]:
    """The fourth job's work: a summary naming what its context carried."""
    return {"pong": 1, "trigger": str(ctx.trigger), "attempt": ctx.attempt, **ctx.options}


PING = JobSpec("ping", ping, interval_minutes=0.003, timeout_minutes=1)


def only(tmp_path: Path, registry: JobRegistry, job_id: str, **section: object) -> AppConfig:
    """A config that disables every job of `registry` but `job_id` (whose section is given)."""
    jobs: dict[str, dict[str, object]] = {spec.id: {"enabled": False} for spec in registry}
    jobs[job_id] = dict(section)
    return make_config(tmp_path, scheduler={"jobs": jobs})


async def test_a_host_apps_job_runs_everywhere_in_its_runtime(tmp_path: Path) -> None:
    """Scheduled from its defaults through the one stored entry point, runnable by name with
    options, counted in the metrics and listed by `status`."""
    registry = BUILTIN_JOBS.with_jobs([PING])
    config = only(tmp_path, registry, "ping")
    async with WorkerRuntime(config, extra_jobs=[PING]) as runtime:
        assert runtime.jobs.ids == registry.ids
        with anyio.fail_after(30):
            # On a busy machine a run can outlast the 0.18 s interval: the next one is then
            # recorded `skipped` (one instance at a time), so wait for two that ran.
            recent = await runtime.tracker.wait_for(
                lambda seen: sum(r.job_id == "ping" and r.succeeded for r in seen) >= 2
            )
        runs = [r for r in recent if r.job_id == "ping"]
        assert runtime.scheduler is not None
        stored = runtime.scheduler.get_job("ping")
        assert (stored.func_ref, stored.kwargs) == (STORED_ENTRY, {"job_id": "ping"})
        assert stored.trigger.interval.total_seconds() == pytest.approx(0.18)
    async with WorkerRuntime(config, run_scheduler=False, extra_jobs=[PING]) as one_off:
        manual = await one_off.run_job("ping", loud=True)
        counted = one_off.metrics.runs.labels("ping", "manual", "success")._value.get()
    assert {r.trigger for r in runs} == {Trigger.SCHEDULED}
    assert {r.outcome for r in runs} <= {Outcome.SUCCESS, Outcome.SKIPPED}
    assert all(r.summary == {"pong": 1, "trigger": "scheduled", "attempt": 0} for r in runs)
    assert manual.summary == {"pong": 1, "trigger": "manual", "attempt": 0, "loud": True}
    assert counted == 1
    report = collect_status(config, registry)
    assert [job["job_id"] for job in report["jobs"]] == registry.ids
    assert report["jobs"][-1]["last_outcome"] == "success"


async def test_another_runtime_without_the_job_does_not_know_it(tmp_path: Path) -> None:
    """Jobs belong to a runtime: a second one in the same process refuses to run it, and
    refuses a config section for it."""
    config = make_config(tmp_path)
    async with (
        WorkerRuntime(config, run_scheduler=False, extra_jobs=[PING]) as with_ping,
        WorkerRuntime(config, run_scheduler=False) as without,
    ):
        assert (await with_ping.run_job("ping")).succeeded
        with pytest.raises(ConfigError, match="unknown job 'ping'"):
            await without.run_job("ping")
    section = make_config(tmp_path, scheduler={"jobs": {"ping": {"timeout_minutes": 5}}})
    with pytest.raises(ConfigError, match=r"scheduler\.jobs\.ping: unknown job"):
        WorkerRuntime(section)
    assert PING.settings(section).timeout_minutes == 5
    WorkerRuntime(section, extra_jobs=[PING])  # known there: accepted


def test_config_sections_follow_the_registry(tmp_path: Path) -> None:
    """A job's section overrides its defaults; unset values come from the spec; a misspelt job
    id is an error."""
    registry = BUILTIN_JOBS.with_jobs([PING])
    config = only(tmp_path, registry, "ping", timeout_minutes=5)
    settings = registry.get("ping").settings(config)
    assert (settings.interval_minutes, settings.timeout_minutes) == (0.003, 5)
    registry.check_config(config)
    typo = make_config(tmp_path, scheduler={"jobs": {"pnig": {"enabled": False}}})
    with pytest.raises(ConfigError, match=r"scheduler\.jobs\.pnig: unknown job"):
        registry.check_config(typo)


def test_jobs_are_named_by_id_or_cli_name() -> None:
    """`run scrape-guides` and `run scrape_guides` name the same registry entry."""
    for job_id, cli_name in BUILT_IN.items():
        assert BUILTIN_JOBS.get(job_id) is BUILTIN_JOBS.get(cli_name)
        assert BUILTIN_JOBS.get(job_id).cli_name == cli_name
        assert BUILTIN_JOBS.get(job_id).needs_token
    assert not BUILTIN_JOBS.get("cleanup_logs").needs_token
    with pytest.raises(ConfigError, match="unknown job 'nope'"):
        BUILTIN_JOBS.get("nope")


def test_a_job_defined_twice_or_badly_named_is_refused() -> None:
    """Ids are unique within a registry and usable as config keys and metric labels."""
    with pytest.raises(ValueError, match="defined twice"):
        BUILTIN_JOBS.with_jobs([PING, PING])
    with pytest.raises(ValueError, match="lower-case"):
        JobSpec("Ping-Job", ping, interval_minutes=1, timeout_minutes=1)


async def flaky(ctx: JobContext) -> dict[str, Any]:
    """Fails as transient on its first attempt, succeeds on the retry."""
    if ctx.attempt == 0:
        raise JobFailedError("upstream busy", summary={"tried": 1}, transient=True)
    return {"tried": ctx.attempt + 1}


async def test_a_transient_failure_raised_by_work_gets_a_retry_run(tmp_path: Path) -> None:
    """`JobFailedError(transient=True)` fails the run with its summary and schedules a retry,
    which runs with `ctx.attempt` 1 and `ctx.trigger` retry."""
    spec = JobSpec("flaky", flaky, interval_minutes=600, timeout_minutes=1)
    registry = BUILTIN_JOBS.with_jobs([spec])
    jobs: dict[str, dict[str, object]] = {s.id: {"enabled": s.id == "flaky"} for s in registry}
    jobs["flaky"]["retry_backoff_seconds"] = 0.05
    config = make_config(tmp_path, scheduler={"jobs": jobs, "run_new_jobs_at_once": True})
    retries: list[RetryScheduled] = []
    async with WorkerRuntime(config, extra_jobs=[spec]) as runtime:
        runtime.runner.events.subscribe(
            lambda event: retries.append(event) if isinstance(event, RetryScheduled) else None
        )
        with anyio.fail_after(30):
            first, retry = await runtime.wait_for_runs("flaky", 2)
    assert (first.outcome, first.error, first.summary) == ("failed", "upstream busy", {"tried": 1})
    assert (retry.trigger, retry.attempt, retry.outcome) == ("retry", 1, "success")
    assert retry.summary == {"tried": 2}
    assert [(r.job_id, r.attempt) for r in retries] == [("flaky", 1)]


# A run the scheduler handed to the loop that reaches the runner only as the runtime stops.
_gate: dict[str, asyncio.Event] = {}


async def late(ctx: JobContext) -> dict[str, int]:
    _gate["waiting"].set()
    await _gate["go"].wait()
    return {"late": 1}


async def test_a_run_going_as_the_runtime_stops_ends_before_it_has_stopped(
    tmp_path: Path,
) -> None:
    """A scheduled run still going when the stop begins is waited for: on exit its claim is
    released and its row closed, so the next runtime of this process may run the job at once."""
    _gate.update(waiting=asyncio.Event(), go=asyncio.Event())
    spec = JobSpec("late", late, interval_minutes=0.003, timeout_minutes=1)
    registry = BUILTIN_JOBS.with_jobs([spec])
    config = only(tmp_path, registry, "late")
    events: list[RunFinished] = []
    async with WorkerRuntime(config, extra_jobs=[spec]) as runtime:
        with anyio.fail_after(30):
            await _gate["waiting"].wait()
        assert runtime.scheduler is not None
        # The run goes on once the stop has paused the scheduler (before it waits for runs).
        runtime.scheduler.add_listener(lambda _event: _gate["go"].set(), EVENT_SCHEDULER_PAUSED)
        runtime.runner.events.subscribe(
            lambda event: events.append(event) if isinstance(event, RunFinished) else None
        )
    assert [(e.result.job_id, e.result.outcome) for e in events][:1] == [("late", "success")]
    async with WorkerRuntime(config, run_scheduler=False, extra_jobs=[spec]) as one_off:
        assert await one_off.runner.history.claim("late") is None
        _gate["go"].set()
        manual = await one_off.run_job("late")
    assert manual.succeeded


async def slow_and_flaky(ctx: JobContext) -> None:
    _gate["waiting"].set()
    await _gate["go"].wait()
    raise JobFailedError("upstream busy", transient=True)


async def test_a_stopping_runtime_schedules_no_retry(tmp_path: Path) -> None:
    """A run that fails as transient while its runtime stops (after "stop requested") leaves no
    retry run behind: a process on its way out schedules nothing new."""
    _gate.update(waiting=asyncio.Event(), go=asyncio.Event())
    spec = JobSpec("slow", slow_and_flaky, interval_minutes=600, timeout_minutes=1)
    registry = BUILTIN_JOBS.with_jobs([spec])
    jobs: dict[str, dict[str, object]] = {s.id: {"enabled": s.id == "slow"} for s in registry}
    config = make_config(tmp_path, scheduler={"jobs": jobs, "run_new_jobs_at_once": True})
    retries: list[RetryScheduled] = []
    finished: list[RunFinished] = []
    async with WorkerRuntime(config, extra_jobs=[spec]) as runtime:
        runtime.runner.events.subscribe(
            lambda e: retries.append(e) if isinstance(e, RetryScheduled) else None
        )
        runtime.runner.events.subscribe(
            lambda e: finished.append(e) if isinstance(e, RunFinished) else None
        )
        with anyio.fail_after(30):
            await _gate["waiting"].wait()
        assert runtime.scheduler is not None
        runtime.scheduler.add_listener(lambda _event: _gate["go"].set(), EVENT_SCHEDULER_PAUSED)
    assert [(e.result.outcome, e.result.error) for e in finished] == [("failed", "upstream busy")]
    assert retries == []
    [slow] = [job for job in collect_status(config, registry)["jobs"] if job["job_id"] == "slow"]
    assert (slow["retry_pending"], slow["retry_at"]) == (False, None)
