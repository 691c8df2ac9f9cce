"""Event-loop CPU per request of the Maxroll client's HTTP client (httpx2), and of httpx's.

python -m benchmarks.http_transport [--requests 600] [--rounds 3]

Each client GETs the same planner profiles (~7 kB each) from the fake Maxroll in a child process
at zero latency, at concurrency 1, 4 and 16, alternately in one run; the figure is the loop
thread's CPU time divided by the requests (the machine is shared: absolute figures are noisy,
ratios within a round much less so).

- httpx2: `build_http_client` as the application builds it (Pydantic's fork of httpx, on
  httpcore2, with its own transport).
- httpx: encode's httpx on httpcore 1.0 (a test dependency), with the same limits, timeouts and
  headers. Its pool hands one idle connection to several waiting requests, and each one that
  loses walks the pool again: the cost grows with the concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import config_for, realistic_site_options
from benchmarks._server import fake_maxroll_process
from d3_item_salvager.maxroll.http import USER_AGENT, build_http_client
from d3_item_salvager.maxroll.urls import planner_profile_url
from d3_item_salvager.testing.fake_site import build_site


async def loop_cpu_per_request(
    urls: list[str], concurrency: int, get: Callable[[str], Awaitable[Any]]
) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        async with slots:
            response = await get(url)
            if response.status_code != 200 or not response.content:
                raise RuntimeError(f"unexpected answer {response.status_code}")

    started = time.thread_time()
    await asyncio.gather(*(one(url) for url in urls))
    return (time.thread_time() - started) / len(urls)


def httpx_client(config: Any) -> httpx.AsyncClient:
    """encode's httpx set up as `build_http_client` sets up httpx2."""
    maxroll = config.maxroll
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            maxroll.request_timeout_seconds, connect=maxroll.connect_timeout_seconds
        ),
        limits=httpx.Limits(
            max_connections=maxroll.max_concurrency,
            max_keepalive_connections=maxroll.max_concurrency,
        ),
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
    )


async def main(count: int, rounds: int) -> None:
    options = realistic_site_options(max(count // 2, 1))
    planners = [p for guide in build_site(**options).guides for p in guide.expected_planners()]
    with fake_maxroll_process(options, 0.0) as fake, tempfile.TemporaryDirectory() as folder:
        print(f"{count} GETs of planner profiles per figure, zero latency; loop CPU per request:")
        for concurrency in (1, 4, 16):
            config = config_for(fake.config_values, Path(folder), concurrency)
            base = config.maxroll.planner_profile_url
            urls = [planner_profile_url(base, planners[i % len(planners)]) for i in range(count)]
            clients: dict[str, Any] = {
                "httpx2 (as built)": build_http_client(config.maxroll),
                "httpx": httpx_client(config),
            }
            figures: dict[str, list[float]] = {name: [] for name in clients}
            try:
                for _ in range(rounds):
                    for name, http in clients.items():
                        figures[name].append(
                            await loop_cpu_per_request(urls, concurrency, http.get)
                        )
            finally:
                for http in clients.values():
                    await http.aclose()
            print(
                f"  c{concurrency}: "
                + ", ".join(
                    f"{name} {statistics.median(values) * 1e6:.0f} us"
                    for name, values in figures.items()
                )
                + f" (medians of {rounds} rounds)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
