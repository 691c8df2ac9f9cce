"""Shared set-up for benchmarks: a synthetic site served by the fake Maxroll, and a config."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import make_config
from tests.fake_maxroll import FakeMaxroll, serve
from tests.fake_site import Site, build_site

from d3_item_salvager.config import AppConfig


def realistic_site_options(guides: int) -> dict[str, Any]:
    """N guides, 2 Variants planners each with 4 profiles, ~2 MB of data.json."""
    return {
        "guide_count": guides,
        "planners_per_guide": 2,
        "profiles_per_planner": 4,
        "items_per_slot": 40,
        "data_padding_bytes": 2_000_000,
    }


def realistic_site(guides: int) -> Site:
    return build_site(**realistic_site_options(guides))


def config_for(values: dict[str, Any], folder: Path, concurrency: int = 4) -> AppConfig:
    """A config in `folder` pointing at a fake Maxroll described by its config values."""
    return make_config(folder, maxroll=values | {"max_concurrency": concurrency})


@contextmanager
def site_and_config(
    site: Site, *, latency: float, concurrency: int = 4, **maxroll: Any
) -> Iterator[tuple[FakeMaxroll, AppConfig]]:
    """The fake Maxroll serving `site`, and a config in a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as folder, serve(site) as fake:
        fake.latency = latency
        config = make_config(
            Path(folder),
            maxroll=fake.config_values() | {"max_concurrency": concurrency} | maxroll,
        )
        yield fake, config


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
