"""Prometheus metrics over loopback HTTP, and `status --check` as a health check."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from d3_item_salvager.config import AppConfig, load_config
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.metrics import WorkerMetrics
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import health_problems
from tests.conftest import make_config
from tests.processes import WorkerProcess, child_env, run_cli
from tests.workers.test_cli import cli_config


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_config(tmp_path: Path, fake_maxroll: FakeMaxroll) -> AppConfig:
    """A config with metrics on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return make_config(tmp_path, maxroll=fake_maxroll.config_values(), metrics={"port": port})


async def test_runtime_serves_prometheus_text(metrics_config: AppConfig) -> None:
    """After a manual scrape, /metrics reports the run, Maxroll statuses, lease and next runs."""
    async with WorkerRuntime(metrics_config) as runtime:
        result = await tasks.scrape_guides_task(trigger="manual")
        assert runtime.metrics_url is not None
        async with httpx.AsyncClient() as client:
            response = await client.get(runtime.metrics_url)
    assert result.outcome == "success"
    assert response.status_code == 200
    values = samples(response.text)
    run = (
        "d3is_job_runs_total",
        (("job", "scrape_guides"), ("outcome", "success"), ("trigger", "manual")),
    )
    assert values[run] == 1
    assert values[("d3is_maxroll_requests_total", (("status", "200"),))] > 0
    assert values[("d3is_scheduler_lease_held", ())] == 1
    assert values[("d3is_job_run_duration_seconds_count", (("job", "scrape_guides"),))] == 1
    assert values[("d3is_job_last_success_timestamp_seconds", (("job", "scrape_guides"),))] > 0
    next_runs = {labels for name, labels in values if name == "d3is_job_next_run_timestamp_seconds"}
    assert next_runs == {(("job", job),) for job in BUILTIN_JOBS.ids}
    assert ("d3is_event_loop_lag_seconds_count", ()) in values
    assert "test-token-123" not in response.text


async def test_metrics_port_in_use_at_start_is_a_config_error(metrics_config: AppConfig) -> None:
    """A leader that cannot bind metrics.port at start gives a clear error naming the setting."""
    port = metrics_config.metrics.port
    assert port is not None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigError, match="metrics.port"):
            async with WorkerRuntime(metrics_config):
                pass


async def test_only_the_lease_holder_serves_metrics_and_a_new_leader_takes_over(
    metrics_config: AppConfig,
) -> None:
    """Several runtimes on one config: the leader binds metrics.port, a standby and a one-off
    runtime do not, and the standby binds it once it takes the lease over."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(WorkerRuntime(metrics_config))
        one_off = await stack.enter_async_context(
            WorkerRuntime(metrics_config, run_scheduler=False)
        )
        second = await stack.enter_async_context(WorkerRuntime(metrics_config))
        assert first.is_leader
        assert first.metrics_url is not None
        assert (one_off.metrics_url, second.metrics_url) == (None, None)
        url = first.metrics_url
        await first.__aexit__(None, None, None)
        with anyio.fail_after(20):
            await second.became_leader.wait()
        assert second.metrics_url == url
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
    assert samples(response.text)[("d3is_scheduler_lease_held", ())] == 1


async def test_loop_lag_is_measured(
    metrics_config: AppConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host callback that blocks the loop for 0.8 s (past the 0.5 s probe) shows up as lag."""
    async with WorkerRuntime(metrics_config, run_scheduler=False) as runtime:
        lag = runtime.metrics.loop_lag
        observed: asyncio.Queue[float] = asyncio.Queue()
        record = lag.observe

        def spy(value: float, exemplar: dict[str, str] | None = None) -> None:
            record(value)
            observed.put_nowait(value)

        monkeypatch.setattr(lag, "observe", spy)
        with anyio.fail_after(10):
            await observed.get()  # the probe has just gone back to sleep for 0.5 s
            time.sleep(0.8)  # noqa: ASYNC251 - the fault being injected: a blocked event loop
            late = await observed.get()
    assert late >= 0.25
    [family] = lag.collect()
    [total] = [s.value for s in family.samples if s.name.endswith("_sum")]
    assert total >= late


def report(next_run: str | None, outcome: str | None, enabled: bool = True) -> dict[str, object]:
    error = "boom" if outcome == "failed" else None
    return {
        "jobs": [
            {
                "job_id": "scrape_guides",
                "enabled": enabled,
                "next_run_time": next_run,
                "last_outcome": outcome,
                "last_error": error,
                "conclusive_outcome": outcome,
                "conclusive_error": error,
            }
        ],
        "lease": {"holder": "h:1:x", "expires_at": "2030-01-01T00:00:00+00:00", "live": True},
    }


