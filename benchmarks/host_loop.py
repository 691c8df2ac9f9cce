"""What one full sync costs the host that embeds the runtime: loop lag and memory.

python -m benchmarks.host_loop [--guides 1000] [--latency 0.05] [--concurrency 16] [--tracemalloc]
                               [--runs N] [--real-size]

A host ticker (5 ms sleeps) runs on the loop while a `WorkerRuntime` starts (freeze_gc=True, as the
CLI runs it) and runs one full sync of a fresh fake site; the lag of every tick is reported for
the start-up and for the sync, with the process's peak RSS. Run it once per site size (each in
its own process) to see how memory grows with the number of guides. `--tracemalloc` also
reports what is still allocated when the sync ends, before the runtime closes (slower).
`--runs N` runs the whole measurement N times, each in a fresh process, and prints each run's
combined lag and stolen CPU, then the median and worst p99: one run's p99 on a shared machine
moves by several milliseconds from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks._common import StolenCpu, config_for, percentile, realistic_site_options
from benchmarks._server import fake_maxroll_process
from d3_item_salvager.container import resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.workers.runtime import WorkerRuntime


class Ticker:
    """A host task asking for 5 ms sleeps; records how late each wake-up was, by phase."""

    def __init__(self) -> None:
        self.phase = "idle"
        self.lags: dict[str, list[float]] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            phase, before = self.phase, loop.time()
            await asyncio.sleep(0.005)
            self.lags.setdefault(phase, []).append(loop.time() - before - 0.005)


class GcPauses:
    """How long the cyclic collector ran, per generation and phase (it runs on the loop)."""

    def __init__(self, ticker: Ticker) -> None:
        self._ticker = ticker
        self._started = 0.0
        self.pauses: dict[tuple[str, int], list[float]] = {}

    def __call__(self, stage: str, info: dict[str, int]) -> None:
        if stage == "start":
            self._started = time.perf_counter()
            return
        key = (self._ticker.phase, info["generation"])
        self.pauses.setdefault(key, []).append(time.perf_counter() - self._started)

    def describe(self, phase: str) -> str:
        parts = []
        for generation in (0, 1, 2):
            pauses = self.pauses.get((phase, generation), [])
            if pauses:
                parts.append(
                    f"gen{generation} {len(pauses)}x max {max(pauses) * 1e3:.1f} ms "
                    f"(total {sum(pauses) * 1e3:.0f} ms)"
                )
        return ", ".join(parts) or "none"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe(lags: list[float]) -> str:
    if not lags:
        return "no ticks"
    return (
        f"p50 {percentile(lags, 0.5) * 1e3:.2f} ms, p99 {percentile(lags, 0.99) * 1e3:.2f} ms, "
        f"max {max(lags) * 1e3:.2f} ms over {len(lags)} ticks"
    )


async def main(
    guides: int, latency: float, concurrency: int, trace: bool, real_size: bool = False
) -> None:
    options = realistic_site_options(guides, real_size)
    print(
        f"site: {guides} guides{' (real-size documents)' if real_size else ''}; "
        f"{latency * 1e3:.0f} ms per request; concurrency {concurrency}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with fake_maxroll_process(options, latency) as fake, tempfile.TemporaryDirectory() as folder:
        config = config_for(fake.config_values, Path(folder), concurrency)
        ticker = Ticker()
        probe = asyncio.get_running_loop().create_task(ticker.run())
        pauses = GcPauses(ticker)
        gc.callbacks.append(pauses)
        await asyncio.sleep(0.05)
        rss_before = rss_mb()
        if trace:
            tracemalloc.start(5)
        ticker.phase = "start-up"
        stolen = StolenCpu()
        started = time.perf_counter()
        async with WorkerRuntime(config, run_scheduler=False, freeze_gc=True) as runtime:
            start_seconds = time.perf_counter() - started
            ticker.phase = "sync"
            service: BuildGuideService = await resolve(runtime.container.build_guide_service)
            sync_started, cpu_started = time.perf_counter(), time.process_time()
            summary = await service.prepare_database()
            wall, cpu = time.perf_counter() - sync_started, time.process_time() - cpu_started
            ticker.phase = "close"
            stolen_share = stolen.describe()
            snapshot = tracemalloc.take_snapshot() if trace else None
        probe.cancel()
        gc.callbacks.remove(pauses)
    print(
        f"start-up: {start_seconds * 1e3:.0f} ms; host loop lag {describe(ticker.lags['start-up'])}"
    )
    print(f"  collector pauses: {pauses.describe('start-up')}")
    print(
        f"full sync: {wall:.2f} s wall, {cpu:.2f} s process CPU, {summary.guides_processed} "
        f"processed, {summary.guides_failed} failed, listing whole: {summary.guide_list_complete}"
    )
    print(f"  host loop lag {describe(ticker.lags['sync'])}")
    print(f"  collector pauses: {pauses.describe('sync')}")
    both = ticker.lags["start-up"] + ticker.lags["sync"]
    print(f"start-up and sync together: host loop lag {describe(both)}")
    print(f"  {stolen_share} (start-up and sync; lag figures mean little past a few %)")
    print(f"peak RSS: {rss_before:.0f} MB before the runtime, {rss_mb():.0f} MB at the end")
    if snapshot is not None:
        stats = snapshot.statistics("filename")
        total = sum(stat.size for stat in stats)
        print(f"traced memory still allocated when the sync ended: {total / 1e6:.1f} MB; top 8:")
        for stat in stats[:8]:
            print(f"  {stat.size / 1e6:6.1f} MB  {stat.count:8d} blocks  {stat.traceback}")


def repeated(runs: int, arguments: list[str]) -> None:
    """Run the benchmark `runs` times, each in a fresh process; summarise the combined p99."""
    p99s = []
    for run in range(1, runs + 1):
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.host_loop", *arguments],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        together = next(line for line in output.splitlines() if line.startswith("start-up and"))
        stolen = next(line for line in output.splitlines() if "stolen" in line)
        match = re.search(r"p99 ([0-9.]+) ms", together)
        assert match is not None, together
        p99s.append(float(match.group(1)))
        print(f"run {run}: {together.split(': ', 1)[1]}; {stolen.strip().split(' (')[0]}")
    print(
        f"p99 over {runs} runs: median {statistics.median(p99s):.2f} ms, "
        f"worst {max(p99s):.2f} ms, best {min(p99s):.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guides", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--real-size", action="store_true", help="guide pages and profiles as large as real ones"
    )
    arguments = parser.parse_args()
    if arguments.runs > 1:
        one_run = [
            f"--guides={arguments.guides}",
            f"--latency={arguments.latency}",
            f"--concurrency={arguments.concurrency}",
            *(["--real-size"] if arguments.real_size else []),
        ]
        repeated(arguments.runs, one_run)
        sys.exit()
    asyncio.run(
        main(
            arguments.guides,
            arguments.latency,
            arguments.concurrency,
            arguments.tracemalloc,
            arguments.real_size,
        )
    )
