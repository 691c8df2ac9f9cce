"""The runtime's task group: services, durable writes, and a bounded close."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import anyio
import pytest

from d3_item_salvager.workers.background import BackgroundTasks
from d3_item_salvager.workers.container import build_worker_container
from tests.conftest import make_config


async def test_a_failing_service_is_logged_and_leaves_everything_else_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service that crashes is logged with its name; the caller's own code and the other
    services go on (no sibling or host cancelled, as a TaskGroup would)."""
    group = BackgroundTasks()
    other_running = asyncio.Event()

    async def broken() -> None:
        raise KeyError("a bug")

    async def steady() -> None:
        other_running.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="d3_item_salvager"):
        crashed = group.start_service(broken(), "d3is-broken")
        steady_task = group.start_service(steady(), "d3is-steady")
        with anyio.fail_after(5):
            await asyncio.wait({crashed})
            await other_running.wait()
    assert not steady_task.done()
    assert "background service ended with an error" in caplog.text
    await group.close()
    assert steady_task.cancelled()


async def test_a_durable_write_outlives_its_cancelled_caller_and_close_waits_for_it() -> None:
    """Cancelling whoever awaits a durable write does not stop the write; closing the group
    waits for it to end."""
    group = BackgroundTasks()
    started, release = asyncio.Event(), asyncio.Event()
    written: list[str] = []

    async def write() -> str:
        started.set()
        await release.wait()
        written.append("row")
        return "row"

    caller = asyncio.get_running_loop().create_task(group.durable(write()))
    with anyio.fail_after(5):
        await started.wait()  # the caller is awaiting the write
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert group.pending_writes == 1
    release.set()
    with anyio.fail_after(5):
        await group.close()
    assert written == ["row"]
    assert group.pending_writes == 0


async def test_a_durable_writes_error_reaches_its_caller() -> None:
    """The write's own failure is raised to the caller that awaits it."""
    group = BackgroundTasks()

    async def failing() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await group.durable(failing())
    await group.close()


async def test_a_write_that_never_ends_is_given_up_once(caplog: pytest.LogCaptureFixture) -> None:
    """Settling is bounded: a write still running after the limit is cancelled and logged, and
    a later close does not wait for it again (a stop waits at most one limit, not one per
    step)."""
    group = BackgroundTasks()
    stuck = group.write_soon(asyncio.Event().wait())
    with caplog.at_level(logging.WARNING, logger="d3_item_salvager"):
        assert await group.settle(limit_seconds=0.05) is False
        with anyio.fail_after(5):
            await group.close(limit_seconds=3600)
    with anyio.fail_after(5):
        await asyncio.wait({stuck})
    assert stuck.cancelled()
    assert caplog.text.count("still running after") == 1


def test_a_runtime_outwaits_a_statement_waiting_for_a_lock(tmp_path: Path) -> None:
    """A runtime's task group waits for writes longer than the busy timeout, after which every
    job-store statement waiting for a lock gives up: a write given up before its statement would
    leave its connection open once the engine is disposed."""
    config = make_config(tmp_path, database={"busy_timeout_seconds": 42.0})
    container = build_worker_container(config)
    assert container.background().settle_seconds > 42.0
