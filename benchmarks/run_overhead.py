"""What the runner's bookkeeping costs per run: a job whose work does nothing, run N times.

python -m benchmarks.run_overhead [--runs 300] [--rounds 3]

Every run takes its job's claim, writes its history row and its outcome, and gives the claim
back; the job itself returns at once, so the figures are the bookkeeping alone, on a SQLite job
store (the default). Prints the median time per run and the job store's commits per run.
Compare two trees in one session (the machine is shared), from this repository's root:
`PYTHONPATH=<other tree>/src python -m benchmarks.run_overhead` runs the other tree's code.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from tests.conftest import make_config

from d3_item_salvager.container import resolve
from d3_item_salvager.workers import JobContext, JobSpec
from d3_item_salvager.workers.runtime import WorkerRuntime


async def nothing(ctx: JobContext) -> dict[str, Any]:
    return {}


NOOP = JobSpec(id="noop", work=nothing, interval_minutes=60, timeout_minutes=1)


async def one_round(runs: int) -> tuple[float, float]:
    """Seconds per run and job-store commits per run, over `runs` sequential manual runs."""
    with tempfile.TemporaryDirectory() as folder:
        config = make_config(Path(folder))
        async with WorkerRuntime(config, run_scheduler=False, extra_jobs=[NOOP]) as runtime:
            engine = await resolve(runtime.container.job_store_engine)
            commits = 0

            def counted(_connection: Any) -> None:
                nonlocal commits
                commits += 1

            event.listen(engine, "commit", counted)
            await runtime.run_job("noop")  # warm: connections opened, code paths taken
            commits = 0
            started = time.perf_counter()
            for _ in range(runs):
                result = await runtime.run_job("noop")
                assert result.succeeded, result.error
            elapsed = time.perf_counter() - started
            event.remove(engine, "commit", counted)
    return elapsed / runs, commits / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = [asyncio.run(one_round(args.runs)) for _ in range(args.rounds)]
    per_run = statistics.median(seconds for seconds, _ in figures)
    commits = statistics.median(count for _, count in figures)
    print(f"runs per round: {args.runs}, rounds: {args.rounds}")
    print(f"time per run (median of rounds): {per_run * 1000:.2f} ms")
    print(f"job-store commits per run: {commits:.1f}")


if __name__ == "__main__":
    main()
