"""Sync throughput, request economy, loop lag, CPU split and peak memory of a full sync.

python -m benchmarks.sync [--guides 200] [--latency 0.05] [--concurrency 4] [--cpu-only]

`--cpu-only` runs only the zero-latency sync (CPU per guide and where it goes), for A/B runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import d3_item_salvager.maxroll.gateway as gateway_module
from benchmarks._common import StolenCpu, config_for, percentile, realistic_site_options
from benchmarks._server import fake_maxroll_process
from d3_item_salvager.container import resolve
from d3_item_salvager.data.sqlite_writer import SqliteGuideWriter
from d3_item_salvager.services.build_guides import BuildGuideService, SyncSummary
from d3_item_salvager.workers.runtime import WorkerRuntime


async def sync_once(config: Any, force: bool = False) -> tuple[SyncSummary, float]:
    """One sync through the embedded runtime, as a host app would run it."""
    async with WorkerRuntime(config, run_scheduler=False, freeze_gc=True) as runtime:
        service: BuildGuideService = await resolve(runtime.container.build_guide_service)
        started = time.perf_counter()
        summary = await service.prepare_database(force)
        return summary, time.perf_counter() - started


def cpu_by_thread() -> dict[int, tuple[str, float, float]]:
    """User and system CPU seconds of each live thread of this process, by native id (Linux).

    Threads of one kind share a name ("AnyIO worker thread", "index-writer_0" and so on);
    worker threads that ended before the call are missing (so the split may not sum to the total).
    """
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        result[int(tid)] = (name, int(fields[11]) / ticks, int(fields[12]) / ticks)
    return result


def thread_split(
    before: dict[int, tuple[str, float, float]], after: dict[int, tuple[str, float, float]]
) -> str:
    """CPU per kind of thread between two `cpu_by_thread` readings, largest first."""
    kinds: dict[str, list[float]] = {}
    for tid, (name, user, system) in after.items():
        _name, user_before, system_before = before.get(tid, (name, 0.0, 0.0))
        # "Thread-1 (_connection_worker_thread)" (aiosqlite) is named after its target.
        target = re.search(r"\((\w+)\)$", name)
        kind = target.group(1) if target else re.sub(r"[_ ]?\d+$", "", name)
        totals = kinds.setdefault(kind, [0.0, 0.0, 0.0])
        totals[0] += user - user_before
        totals[1] += system - system_before
        totals[2] += 1
    ordered = sorted(kinds.items(), key=lambda item: -(item[1][0] + item[1][1]))
    return "; ".join(
        f"{kind} x{count:.0f}: user {user:.2f} s, system {system:.2f} s"
        for kind, (user, system, count) in ordered
        if user + system > 0
    )


async def with_lag_probe(work: Callable[[], Any]) -> tuple[Any, list[float]]:
    """Run `work` while a ticker asks for 5 ms sleeps; collect how late each wake-up was."""
    lags: list[float] = []
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - before - 0.005)

    probe = loop.create_task(ticker())
    try:
        result = await work()
    finally:
        probe.cancel()
    return result, lags


async def sync_once_with_threads(
    config: Any,
) -> tuple[SyncSummary, float, float, dict[int, tuple[str, float, float]]]:
    """As sync_once, also the process CPU of the sync alone (not the runtime's start and stop)
    and each thread's CPU read before the runtime (and its threads) stop."""
    async with WorkerRuntime(config, run_scheduler=False, freeze_gc=True) as runtime:
        service: BuildGuideService = await resolve(runtime.container.build_guide_service)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = await service.prepare_database(False)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return summary, wall, cpu, cpu_by_thread()


class Timers:
    """Wall time spent inside wrapped functions (parsers run in threads, so summed wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed

    def wrap_async(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

        return timed


async def main(
    guides: int, latency: float, concurrency: int, cpu_only: bool = False, real_size: bool = False
) -> None:
    options = realistic_site_options(guides, real_size)
    pages = "~420 kB guide pages, ~3.5 kB per profile" if real_size else "~3 kB guide pages"
    print(
        f"site: {guides} guides, 2 Variants planners x 4 profiles each, data.json ~2.1 MB, {pages}"
    )
    if not cpu_only:
        await latency_runs(options, guides, latency, concurrency)
    await zero_latency_run(options, guides, concurrency)


async def latency_runs(
    options: dict[str, Any], guides: int, latency: float, concurrency: int
) -> None:
    """Full, incremental and revalidating syncs at the given latency."""
    print(
        f"fake Maxroll in a child process, {latency * 1e3:.0f} ms per request, concurrency {concurrency}"
    )

    # 1. Full sync at the given latency, with a host ticker on the same loop.
    with fake_maxroll_process(options, latency) as fake, tempfile.TemporaryDirectory() as folder:
        config = config_for(fake.config_values, Path(folder), concurrency)
        # Guide writes are serialised (one writer): their summed wall time bounds the sync.
        writes = Timers()
        original_write = SqliteGuideWriter._write_group
        SqliteGuideWriter._write_group = writes.wrap("write_group", original_write)  # type: ignore[method-assign]
        stolen = StolenCpu()
        try:
            (summary, wall), lags = await with_lag_probe(lambda: sync_once(config))
        finally:
            SqliteGuideWriter._write_group = original_write  # type: ignore[method-assign]
        log = fake.log(reset=True)
        requests = log["requests"]
        limit = requests * latency / concurrency
        print(
            f"full sync: {wall:.2f} s wall, {requests} requests, {summary.bytes_received / 1e6:.1f} MB received; {stolen.describe()}"
        )
        written = writes.seconds.get("write_group", 0.0)
        groups = writes.calls.get("write_group", 0)
        print(
            f"  wall time inside the index writer's transactions (serialised) {written:.2f} s, {written / max(summary.guides_processed, 1) * 1e3:.1f} ms per guide; {groups} group commits"
        )
        if limit:
            print(
                f"  limit = requests x latency / concurrency = {limit:.2f} s; wall / limit = {wall / limit:.3f}"
            )
        print(
            f"  processed {summary.guides_processed}, failed {summary.guides_failed}, builds {summary.builds_created}, usages {summary.usages_created}"
        )
        documents = [p for p in log["paths"] if not p.startswith("/indexes")]
        print(f"  documents fetched twice: {len(documents) - len(set(documents))}")
        print(
            f"  host loop lag (5 ms ticker): p50 {percentile(lags, 0.5) * 1e3:.2f} ms, p99 {percentile(lags, 0.99) * 1e3:.2f} ms, max {max(lags) * 1e3:.2f} ms over {len(lags)} ticks"
        )

        # 2. Incremental sync of the unchanged site, inside cache.revalidate_after_minutes.
        summary, wall = await sync_once(config)
        log = fake.log(reset=True)
        searches = sum(p.startswith("/indexes") for p in log["paths"])
        print(
            f"incremental sync (unchanged, inside the revalidation window): {wall:.2f} s, {log['requests']} requests ({searches} search pages, {log['statuses'].count(304)} answered 304), {summary.bytes_received / 1e3:.0f} kB"
        )

        # 2b. The same unchanged site with revalidate_after_minutes = 0: every page and profile
        # is asked conditionally (the 304 path).
        revalidating = config.model_copy(
            update={"cache": config.cache.model_copy(update={"revalidate_after_minutes": 0.0})}
        )
        summary, wall = await sync_once(revalidating)
        log = fake.log(reset=True)
        searches = sum(p.startswith("/indexes") for p in log["paths"])
        documents = log["requests"] - searches
        limit = log["requests"] * latency / concurrency
        print(
            f"revalidating sync (unchanged, revalidate_after_minutes = 0): {wall:.2f} s, {log['requests']} requests ({searches} search pages + {documents} conditional, {log['statuses'].count(304)} answered 304), {summary.bytes_received / 1e3:.0f} kB; limit {limit:.2f} s, wall / limit {f'{wall / limit:.3f}' if limit else 'n/a'}; builds changed {summary.builds_updated + summary.builds_created + summary.builds_removed}"
        )

        # 3. One guide changed: its page and profiles are asked conditionally.
        fake.touch_guide(0)
        fake.log(reset=True)
        summary, wall = await sync_once(config)
        log = fake.log(reset=True)
        print(
            f"incremental sync (1 guide changed): {log['requests']} requests, {log['statuses'].count(304)} answered 304, {summary.bytes_received / 1e3:.0f} kB"
        )


async def zero_latency_run(options: dict[str, Any], guides: int, concurrency: int) -> None:
    """4. Zero latency: CPU per guide and where it goes."""
    timers = Timers()
    originals: dict[str, Callable[..., Any]] = {
        name: getattr(gateway_module, name)
        for name in (
            "parse_guide_planners",
            "parse_planner_profile",
            "parse_item_catalog",
            "parse_search_page",
        )
    }
    for name, function in originals.items():
        setattr(gateway_module, name, timers.wrap(name, function))
    original_write = SqliteGuideWriter._write_group
    SqliteGuideWriter._write_group = timers.wrap("write_group", original_write)  # type: ignore[method-assign]
    try:
        with fake_maxroll_process(options, 0.0) as fake, tempfile.TemporaryDirectory() as folder:
            config = config_for(fake.config_values, Path(folder), concurrency)
            cpu_before, loop_before = time.process_time(), time.thread_time()
            times_before, threads_before = os.times(), cpu_by_thread()
            summary, wall, sync_cpu, threads_after = await sync_once_with_threads(config)
            cpu = time.process_time() - cpu_before
            # The sync runs on this thread's loop: the rest is worker threads (parsers, cache
            # files, the SQLite writer).
            loop_cpu = time.thread_time() - loop_before
            times_after = os.times()
    finally:
        for name, function in originals.items():
            setattr(gateway_module, name, function)
        SqliteGuideWriter._write_group = original_write  # type: ignore[method-assign]
    parse = sum(v for k, v in timers.seconds.items() if k.startswith("parse"))
    database = timers.seconds.get("write_group", 0.0)
    groups = timers.calls.get("write_group", 0)
    split = ", ".join(
        f"{name.removeprefix('parse_')} {seconds:.2f}"
        for name, seconds in timers.seconds.items()
        if name.startswith("parse")
    )
    processed = max(summary.guides_processed, 1)
    print(
        f"zero-latency sync: {wall:.2f} s wall, {sync_cpu:.2f} s process CPU, {sync_cpu / processed * 1e3:.1f} ms CPU per guide ({summary.guides_processed} guides processed)"
    )
    print(
        f"  with the runtime's start and stop: {cpu:.2f} s process CPU, {cpu / processed * 1e3:.1f} ms per guide (the figures below include them)"
    )
    print(
        f"  CPU on the event-loop thread {loop_cpu:.2f} s ({loop_cpu / cpu:.0%}), in worker threads {cpu - loop_cpu:.2f} s ({(cpu - loop_cpu) / cpu:.0%})"
    )
    user = times_after.user - times_before.user
    system = times_after.system - times_before.system
    print(f"  user {user:.2f} s, system {system:.2f} s; by thread (read before the runtime stops):")
    print(f"    {thread_split(threads_before, threads_after)}")
    # Wall time inside calls, not CPU: writes include queueing for the writer thread, parsers run
    # in threads; the two overlap each other and the network, so they are not shares of anything.
    print(
        f"  wall time inside parsers {parse:.2f} s ({split}); inside the index writer's transactions {database:.2f} s ({groups} group commits)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process (two full syncs of {guides} guides): {peak:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guides", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cpu-only", action="store_true", help="only the zero-latency sync")
    parser.add_argument(
        "--real-size", action="store_true", help="guide pages and profiles as large as real ones"
    )
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.guides,
            arguments.latency,
            arguments.concurrency,
            arguments.cpu_only,
            arguments.real_size,
        )
    )
