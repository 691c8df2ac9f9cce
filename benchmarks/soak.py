"""Soak: thousands of scheduled runs in one process, and the memory they leave behind.

python -m benchmarks.soak [--runs 3000] [--interval 1] [--warm-up 300] [--jobs builtin|cheap|all]
                          [--tracemalloc] [--guides 5] [--default-malloc]

Runs a `WorkerRuntime` as `run-scheduler` does (its logging to a file, `freeze_gc=True`, glibc's
malloc arenas capped unless `--default-malloc`, a real SQLite job store and index) with every
job at `--interval` seconds, against the fake Maxroll in a child process (so the fake's own request log is not counted). `builtin`: the three built-in jobs;
`cheap`: a host-app job (`extra_jobs`) that does nothing, with the built-in ones disabled; `all`:
both. RSS is sampled every `--runs / 20` runs; the figure is the least-squares slope of RSS
over the runs after `--warm-up`, in kB per run, and the largest step between two samples.
With `--tracemalloc`, the allocation sites that grew most between the end of the warm-up and the
end are printed (tracemalloc's own overhead then inflates RSS: read the slope without it).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import itertools
import os
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from tests.conftest import make_config, with_interval_seconds

from benchmarks._common import StolenCpu
from benchmarks._server import fake_maxroll_process
from d3_item_salvager.config import AppConfig
from d3_item_salvager.logging_setup import configure_app_logging
from d3_item_salvager.workers import JobContext, JobSpec
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.runtime import WorkerRuntime
from d3_item_salvager.workers.startup import MALLOC_ARENAS, limit_malloc_arenas

CHEAP_JOB = "soak_noop"


async def noop(ctx: JobContext) -> Mapping[str, Any]:
    """A job with nothing to do: what is left per run is the scheduler's own bookkeeping."""
    return {"attempt": ctx.attempt}


def soak_config(folder: Path, values: dict[str, Any], jobs: str, interval: float) -> AppConfig:
    builtin = jobs in ("builtin", "all")
    sections: dict[str, Any] = {
        job_id: {"enabled": builtin} for job_id in BUILTIN_JOBS.ids if not builtin
    }
    config = make_config(
        folder,
        maxroll=values | {"search_max_pages": 1000},
        scheduler={"jobs": sections, "run_new_jobs_at_once": True},
    )
    job_ids = (BUILTIN_JOBS.ids if builtin else []) + ([CHEAP_JOB] if jobs != "builtin" else [])
    for job_id in job_ids:
        config = with_interval_seconds(config, job_id, interval)
    return config


def _sqlite_memory() -> Any:
    """SQLite's own allocator count (`sqlite3_memory_used`), when the library can be loaded."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    except OSError:
        return None
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library.sqlite3_memory_used


sqlite_memory = _sqlite_memory()


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _malloc_info() -> Any:
    """glibc's `mallinfo2` (bytes in use and free in its heaps), when available (glibc 2.33+)."""
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    return function


malloc_info = _malloc_info()


def heap_figures() -> str:
    """SQLite's memory, and glibc's heap bytes in use and held free (what fragmentation keeps)."""
    sqlite = sqlite_memory() / 2**20 if sqlite_memory is not None else float("nan")
    figures = f"SQLite {sqlite:5.1f} MB"
    if malloc_info is not None:
        info = malloc_info()
        used, free = info.uordblks + info.hblkhd, info.fordblks
        figures += f"  malloc used {used / 2**20:6.1f} MB, free {free / 2**20:5.1f} MB"
    return figures


def rss_kb() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 1024


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


