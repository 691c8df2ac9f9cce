"""Start-up time of `python -m d3_item_salvager.workers --help`, against a bare interpreter.

python -m benchmarks.startup [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(command: list[str], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(repeat: int) -> None:
    bare = timed([sys.executable, "-c", "pass"], repeat)
    cli = timed([sys.executable, "-m", "d3_item_salvager.workers", "--help"], repeat)
    print(f"python -c pass:                          median {statistics.median(bare) * 1e3:.0f} ms")
    print(
        f"python -m d3_item_salvager.workers --help: median {statistics.median(cli) * 1e3:.0f} ms"
    )
    print(f"ratio {statistics.median(cli) / statistics.median(bare):.1f}x over {repeat} runs each")
    report = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "d3_item_salvager.workers", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.splitlines()
    rows = []
    for line in report[1:]:
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))
    print("slowest top-level imports (cumulative us):")
    for micros, name in sorted(rows, reverse=True)[:8]:
        print(f"  {micros:>8} {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    main(parser.parse_args().repeat)