@pytest.mark.parametrize(
    ("next_run_minutes", "outcome", "enabled", "expected"),
    [
        (30, "success", True, []),
        (30, None, True, []),
        (30, "skipped", True, []),
        (30, "cancelled", True, []),
        (-5, "success", True, []),
        (-30, "success", True, ["scrape_guides: overdue"]),
        (None, None, True, ["scrape_guides: not scheduled"]),
        (30, "failed", True, ["scrape_guides: last run failed: boom"]),
        (30, "timeout", True, ["scrape_guides: last run timeout"]),
        (None, "failed", False, []),
    ],
)
def test_health_problems(
    next_run_minutes: int | None, outcome: str | None, enabled: bool, expected: list[str]
) -> None:
    """Overdue beyond the margin, unscheduled and failed jobs are problems; disabled ones never."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    due = (
        None
        if next_run_minutes is None
        else (now + timedelta(minutes=next_run_minutes)).isoformat()
    )
    problems = health_problems(report(due, outcome, enabled), 15, now)
    assert [p[: len(e)] for p, e in zip(problems, expected, strict=True)] == expected


@pytest.mark.parametrize("lease", [None, {"holder": "h", "expires_at": "x", "live": False}])
def test_no_live_lease_holder_is_the_one_problem(lease: dict[str, object] | None) -> None:
    """With nobody holding the lease, the check says so in one line, whatever the jobs say."""
    unhealthy = {**report(None, "failed"), "lease": lease}
    assert health_problems(unhealthy, 15) == [
        "no scheduler is running: no live process holds the scheduler lease"
    ]


async def test_status_check_exit_codes(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """`status --check`: exit 2 without a job store, 0 while a leader runs, 1 after a failed run."""
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 60})
    code, _, stderr = await run_cli("status", "--check", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "no job store there" in stderr

    async with WorkerRuntime(load_config(config)) as runtime:
        assert runtime.is_leader
        code, stdout, _ = await run_cli("status", "--check", "--config", str(config), cwd=tmp_path)
        assert (code, stdout.strip()) == (0, "ok: 1 enabled job(s) healthy")

        with sqlite3.connect(tmp_path / "jobs.sqlite") as connection:
            connection.execute(
                "INSERT INTO job_runs (run_id, job_id, trigger, started_at, finished_at, outcome,"
                " error, attempt, worker) VALUES ('r', 'cleanup_logs', 'manual',"
                " 1767225600, 1767225601, 'failed', 'disk full',"
                " 0, 'w')"
            )
        code, stdout, _ = await run_cli(
            "status", "--check", "--json", "--config", str(config), cwd=tmp_path
        )
    assert code == 1
    assert '"healthy": false' in stdout
    assert "cleanup_logs: last run failed: disk full" in stdout


@pytest.mark.slow
async def test_run_scheduler_serves_metrics(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """A real run-scheduler process with metrics.port set answers Prometheus scrapes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 60})
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[metrics]\nport = {port}\n")
    worker = await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=tmp_path)
    try:
        await worker.wait_for("serving metrics")
        await worker.wait_for("scheduler started")
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert await worker.stop() == 0
    finally:
        await worker.kill()
    values = samples(response.text)
    assert values[("d3is_scheduler_lease_held", ())] == 1
    assert (("d3is_job_next_run_timestamp_seconds", (("job", "cleanup_logs"),))) in values


@asynccontextmanager
async def metrics_host(
    config: Path, env: dict[str, str], job: str | None = None
) -> AsyncIterator[tuple[str, bool]]:
    """A real process serving its runtime's `metrics.registry` (tests/workers/metrics_host.py);
    yields its metrics URL and whether it leads."""
    script = Path(__file__).with_name("metrics_host.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(config), *([job] if job else []),
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        with anyio.fail_after(60):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("serving "), f"the host process ended: {line!r}"
        _, url, leader = line.split()
        yield url, leader == "leader=True"
    finally:
        process.stdin.close()
        try:
            with anyio.fail_after(30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.slow
async def test_multiprocess_mode_any_process_reports_the_leaders_series(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """Two processes started with one PROMETHEUS_MULTIPROC_DIR: a scrape of either, the standby
    included, reports the leader's run, one lease holder and the stored next run times."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    config = cli_config(tmp_path, fake_maxroll, cleanup_logs={"interval_minutes": 60})
    env = child_env({"PROMETHEUS_MULTIPROC_DIR": str(shared)})
    async with (
        metrics_host(config, env, "cleanup_logs") as (leader_url, leading),
        metrics_host(config, env) as (standby_url, standing),
        httpx.AsyncClient() as client,
    ):
        answers = [(await client.get(url)).text for url in (standby_url, leader_url)]
    assert (leading, standing) == (True, False)
    run = (
        "d3is_job_runs_total",
        (("job", "cleanup_logs"), ("outcome", "success"), ("trigger", "manual")),
    )
    next_run = ("d3is_job_next_run_timestamp_seconds", (("job", "cleanup_logs"),))
    standby, leader = (samples(text) for text in answers)
    for values in (standby, leader):
        assert values[run] == 1
        assert values[("d3is_scheduler_lease_held", ())] == 1
        assert values[("d3is_job_run_duration_seconds_count", (("job", "cleanup_logs"),))] == 1
    assert standby[next_run] == leader[next_run]


def test_a_multiprocess_folder_that_cannot_work_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROMETHEUS_MULTIPROC_DIR naming no folder, or set after prometheus_client was imported
    (its metrics would stay out of the shared files), fails with one line naming it."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^PROMETHEUS_MULTIPROC_DIR = .*missing.*not a folder"):
        WorkerMetrics()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="set after prometheus_client was imported"):
        WorkerMetrics()


async def test_a_failing_loop_lag_probe_logs_an_error_and_keeps_probing(
    metrics_config: AppConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe is supervised: an error is logged and the next probe still records."""
    async with WorkerRuntime(metrics_config, run_scheduler=False) as runtime:
        lag = runtime.metrics.loop_lag
        observed: asyncio.Queue[float] = asyncio.Queue()
        record = lag.observe
        calls = 0

        def flaky(value: float, exemplar: dict[str, str] | None = None) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in the probe")
            record(value)
            observed.put_nowait(value)

        monkeypatch.setattr(lag, "observe", flaky)
        with caplog.at_level(logging.ERROR), anyio.fail_after(10):
            await observed.get()
    assert "loop-lag probe failed" in caplog.text