async def soak(
    config: AppConfig, runs: int, warm_up: int, jobs: str, trace: bool
) -> tuple[list[tuple[int, float]], Any, Any, dict[str, int]]:
    extra = [JobSpec(CHEAP_JOB, noop, 1, 1)] if jobs != "builtin" else []
    samples: list[tuple[int, float]] = []
    step = max(runs // 20, 1)
    before = after = None
    started = time.perf_counter()
    async with WorkerRuntime(config, freeze_gc=True, extra_jobs=extra) as runtime:
        tracker = runtime.tracker

        def finished() -> int:
            return sum(tracker.counts.values())

        for target in range(step, runs + 1, step):
            await tracker.wait_for(lambda _runs, at=target: finished() >= at)  # type: ignore[misc]
            if trace and target >= warm_up and before is None:
                tracemalloc.start(12)
                before = tracemalloc.take_snapshot()
            samples.append((finished(), rss_kb()))
            traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else 0
            print(
                f"  {finished():>5} runs  RSS {samples[-1][1] / 1024:7.1f} MB  "
                f"{heap_figures()}  traced {traced:5.2f} MB  "
                f"threads {threading.active_count():>2}  "
                f"{time.perf_counter() - started:6.0f} s",
                flush=True,
            )
        if trace:
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
        outcomes: dict[str, int] = {}
        for result in tracker.runs():
            outcomes[str(result.outcome)] = outcomes.get(str(result.outcome), 0) + 1
        counts = dict(tracker.counts)
    return samples, before, after, counts | {f"last {len(tracker.recent)}": 0} | outcomes


def report_traces(before: Any, after: Any, runs: int) -> None:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    print(f"top growing allocation sites over the last {runs} runs (size, count):")
    for stat in after.compare_to(before, "lineno")[:15]:
        print(f"  {stat.size_diff / 1024:+9.1f} kB {stat.count_diff:+7d}  {stat.traceback[0]}")
    print("deepest stacks of the three largest:")
    for stat in after.compare_to(before, "traceback")[:3]:
        print(f"  {stat.size_diff / 1024:+9.1f} kB {stat.count_diff:+7d}")
        for line in stat.traceback.format(limit=8):
            print(f"      {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between runs of a job")
    parser.add_argument("--warm-up", type=int, default=300)
    parser.add_argument("--jobs", choices=("builtin", "cheap", "all"), default="builtin")
    parser.add_argument("--guides", type=int, default=5)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc arenas uncapped (run-scheduler caps them: limit_malloc_arenas)",
    )
    arguments = parser.parse_args()
    capped = not arguments.default_malloc and limit_malloc_arenas()
    print(f"malloc arenas capped at {MALLOC_ARENAS}: {capped}")
    site = {"guide_count": arguments.guides, "data_padding_bytes": 2_000_000}
    stolen = StolenCpu()
    with (
        tempfile.TemporaryDirectory() as folder,
        fake_maxroll_process(site, 0.0) as fake,
        open(os.devnull, "w") as console,
    ):
        config = soak_config(Path(folder), fake.config_values, arguments.jobs, arguments.interval)
        configure_app_logging(config, console=console, capture_apscheduler=True)
        samples, before, after, outcomes = asyncio.run(
            soak(config, arguments.runs, arguments.warm_up, arguments.jobs, arguments.tracemalloc)
        )
    measured = [(count, rss) for count, rss in samples if count >= arguments.warm_up]
    steps = [(b[0], b[1] - a[1]) for a, b in itertools.pairwise(samples)]
    largest = max(steps, key=lambda item: abs(item[1]))
    print(f"runs by job and outcome (outcomes of the most recent only): {outcomes}")
    print(
        f"RSS {samples[0][1] / 1024:.1f} MB after {samples[0][0]} runs, "
        f"{samples[-1][1] / 1024:.1f} MB after {samples[-1][0]}; largest step "
        f"{largest[1] / 1024:+.1f} MB (at {largest[0]} runs)"
    )
    print(
        f"RSS slope after {arguments.warm_up} runs of warm-up: "
        f"{slope(measured):.2f} kB per run over {measured[-1][0] - measured[0][0]} runs"
    )
    print(stolen.describe())
    if before is not None and after is not None:
        report_traces(before, after, samples[-1][0] - arguments.warm_up)


if __name__ == "__main__":
    main()
