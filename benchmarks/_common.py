"""Shared set-up for benchmarks: the synthetic site's shape, a config, percentiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import make_config

from d3_item_salvager.config import AppConfig


def realistic_site_options(guides: int, real_size: bool = False) -> dict[str, Any]:
    """N guides, 2 Variants planners each with 4 profiles, ~2 MB of data.json (build_site args).

    `real_size`: guide pages and profiles as large as real ones (build_site's `real_size`);
    without it pages are ~3 kB instead of ~420 kB, which understates the parsers' CPU.
    """
    return {
        "real_size": real_size,
        "guide_count": guides,
        "planners_per_guide": 2,
        "profiles_per_planner": 4,
        "items_per_slot": 40,
        "data_padding_bytes": 2_000_000,
    }


def config_for(values: dict[str, Any], folder: Path, concurrency: int = 4) -> AppConfig:
    """A config in `folder` pointing at a fake Maxroll described by its config values."""
    # A page cap above the site's size: the benchmark measures every guide, not the cap.
    pages = {"search_max_pages": 1000}
    return make_config(folder, maxroll=values | pages | {"max_concurrency": concurrency})


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class StolenCpu:
    """The share of the machine's CPU time the hypervisor gave to other guests meanwhile.

    On a shared virtual machine a neighbour's load shows up as steal time: this machine's
    threads are runnable but not running. Latency figures taken while it is high say more about
    the neighbour than about the code, so benchmarks print it beside them. Reads /proc/stat
    (Linux); elsewhere `share()` is None.
    """

    def __init__(self) -> None:
        self._start = _cpu_times()

    def share(self) -> float | None:
        end = _cpu_times()
        if self._start is None or end is None:
            return None
        total = sum(end) - sum(self._start)
        # Fields: user nice system idle iowait irq softirq steal (guest time is within user).
        return (end[7] - self._start[7]) / total if total > 0 else 0.0

    def describe(self) -> str:
        share = self.share()
        figure = "unknown" if share is None else f"{share:.0%}"
        return f"CPU stolen by the hypervisor: {figure}"


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return [int(value) for value in fields[1:9]] if fields and fields[0] == "cpu" else None
