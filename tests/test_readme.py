"""The README stays true: its quick start matches .ci/run, its JSON examples match the output."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from d3_item_salvager.testing import FakeMaxroll
from d3_item_salvager.workers.runs import Outcome, RunResult, Trigger
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.status import collect_status
from tests.conftest import make_config, only_jobs
from tests.workers.job_store_sql import job_runs

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_has_exactly_two_commands() -> None:
    """One command runs the scheduler, the other the tests."""
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "d3_item_salvager.workers run-scheduler" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's last line is the README's test command, byte for byte."""
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci_lines[-1] == _quick_start_commands()[1]


def test_run_json_example_has_the_keys_run_json_prints() -> None:
    """The README's `run --json` example names exactly the keys of a recorded run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("`run JOB --json` prints one object", 1)[1]
    example = re.search(r"```json\n(.+?)\n```", section, re.DOTALL)
    assert example is not None
    printed = RunResult(
        "r", "scrape_guides", Trigger.MANUAL, Outcome.SUCCESS, None, {}, 1.0
    ).to_dict()
    assert set(json.loads(example.group(1))) == set(printed)


def _json_example_after(marker: str) -> dict[str, Any]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```json\n(.+?)\n```", readme.split(marker, 1)[1], re.DOTALL)
    assert example is not None
    parsed: dict[str, Any] = json.loads(example.group(1))
    return parsed


async def test_status_json_example_has_the_keys_status_prints(tmp_path: Path) -> None:
    """The README's `status --json` example names exactly the keys of a real report."""
    config = make_config(tmp_path)
    async with WorkerRuntime(config):  # creates the job store and takes the lease
        report = await anyio.to_thread.run_sync(collect_status, config)
    example = _json_example_after("`status --json` prints one object")
    assert set(example) == set(report)
    assert set(example["jobs"][0]) == set(report["jobs"][0])
    assert report["lease"] is not None
    assert set(example["lease"]) == set(report["lease"])


def _python_block_after(marker: str) -> str:
    """The first ```python block after `marker` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text[text.index(marker) :], re.DOTALL)
    assert block is not None
    return block.group(1)


async def test_the_host_app_job_recipe_runs_as_written(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """The "Adding a job" host-app example, executed as the README shows it (its top-level
    `async with` inside a coroutine), defines a job its runtime schedules and runs."""
    config = fake_maxroll.config(tmp_path)
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        assert (await runtime.run_job("scrape_guides")).succeeded  # something to count
    source = _python_block_after("**In a host app**")
    module_part, _, body = source.partition("async with ")
    namespace: dict[str, Any] = {"config": config}
    # The README's own code is what is under test, so it runs as written.
    exec(module_part, namespace)  # noqa: S102
    exec(  # noqa: S102
        "async def example():\n    async with "
        + textwrap.indent(body, "    ").lstrip()
        + "    return result, runtime.jobs.ids\n",
        namespace,
    )
    result, ids = await namespace["example"]()
    assert result.succeeded
    assert result.summary == {"guides": len(fake_maxroll.site.guides)}
    assert ids[-1] == "count_guides"


async def test_the_scheduler_api_sequence_runs_as_written(
    tmp_path: Path, fake_maxroll: FakeMaxroll, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's scheduler-API block, run as written: no listener errors, scheduled runs
    carry their due time, and leaving the block waits for the run in flight (it ends `success`,
    not `cancelled`)."""
    config = fake_maxroll.config(
        tmp_path,
        scheduler={"shutdown_timeout_seconds": 60, "jobs": only_jobs(scrape_guides={})},
    )
    fake_maxroll.latency = 0.05  # the sync is still going when the block is left
    started = asyncio.Event()

    class RunStarted(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "run started":
                started.set()

    async def inside() -> None:
        with anyio.fail_after(30):
            await started.wait()

    source = _python_block_after("### The scheduler API")
    module_part, _, body = source.partition("async with ")
    assert "    ...\n" in body
    body = body.replace("    ...\n", "    await inside()\n")
    namespace: dict[str, Any] = {"config": config, "inside": inside}
    exec(module_part, namespace)  # noqa: S102 - the README's own code is under test
    exec(  # noqa: S102
        "async def example():\n    async with " + textwrap.indent(body, "    ").lstrip(),
        namespace,
    )
    handler = RunStarted()
    caplog.set_level(logging.INFO, logger="d3_item_salvager")
    logging.getLogger("d3_item_salvager").addHandler(handler)
    try:
        await namespace["example"]()
    finally:
        logging.getLogger("d3_item_salvager").removeHandler(handler)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    [run] = job_runs(config)
    assert (run["job_id"], run["trigger"], run["outcome"]) == (
        "scrape_guides",
        "scheduled",
        "success",
    )
    assert run["scheduled_for"] is not None
