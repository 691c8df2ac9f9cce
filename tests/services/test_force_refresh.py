"""`force_refresh` (`run scrape-guides --force-refresh`) refetches every document, the catalog too."""

from __future__ import annotations

from d3_item_salvager.container import Container, resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    ITEM_DATA_PATH,
    PROFILE_PREFIX,
    FakeMaxroll,
)


async def test_force_refresh_refetches_the_item_catalog_while_its_cache_is_fresh(
    live_container: Container, fake_maxroll: FakeMaxroll
) -> None:
    """A plain sync leaves a fresh data.json cache alone; a forced one downloads it again whole
    (no If-None-Match, answered 200), as it does every guide page and planner profile."""
    service: BuildGuideService = await resolve(live_container.build_guide_service)
    await service.prepare_database()
    fake_maxroll.reset_log()
    await service.prepare_database()
    assert fake_maxroll.count(ITEM_DATA_PATH) == 0  # the cache is fresh: not asked

    fake_maxroll.reset_log()
    summary = await service.prepare_database(force_refresh=True)
    assert summary.guides_failed == 0
    [catalog] = [r for r in fake_maxroll.requests if r.path == ITEM_DATA_PATH]
    assert catalog.status == 200
    assert "if-none-match" not in catalog.headers
    guides = len(fake_maxroll.site.guides)
    assert fake_maxroll.count(GUIDE_PREFIX, status=200) == guides
    assert fake_maxroll.count(PROFILE_PREFIX, status=304) == 0
    assert fake_maxroll.count(PROFILE_PREFIX, status=200) >= 1
