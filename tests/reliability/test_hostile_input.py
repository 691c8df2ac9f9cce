"""Hostile documents: nothing they contain sends a request elsewhere or writes outside our dirs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import GUIDE_PREFIX, PROFILE_PREFIX, serve
from d3_item_salvager.testing.fake_site import Guide, build_site
from tests.conftest import make_config

EVIL_PERMALINKS = [
    "https://maxroll.gg/d3/guides/../../admin",
    "https://maxroll.gg/d3/guides/%2e%2e%2fadmin",
    "https://maxroll.gg/d3/guides/x@evil.example",
    "https://maxroll.gg/d3/guides//evil.example/x",
    "https://maxroll.gg/d3/guides/x/../../../../etc/passwd",
    "https://maxroll.gg/d3/guides/..%2f..%2fcache",
]


def files_under(root: Path) -> set[Path]:
    return {Path(folder) / name for folder, _, names in os.walk(root) for name in names}


async def test_crafted_permalinks_and_planner_ids_are_refused(tmp_path: Path) -> None:
    """Evil permalinks are refused with the listing; evil planner ids are never fetched."""
    site = build_site(3)
    template = site.guides[0]
    for number, permalink in enumerate(EVIL_PERMALINKS):
        evil = Guide(
            guide_id=9000 + number,
            slug="unused",
            title="Evil",
            class_name="monk",
            modified_unix=1,
            variant_planners=template.variant_planners,
            core_planner=template.core_planner,
            follower_planners=[],
            altar_planner=template.altar_planner,
        )
        hit = evil.hit() | {"permalink": permalink}
        site.other_hits.append(hit)
    # A page whose Variants planner ids try to climb out of the profile URL.
    site.guides[1].variant_planners = [
        "../../../admin",
        "1%2f..%2f2",
        site.guides[1].variant_planners[0],
    ]
    config_root = tmp_path / "root"
    with serve(site) as fake:
        config = make_config(config_root, maxroll=fake.config_values())
        async with open_container(config) as container:
            service: BuildGuideService = await resolve(container.build_guide_service)
            summary = await service.prepare_database()
        paths = fake.paths()

    # Refused when the listing is parsed: counted, never fetched, never a guide failure.
    assert summary.hits_refused == len(EVIL_PERMALINKS)
    assert summary.failures == []
    assert summary.guides_processed == 3
    guide_requests = [p for p in paths if p.startswith(GUIDE_PREFIX)]
    assert sorted(guide_requests) == sorted(GUIDE_PREFIX + g.slug for g in site.guides)
    for path in paths:
        assert ".." not in path
        assert "%" not in path
        assert "@" not in path
        if path.startswith(PROFILE_PREFIX):
            assert path.removeprefix(PROFILE_PREFIX).isdigit()
    # Everything written lives in the cache folder, the log folder or the two databases.
    allowed = (config.cache.dir, config.logging.dir)
    for written in files_under(tmp_path):
        inside = any(written.is_relative_to(folder) for folder in allowed)
        assert inside or written.name.startswith(("index.sqlite", "scheduler.sqlite")), written


async def test_huge_documents_are_refused(live_config: AppConfig, tmp_path: Path) -> None:
    """A profile over max_response_bytes is a problem of its guide; nothing of it is cached."""
    site = build_site(2)
    big = site.planners[site.guides[0].variant_planners[0]]
    big.profiles[0]["padding"] = "x" * 300_000
    with serve(site) as fake:
        config = make_config(
            tmp_path / "huge", maxroll=fake.config_values() | {"max_response_bytes": 200_000}
        )
        async with open_container(config) as container:
            service: BuildGuideService = await resolve(container.build_guide_service)
            summary = await service.prepare_database()
    assert summary.guides_failed == 0  # the guide's other planners still synced
    assert "over the 200000-byte limit" in summary.warnings[0].error
    with contextlib.closing(sqlite3.connect(config.cache.dir / "documents.sqlite")) as cache:
        sizes = cache.execute(
            "SELECT length(body) FROM documents WHERE namespace = 'profiles'"
        ).fetchall()
    assert sizes, "the other profiles were cached"
    assert all(size < 200_000 for (size,) in sizes)
