"""Start-up time of `python -m d3_item_salvager.workers --help`, against a bare interpreter.

python -m benchmarks.startup [--repeat 10]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time


def timed(command: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + system) of each run of `command`."""
    seconds, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds, cpu


def main(repeat: int) -> None:
    # Interleaved, so both commands see the same machine load (it is shared and noisy).
    bare_wall, bare_cpu, cli_wall, cli_cpu = [], [], [], []
    for _ in range(repeat):
        wall, cpu = timed([sys.executable, "-c", "pass"], 1)
        bare_wall += wall
        bare_cpu += cpu
        wall, cpu = timed([sys.executable, "-m", "d3_item_salvager.workers", "--help"], 1)
        cli_wall += wall
        cli_cpu += cpu
    for name, wall, cpu in (
        ("python -c pass", bare_wall, bare_cpu),
        ("python -m d3_item_salvager.workers --help", cli_wall, cli_cpu),
    ):
        print(
            f"{name:<42} median {statistics.median(wall) * 1e3:.0f} ms wall, "
            f"{statistics.median(cpu) * 1e3:.0f} ms CPU"
        )
    print(
        f"ratio {statistics.median(cli_wall) / statistics.median(bare_wall):.1f}x wall, "
        f"{statistics.median(cli_cpu) / statistics.median(bare_cpu):.1f}x CPU, over {repeat} runs "
        "each; at 12 ms for `python -c pass`, 150 ms is 12.5x"
    )
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
