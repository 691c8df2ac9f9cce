"""A host app's process for the multiprocess-metrics test: a runtime whose registry it serves.

    python tests/workers/metrics_host.py CONFIG_FILE [JOB]

Enters `WorkerRuntime(load_config(CONFIG_FILE))`, runs JOB once by hand when given, serves
`runtime.metrics.registry` on a free loopback port (as an app's `/metrics` would), prints
`serving URL leader=True|False` on stdout, and runs until its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prometheus_client import start_wsgi_server

from d3_item_salvager.config import load_config
from d3_item_salvager.workers.runtime import WorkerRuntime


async def main(config_file: Path, job: str | None) -> None:
    loop = asyncio.get_running_loop()
    async with WorkerRuntime(load_config(config_file)) as runtime:
        if job is not None:
            await runtime.run_job(job)
        server, thread = start_wsgi_server(0, addr="127.0.0.1", registry=runtime.metrics.registry)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            sys.stdout.write(f"serving {url} leader={runtime.is_leader}\n")
            sys.stdout.flush()
            await loop.run_in_executor(None, sys.stdin.read)  # until the test closes it
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
