"""1,000 scheduled runs of a cheap job leave memory, open files and threads flat.

Memory is measured with tracemalloc over the last 700 runs: Python objects that stay alive per run
(a list of finished runs, a queue nobody drains) would show as growth; 1 kB per run is 700 kB.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import platform
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from d3_item_salvager.logging_setup import LOGGER_NAME
from d3_item_salvager.workers.runs import RunEvent, RunFinished
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.startup import MALLOC_ARENAS
from tests.conftest import make_config, only_jobs, with_interval_seconds
from tests.processes import child_env

RUNS = 1000
WARM_UP = 300  # connection pools and the worker-thread pool fill up first
SETTLE = 100
MIN_SUCCESSES = 100  # real runs (not skipped ones) the measured window must hold


def resources() -> tuple[int, int, int]:
    gc.collect()
    process = psutil.Process()
    return process.memory_info().rss, process.num_fds(), threading.active_count()


@pytest.mark.slow
async def test_thousand_scheduled_runs_leave_resources_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After warm-up, 700 more runs leave open files, threads and RSS within small fixed bounds.

    Connection and thread pools may still open a few more under a busy machine; a leak of even
    one file or thread per run would exceed the bounds hundreds of times over.
    """
    config = make_config(
        tmp_path,
        scheduler={"jobs": only_jobs(cleanup_logs={})},
    )
    config = with_interval_seconds(config, "cleanup_logs", 0.012)
    # pytest keeps every captured log record in memory: stop the 3,000 log lines from reaching
    # it, so what is measured is what the workers keep.
    for name in (LOGGER_NAME, "apscheduler"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", False)
    outcomes: dict[str, int] = {}

    def count(event: RunEvent) -> None:
        if isinstance(event, RunFinished):
            outcome = str(event.result.outcome)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async with WorkerRuntime(config) as runtime:
        runtime.runner.events.subscribe(count)
        with anyio.fail_after(300):
            await runtime.wait_for_runs("cleanup_logs", WARM_UP)
            rss_before, fds_before, threads_before = resources()
            tracemalloc.start()
            try:
                # What tracemalloc sees only counts after it started: let it settle first.
                await runtime.wait_for_runs("cleanup_logs", WARM_UP + SETTLE)
                traced_before = traced()
                await runtime.wait_for_runs("cleanup_logs", RUNS)
                # tracemalloc slows each run down, so on a busy machine many 12 ms ticks meet a
                # run still going (skipped): run on until enough real runs were measured.
                total = RUNS
                while outcomes.get("success", 0) < MIN_SUCCESSES:
                    total += 50
                    await runtime.wait_for_runs("cleanup_logs", total)
                traced_after = traced()
            finally:
                tracemalloc.stop()
            rss_after, fds_after, threads_after = resources()
            finished = dict(outcomes)  # before leaving: the stop may cancel a run in flight
    assert set(finished) <= {"success", "skipped"}
    assert finished.get("success", 0) >= MIN_SUCCESSES  # skipped ones write a row and an event too
    # Pools may still grow after warm-up: up to five pooled job-store connections (three files
    # each: db, -wal, -shm) and anyio's worker threads (up to scheduler.max_workers, pruned when
    # idle). A leak of one file or thread per run would pass these bounds 700 runs over.
    pool = config.scheduler.max_workers
    assert fds_after <= fds_before + 3 * pool + 3
    assert threads_after <= threads_before + pool + 1
    assert rss_after - rss_before < 10 * 1024 * 1024
    # Python memory kept alive per run: a quarter of a kB per run at most (a pooled connection
    # may still open); 1 kB kept per run would be four times the bound.
    growth = traced_after - traced_before
    assert growth < (RUNS - WARM_UP - SETTLE) * 1024 // 4, f"{growth} bytes kept"


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


# The fake Maxroll in a process of its own: it builds data.json anew for every request (~6 MB of
# allocations), which tracemalloc would count against the runs if it served from this process.
FAKE_PROCESS = """
import json, sys
from d3_item_salvager.testing.fake_maxroll import serve
from d3_item_salvager.testing.fake_site import build_site
with serve(build_site(data_padding_bytes=int(sys.argv[1]))) as fake:
    print(json.dumps(fake.config_values()), flush=True)
    sys.stdin.read()
    print(json.dumps([[r.path, r.status] for r in fake.requests]), flush=True)
"""


@asynccontextmanager
async def fake_maxroll_process(padding: int) -> AsyncIterator[tuple[dict[str, Any], list[Any]]]:
    """Yields the fake's config values, and a list that holds its requests once it stopped."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAKE_PROCESS, str(padding), env=child_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    requests: list[Any] = []
    try:
        with anyio.fail_after(60):
            values = json.loads(await process.stdout.readline())
        yield values, requests
        process.stdin.close()
        with anyio.fail_after(60):
            requests.extend(json.loads(await process.stdout.readline()))
    finally:
        if not process.stdin.is_closing():
            process.stdin.close()
        with anyio.fail_after(60):
            await process.wait()


async def test_unchanged_item_data_is_neither_read_back_nor_parsed_again(tmp_path: Path) -> None:
    """While data.json is unchanged, runs of refresh_cache (answered 304) and scrape_guides (cache
    fresh) allocate no copy of it: the catalog parsed once is reused by its cached version.

    Reading the 2 MB back and parsing it again on every run left megabytes in each worker
    thread's allocator: the RSS steps of a soak at 1-second intervals (benchmarks/soak.py).
    """
    padding = 2_000_000
    async with fake_maxroll_process(padding) as (values, requests):
        config = make_config(tmp_path, maxroll=values)
        async with WorkerRuntime(config, run_scheduler=False) as runtime:
            for job in ("refresh_cache", "scrape_guides"):  # downloaded and parsed once
                assert (await runtime.run_job(job)).outcome == "success"
            tracemalloc.start()
            try:
                for _ in range(2):
                    for job in ("refresh_cache", "scrape_guides"):
                        assert (await runtime.run_job(job)).outcome == "success"
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    assert requests.count(["/d3planner/data.json", 304]) == 2  # the refreshes revalidated it
    assert peak < padding // 4, f"{peak} bytes allocated at the peak"


# Eight threads holding memory from malloc at once; then glibc's per-arena statistics (stderr).
ARENAS_PROCESS = """
import ctypes, sys, threading
from d3_item_salvager.workers.startup import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "cap" else "not asked", flush=True)
both = threading.Barrier(8)
def hold():
    blocks = [bytearray(100_000) for _ in range(4)]  # beyond pymalloc: the thread's arena
    both.wait()
threads = [threading.Thread(target=hold) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
def test_run_scheduler_caps_malloc_arenas_unless_the_operator_chose() -> None:
    """limit_malloc_arenas (run-scheduler's) keeps eight allocating threads in two arenas, where
    glibc alone gives them one each; an operator's MALLOC_ARENA_MAX is left to govern."""

    def arenas(mode: str, **env: str) -> tuple[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", ARENAS_PROCESS, mode],
            env=child_env(env), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.strip(), done.stderr.count("Arena ")

    assert arenas("cap") == ("True", MALLOC_ARENAS)
    _, uncapped = arenas("none")
    assert uncapped > MALLOC_ARENAS  # glibc's own behaviour, which the cap changes
    assert arenas("cap", MALLOC_ARENA_MAX="3") == ("False", 3)
