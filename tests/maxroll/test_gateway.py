"""MaxrollGateway: conditional fetches, on-disk caches, corrupt-cache recovery, catalog TTL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.errors import ParseError, TransientFetchError
from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.http import build_http_client
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    ITEM_DATA_PATH,
    PROFILE_PREFIX,
    FakeMaxroll,
    Fault,
    serve,
)
from d3_item_salvager.testing.fake_site import build_site
from tests.conftest import make_config


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@asynccontextmanager
async def open_gateway(
    config: AppConfig, clock: FakeClock | None = None
) -> AsyncIterator[MaxrollGateway]:
    """A gateway on its own client for `config`, closed after the block."""
    async with build_http_client(config.maxroll) as http:
        yield MaxrollGateway(
            MaxrollClient(http, config.maxroll),
            config.maxroll,
            config.cache,
            anyio.CapacityLimiter(2),
            clock=clock or FakeClock(),
        )


@pytest.fixture
async def gateway(live_config: AppConfig, clock: FakeClock) -> AsyncIterator[MaxrollGateway]:
    async with open_gateway(live_config, clock) as gateway:
        yield gateway


async def test_search_follows_pages_until_a_short_one(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll, live_config: AppConfig
) -> None:
    """All guides come back across pages; resources are dropped; pagination stops by itself."""
    site = fake_maxroll.site
    listing = await gateway.search_guides()
    guides = listing.guides
    assert listing.complete
    assert [g.url for g in guides] == [g.permalink for g in site.guides]
    assert [g.guide_id for g in guides] == [g.guide_id for g in site.guides]
    hits = len(site.search_hits())
    page = live_config.maxroll.search_page_size
    assert fake_maxroll.count("/indexes") == hits // page + 1


async def test_search_page_cap(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """With search_max_pages=1 only the first page is read."""
    config = make_config(
        tmp_path,
        maxroll=fake_maxroll.config_values() | {"search_page_size": 2, "search_max_pages": 1},
    )
    async with open_gateway(config) as gateway:
        listing = await gateway.search_guides()
    assert len(listing.guides) == 1
    assert "the page cap (maxroll.search_max_pages = 1) was reached" in listing.incomplete
    assert fake_maxroll.count("/indexes") == 1


async def test_guide_planners_are_fetched_conditionally(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll
) -> None:
    """The second read of an unchanged page is a 304 answered from the cached planner ids."""
    [guide] = [g for g in (await gateway.search_guides()).guides if g.guide_id == 1001]
    first = await gateway.guide_planners(guide)
    second = await gateway.guide_planners(guide)
    assert first.planner_ids == second.planner_ids
    assert list(first.planner_ids) == fake_maxroll.site.guides[1].expected_planners()
    assert fake_maxroll.count(GUIDE_PREFIX, status=200) == 1
    assert fake_maxroll.count(GUIDE_PREFIX, status=304) == 1
    await gateway.guide_planners(guide, conditional=False)
    assert fake_maxroll.count(GUIDE_PREFIX, status=200) == 2


async def test_corrupt_profile_cache_is_discarded_and_refetched(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll, live_config: AppConfig
) -> None:
    """A cache database overwritten with garbage is dropped; the next fetch is a plain 200."""
    planner_id = next(iter(fake_maxroll.site.planners))
    profile = await gateway.planner_profile(planner_id)
    gateway.documents.close()
    (live_config.cache.dir / "documents.sqlite").write_bytes(b"\x00garbage" * 1000)
    again = await gateway.planner_profile(planner_id)
    assert again == profile
    assert fake_maxroll.count(PROFILE_PREFIX, status=200) == 2
    assert fake_maxroll.requests[-1].headers.get("if-none-match") is None
    assert await gateway.planner_profile(planner_id) == profile  # cached again: a 304 now
    assert fake_maxroll.requests[-1].status == 304


async def test_broken_new_profile_keeps_the_cached_copy(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll
) -> None:
    """A new document that does not parse raises ParseError and never replaces the cache."""
    planner_id = next(iter(fake_maxroll.site.planners))
    good = await gateway.planner_profile(planner_id)
    fake_maxroll.fail(PROFILE_PREFIX + planner_id, Fault(body=b'{"id": "1", "data": "{oops"}'))
    with pytest.raises(ParseError, match="'data' field is not JSON"):
        await gateway.planner_profile(planner_id, conditional=False)
    assert await gateway.planner_profile(planner_id) == good
    assert fake_maxroll.requests[-1].status == 304


async def test_item_catalog_ttl_and_conditional_refresh(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll, clock: FakeClock, live_config: AppConfig
) -> None:
    """Fresh: no request. Stale: a conditional GET answered 304. Force: a full download."""
    catalog = await gateway.item_catalog()
    assert len(catalog) == len(fake_maxroll.site.catalog)
    await gateway.item_catalog()
    assert fake_maxroll.count(ITEM_DATA_PATH) == 1
    clock.now += live_config.cache.item_catalog_ttl_minutes * 60 + 1
    assert len(await gateway.item_catalog()) == len(catalog)
    assert fake_maxroll.count(ITEM_DATA_PATH, status=304) == 1
    await gateway.item_catalog()
    assert fake_maxroll.count(ITEM_DATA_PATH) == 2  # the 304 renewed the cache's age
    await gateway.item_catalog(force_refresh=True)
    assert fake_maxroll.count(ITEM_DATA_PATH, status=200) == 2


async def test_item_catalog_survives_a_failed_refresh(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll, live_config: AppConfig
) -> None:
    """When Maxroll fails, the cached catalog is used; without a cache the error is raised."""
    attempts = live_config.maxroll.retry_attempts
    fake_maxroll.fail(ITEM_DATA_PATH, *[Fault(status=503)] * attempts)
    with pytest.raises(TransientFetchError):
        await gateway.item_catalog()
    catalog = await gateway.item_catalog()
    fake_maxroll.fail(ITEM_DATA_PATH, Fault(status=200, body=b"<html>maintenance</html>"))
    assert len(await gateway.item_catalog(force_refresh=True)) == len(catalog)


async def test_guide_list_cache_round_trip_and_corruption(
    gateway: MaxrollGateway, clock: FakeClock
) -> None:
    """The saved list reads back while fresh; a corrupt file is treated as no cache."""
    guides = list((await gateway.refresh_guide_list()).guides)
    assert await gateway.cached_guide_list(max_age_seconds=60) == guides
    clock.now += 61
    assert await gateway.cached_guide_list(max_age_seconds=60) is None
    assert await gateway.cached_guide_list(max_age_seconds=None) == guides
    gateway.guide_list_cache.path.write_text('{"fetched_at": 1, "guides": [{"x"', encoding="utf-8")
    assert await gateway.cached_guide_list(max_age_seconds=None) is None
    assert not gateway.guide_list_cache.path.exists()


@pytest.mark.parametrize(("estimate", "max_pages"), [(10, 100), (1000, 20), (None, 100)])
async def test_search_pages_whatever_the_estimate_says(
    tmp_path: Path, estimate: int | None, max_pages: int
) -> None:
    """Too low, too high or missing estimatedTotalHits: every guide is listed, once, in order."""
    site = build_site(30)
    with serve(site, estimated_total=estimate) as fake:
        if estimate is None:
            fake.estimated_total = 0  # an unusable estimate: pages are read one by one
        config = make_config(
            tmp_path,
            maxroll=fake.config_values() | {"search_page_size": 7, "search_max_pages": max_pages},
        )
        async with open_gateway(config) as gateway:
            guides = (await gateway.search_guides()).guides
        pages = fake.count("/indexes")
    assert [g.url for g in guides] == [g.permalink for g in site.guides]
    expected_pages = {10: 9, 1000: 20, None: 9}[estimate]  # 60 hits, 7 a page
    assert pages == expected_pages


async def test_failed_guide_list_refresh_keeps_the_cached_list(
    gateway: MaxrollGateway, fake_maxroll: FakeMaxroll, live_config: AppConfig
) -> None:
    """A refresh that fails raises and leaves the previous cached list untouched."""
    guides = list((await gateway.refresh_guide_list()).guides)
    before = gateway.guide_list_cache.path.read_bytes()
    attempts = live_config.maxroll.retry_attempts
    fake_maxroll.fail("/indexes/wp_posts_1/search", *[Fault(status=503)] * attempts)
    with pytest.raises(TransientFetchError):
        await gateway.refresh_guide_list()
    assert gateway.guide_list_cache.path.read_bytes() == before
    assert await gateway.cached_guide_list(max_age_seconds=None) == guides
