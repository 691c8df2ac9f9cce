"""1,000 scheduled runs of a cheap job leave memory, open files and threads flat."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import anyio
import psutil
import pytest

from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config, with_interval_seconds

RUNS = 1000
WARM_UP = 300  # connection pools and the worker-thread pool fill up first


def resources() -> tuple[int, int, int]:
    gc.collect()
    process = psutil.Process()
    return process.memory_info().rss, process.num_fds(), threading.active_count()


@pytest.mark.slow
async def test_thousand_scheduled_runs_leave_resources_flat(tmp_path: Path) -> None:
    """After warm-up, 700 more runs leave open files, threads and RSS within small fixed bounds.

    Connection and thread pools may still open a few more under a busy machine; a leak of even
    one file or thread per run would exceed the bounds hundreds of times over.
    """
    config = make_config(
        tmp_path,
        scheduler={
            "jobs": {"scrape_guides": {"enabled": False}, "refresh_cache": {"enabled": False}}
        },
    )
    config = with_interval_seconds(config, "cleanup_logs", 0.012)
    async with WorkerRuntime(config) as runtime:
        with anyio.fail_after(240):
            await runtime.runner.wait_for_runs("cleanup_logs", WARM_UP)
            rss_before, fds_before, threads_before = resources()
            runs = await runtime.runner.wait_for_runs("cleanup_logs", RUNS)
            rss_after, fds_after, threads_after = resources()
    outcomes = {run.outcome for run in runs}
    assert outcomes <= {"success", "skipped"}
    # Under load a run can outlast the 12 ms interval and the next one is skipped; enough still run.
    assert sum(run.outcome == "success" for run in runs) >= RUNS // 10
    assert fds_after <= fds_before + 6  # two more pooled SQLite connections (db, -wal, -shm)
    assert threads_after <= threads_before + 2  # anyio worker threads come and go
    assert rss_after - rss_before < 10 * 1024 * 1024
