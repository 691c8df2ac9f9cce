"""Scheduler figures: dispatch lateness at 1 s intervals, idle CPU, RSS drift over 1,000 runs.

python -m benchmarks.scheduler [--runs 1000] [--lateness-runs 15] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from tests.conftest import make_config, with_interval_seconds

from benchmarks._common import percentile
from d3_item_salvager.workers.runs import RunFinished
from d3_item_salvager.workers.runtime import WorkerRuntime


def only_cleanup(folder: Path, interval_minutes: float) -> Any:
    config = make_config(
        folder,
        scheduler={
            "jobs": {"scrape_guides": {"enabled": False}, "refresh_cache": {"enabled": False}}
        },
    )
    # Below the 1-second minimum an operator may set: the drift benchmark needs many runs.
    return with_interval_seconds(config, "cleanup_logs", interval_minutes * 60)


async def lateness(runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = only_cleanup(Path(folder), 1 / 60)
        async with WorkerRuntime(config) as runtime:
            await runtime.wait_for_runs("cleanup_logs", runs)
        with sqlite3.connect(config.scheduler.job_store_path) as connection:
            rows = connection.execute(
                "SELECT scheduled_for, started_at FROM job_runs WHERE outcome = 'success'"
            ).fetchall()
    late = [started - due for due, started in rows]
    print(
        f"dispatch lateness, {len(late)} runs at 1 s intervals: "
        f"p50 {percentile(late, 0.5) * 1e3:.1f} ms, max {max(late) * 1e3:.1f} ms"
    )


async def idle_cpu(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = only_cleanup(Path(folder), 1440)
        async with WorkerRuntime(config):
            process = psutil.Process()
            before_cpu = process.cpu_times()
            started = time.perf_counter()
            await asyncio.sleep(seconds)  # the figure is what an idle scheduler costs meanwhile
            after_cpu = process.cpu_times()
            wall = time.perf_counter() - started
    used = (after_cpu.user + after_cpu.system) - (before_cpu.user + before_cpu.system)
    print(
        f"idle scheduler: {used * 1e3:.0f} ms CPU over {wall:.1f} s ({used / wall:.3%} of a core)"
    )


def resources() -> tuple[float, int, int]:
    gc.collect()
    process = psutil.Process()
    return process.memory_info().rss / 2**20, process.num_fds(), threading.active_count()


async def drift(runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = only_cleanup(Path(folder), 0.0002)  # every 12 ms
        async with WorkerRuntime(config) as runtime:
            outcomes: list[str] = []
            runtime.runner.events.subscribe(
                lambda event: (
                    outcomes.append(str(event.result.outcome))
                    if isinstance(event, RunFinished)
                    else None
                )
            )
            marks = []
            for count in (300, runs // 2, runs):
                await runtime.wait_for_runs("cleanup_logs", count)
                marks.append((count, *resources()))
    for count, rss, fds, threads in marks:
        print(f"  after {count:>5} runs: RSS {rss:.1f} MB, open fds {fds}, threads {threads}")
    first, last = marks[0], marks[-1]
    print(
        f"RSS drift {first[0]}->{last[0]} runs: {last[1] - first[1]:+.1f} MB; "
        f"outcomes: {outcomes.count('success')} success, {outcomes.count('skipped')} skipped"
    )


async def main(runs: int, lateness_runs: int, idle_seconds: float) -> None:
    await lateness(lateness_runs)
    await idle_cpu(idle_seconds)
    await drift(runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--lateness-runs", type=int, default=15)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.lateness_runs, arguments.idle_seconds))
