"""Every benchmark in one go: `python -m benchmarks` (takes a few minutes).

The soak (`python -m benchmarks.soak`, about 17 minutes) runs on its own.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = (
    "benchmarks.sync",
    "benchmarks.write_floor",
    "benchmarks.parsers",
    "benchmarks.http_transport",
    "benchmarks.document_cache",
    "benchmarks.scheduler",
    "benchmarks.run_overhead",
    "benchmarks.startup",
    "benchmarks.reliability",
)

if __name__ == "__main__":
    for module in SCRIPTS:
        print(f"\n== python -m {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)
