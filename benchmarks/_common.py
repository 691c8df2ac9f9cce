"""Shared set-up for benchmarks: the synthetic site's shape, a config, percentiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import make_config

from d3_item_salvager.config import AppConfig


def realistic_site_options(guides: int) -> dict[str, Any]:
    """N guides, 2 Variants planners each with 4 profiles, ~2 MB of data.json (build_site args)."""
    return {
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
