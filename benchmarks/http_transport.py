"""Event-loop CPU per request: the Maxroll client's transport against httpx's default one.

python -m benchmarks.http_transport [--requests 600] [--rounds 3]

Both clients GET the same planner profiles (~7 kB each) from the fake Maxroll in a child process
at zero latency, at concurrency 4 and 16, alternately in one run; the figure is the loop
thread's CPU time divided by the requests, and the ratio of the two within each round (the
machine is shared: absolute figures are noisy, ratios much less so).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from benchmarks._common import config_for, realistic_site_options
from benchmarks._server import fake_maxroll_process
from d3_item_salvager.maxroll.http import USER_AGENT, build_http_client
from d3_item_salvager.maxroll.urls import planner_profile_url
from d3_item_salvager.testing.fake_site import build_site


async def loop_cpu_per_request(
    count: int, concurrency: int, get: Callable[[int], Awaitable[httpx.Response]]
) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            response = await get(index)
            if response.status_code != 200 or not response.content:
                raise RuntimeError(f"unexpected answer {response.status_code}")

    started = time.thread_time()
    await asyncio.gather(*(one(index) for index in range(count)))
    return (time.thread_time() - started) / count


async def main(count: int, rounds: int) -> None:
    options = realistic_site_options(max(count // 2, 1))
    planners = [p for guide in build_site(**options).guides for p in guide.expected_planners()]
    with fake_maxroll_process(options, 0.0) as fake, tempfile.TemporaryDirectory() as folder:
        config = config_for(fake.config_values, Path(folder), 16)
        base = config.maxroll.planner_profile_url
        ours = build_http_client(config.maxroll)
        default = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT},
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
            trust_env=False,
        )
        print(f"{count} GETs of planner profiles per figure, zero latency; loop CPU per request:")
        try:
            for _ in range(rounds):
                for concurrency in (4, 16):
                    figures = []
                    for http in (ours, default):
                        figures.append(
                            await loop_cpu_per_request(
                                count,
                                concurrency,
                                lambda i, http=http: http.get(  # type: ignore[misc]
                                    planner_profile_url(base, planners[i % len(planners)])
                                ),
                            )
                        )
                    print(
                        f"  c{concurrency}: H11Transport {figures[0] * 1e6:.0f} us, "
                        f"httpx default transport {figures[1] * 1e6:.0f} us, "
                        f"ratio {figures[0] / figures[1]:.2f}"
                    )
        finally:
            await ours.aclose()
            await default.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
