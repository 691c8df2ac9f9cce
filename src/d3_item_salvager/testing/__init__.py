"""Test helpers shipped with the package: a fake Maxroll on loopback and its synthetic site.

    from d3_item_salvager.testing import FakeMaxroll

    async with FakeMaxroll() as maxroll:
        async with WorkerRuntime(maxroll.config(tmp_path)) as runtime:
            ...

The pytest fixtures (`fake_maxroll`, `salvager_config`, `salvager_runtime`) live in
`d3_item_salvager.testing.pytest_plugin`, which pytest loads by itself; importing this package does
not import pytest.
"""

from __future__ import annotations

from d3_item_salvager.testing.fake_maxroll import (
    FakeMaxroll,
    Fault,
    RandomTransientFaults,
    RecordedRequest,
    serve,
)
from d3_item_salvager.testing.fake_site import Guide, Planner, Site, build_site

__all__ = [
    "FakeMaxroll",
    "Fault",
    "Guide",
    "Planner",
    "RandomTransientFaults",
    "RecordedRequest",
    "Site",
    "build_site",
    "serve",
]
