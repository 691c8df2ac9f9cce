"""What a sync keeps in memory: a bounded number of guides in flight, profiles only while used.

Shared planners are still read once per sync: a profile no guide in flight holds is read back
from the document cache, never asked of Maxroll again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.data.repository import IndexRepository
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.models import GuideRecord, PlannerProfile
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import PROFILE_PREFIX, FakeMaxroll
from d3_item_salvager.testing.fake_site import Site, build_site
from tests.index_expectations import expected_rows, touch_guide
from tests.index_reader import IndexReader

GUIDES = 16
CONCURRENCY = 1  # two guides in flight at a time


@pytest.fixture
def site() -> Site:
    """Guides 0 and 15 share a planner: with two guides in flight, far apart in time."""
    site = build_site(GUIDES)
    first, last = site.guides[0], site.guides[-1]
    last.variant_planners = [first.variant_planners[0], *last.variant_planners]
    return site


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    maxroll = any_backend_config.maxroll.model_copy(update={"max_concurrency": CONCURRENCY})
    return any_backend_config.model_copy(update={"maxroll": maxroll})


class Watched:
    """Wraps a gateway: tasks alive whenever a guide page is read, profiles read from the cache."""

    def __init__(self, gateway: MaxrollGateway) -> None:
        self.tasks: list[int] = []
        self.restored: list[str] = []
        guide_planners, cached_profile = gateway.guide_planners, gateway.cached_planner_profile

        async def watched_planners(guide: GuideRecord, **kwargs: Any) -> Any:
            self.tasks.append(len(asyncio.all_tasks()))
            return await guide_planners(guide, **kwargs)

        async def watched_cached(planner_id: str) -> PlannerProfile | None:
            self.restored.append(planner_id)
            return await cached_profile(planner_id)

        gateway.guide_planners = watched_planners  # type: ignore[method-assign]
        gateway.cached_planner_profile = watched_cached  # type: ignore[method-assign]


@pytest.fixture
async def watched(live_config: AppConfig) -> AsyncIterator[tuple[BuildGuideService, Watched]]:
    async with open_container(live_config) as container:
        gateway: MaxrollGateway = await resolve(container.maxroll_gateway)
        watch = Watched(gateway)
        service: BuildGuideService = await resolve(container.build_guide_service)
        yield service, watch


async def test_only_a_few_guides_are_in_flight_at_once(
    watched: tuple[BuildGuideService, Watched], fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """2 x max_concurrency workers take the guides in turn; no task waits per listed guide."""
    service, watch = watched
    before = len(asyncio.all_tasks())
    summary = await service.prepare_database()
    assert summary.guides_processed == GUIDES
    assert len(watch.tasks) == GUIDES
    assert max(watch.tasks) - before <= 2 * CONCURRENCY
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_a_profile_shared_by_guides_far_apart_is_fetched_once(
    watched: tuple[BuildGuideService, Watched], fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Released after guide 0, the shared profile comes back from the cache for guide 15."""
    service, watch = watched
    shared = fake_maxroll.site.guides[0].variant_planners[0]
    await service.prepare_database()
    assert fake_maxroll.count(PROFILE_PREFIX + shared) == 1
    assert watch.restored == [shared]
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_a_profile_the_cache_cannot_hold_is_kept_in_memory(
    watched: tuple[BuildGuideService, Watched],
    fake_maxroll: FakeMaxroll,
    live_config: AppConfig,
    index: IndexReader,
) -> None:
    """The profile cache cannot be written: the shared profile is kept, still fetched once."""
    service, watch = watched
    # A folder where the cache's database file belongs: no document can be stored.
    (live_config.cache.dir / "documents.sqlite").mkdir(parents=True)
    shared = fake_maxroll.site.guides[0].variant_planners[0]
    await service.prepare_database()
    assert fake_maxroll.count(PROFILE_PREFIX + shared) == 1
    assert watch.restored == []
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_the_sharing_query_runs_only_when_a_stored_guide_was_not_read(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """A first sync reads every guide, so no stored guide can lag behind a changed profile."""
    asked: list[set[str]] = []
    async with open_container(live_config) as container:
        repository: IndexRepository = await resolve(container.index_repository)
        original = repository.guides_using_planners

        async def recorded(planner_ids: Collection[str]) -> set[int]:
            asked.append(set(planner_ids))
            return await original(planner_ids)

        repository.guides_using_planners = recorded  # type: ignore[method-assign]
        service: BuildGuideService = await resolve(container.build_guide_service)
        await service.prepare_database()
        assert asked == []
        first, last = fake_maxroll.site.guides[0], fake_maxroll.site.guides[-1]
        shared = first.variant_planners[0]
        fake_maxroll.site.planners[shared].profiles[0]["name"] = "Shared Renamed"
        touch_guide(first)
        await service.prepare_database()
    assert shared in asked[0]
    names = index.query(
        "SELECT guide_id, name FROM builds WHERE planner_id = :p AND profile_index = 0", p=shared
    )
    assert sorted(names) == [(first.guide_id, "Shared Renamed"), (last.guide_id, "Shared Renamed")]
