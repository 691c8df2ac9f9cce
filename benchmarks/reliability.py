"""Reliability figures: syncs under injected faults, and lease takeover after a SIGKILL.

python -m benchmarks.reliability [--guides 50] [--rate 0.3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path

from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import WorkerProcess, write_config

from d3_item_salvager.container import resolve
from d3_item_salvager.services.build_guides import BuildGuideService, SyncSummary
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    PROFILE_PREFIX,
    Fault,
    RandomTransientFaults,
    serve,
)
from d3_item_salvager.testing.fake_site import build_site
from d3_item_salvager.workers.runtime import WorkerRuntime


async def sync(config: object) -> SyncSummary:
    async with WorkerRuntime(config, run_scheduler=False) as runtime:  # type: ignore[arg-type]
        service: BuildGuideService = await resolve(runtime.container.build_guide_service)
        return await service.prepare_database()


async def transient(guides: int, rate: float, seeds: int) -> None:
    print(f"full sync of {guides} guides, {rate:.0%} of requests failing transiently:")
    for seed in range(1, seeds + 1):
        site = build_site(guides, planners_per_guide=2)
        faults = RandomTransientFaults(rate, seed=seed)
        with tempfile.TemporaryDirectory() as folder, serve(site, fault_hook=faults) as fake:
            config = make_config(Path(folder), maxroll=fake.config_values())
            summary = await sync(config)
            path = config.database.sqlite_path
            assert path is not None
            same = stored_rows(path) == expected_rows(site)
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(faults.injected.items()))
        print(
            f"  seed {seed}: {summary.requests} requests, {faults.total} faults injected ({kinds}); "
            f"guides processed {summary.guides_processed}, failed {summary.guides_failed}; "
            f"index equal to the clean one: {same}"
        )


async def permanent(guides: int) -> None:
    site = build_site(guides, planners_per_guide=2)
    broken = {
        GUIDE_PREFIX + site.guides[0].slug: Fault(body=b""),
        GUIDE_PREFIX + site.guides[1].slug: Fault(body=b"<html><body>maintenance</body></html>"),
        PROFILE_PREFIX + site.guides[2].variant_planners[0]: Fault(body=b"{oops"),
        PROFILE_PREFIX + site.guides[3].variant_planners[0]: Fault(body=b'{"data": "[1"}'),
        PROFILE_PREFIX + site.guides[4].variant_planners[0]: Fault(status=404),
    }
    with tempfile.TemporaryDirectory() as folder, serve(site) as fake:
        for path, fault in broken.items():
            fake.fail(path, fault)
        summary = await sync(make_config(Path(folder), maxroll=fake.config_values()))
    print(
        f"permanent faults on 5 of {guides} guides: {summary.guides_failed} failed, "
        f"{summary.guides_processed} processed, transient {summary.has_transient_failures}"
    )
    for failure in summary.failures:
        print(f"  {failure.url.rsplit('/', 1)[-1]}: {failure.error[:90]}")


async def takeover(lease_seconds: float, *, by_url: bool = False) -> None:
    """SIGKILL the leader of two `run-scheduler`s; time until the standby leads. A SQLite store
    by path is led through its lock (the kernel frees it at once); `by_url` names the same kind
    of file by URL, which is led through the lease row (it must expire first)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = root / "jobs.sqlite"
        where = (
            {"job_store_url": f"sqlite:///{store}"} if by_url else {"job_store_path": str(store)}
        )
        config = write_config(
            root / "workers.toml",
            {
                "database": {"url": f"sqlite+aiosqlite:///{root / 'index.sqlite'}"},
                "cache": {"dir": str(root / "cache")},
                "logging": {"dir": str(root / "logs")},
                "scheduler": {
                    **where,
                    "lease_seconds": lease_seconds,
                    "jobs": {
                        "scrape_guides": {"enabled": False},
                        "refresh_cache": {"enabled": False},
                    },
                },
            },
        )
        workers = [
            await WorkerProcess.start("run-scheduler", "--config", str(config), cwd=root)
            for _ in range(2)
        ]
        try:
            for worker in workers:
                await worker.wait_for("scheduler started")
            leader = next(w for w in workers if w.count("holding the scheduler lease"))
            standby = next(w for w in workers if w is not leader)
            leader.process.send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            await standby.wait_for("holding the scheduler lease")
            seconds = time.perf_counter() - killed
            await standby.stop()
        finally:
            for worker in workers:
                await worker.kill()
    led = "lease row (store by URL)" if by_url else "lock (store by path)"
    print(f"takeover after SIGKILL of the leader, {led}: {seconds:.2f} s (lease {lease_seconds} s)")


async def main(guides: int, rate: float, seeds: int) -> None:
    await transient(guides, rate, seeds)
    await permanent(guides)
    await takeover(3.0)
    await takeover(3.0, by_url=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guides", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.guides, arguments.rate, arguments.seeds))
