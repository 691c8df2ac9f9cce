"""Sync truth: upstream edits reach the index, only whole listings remove guides, honest outcomes.

Every test runs on SQLite and, when TEST_POSTGRES_URL is set, on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.errors import ParseError, TokenRefusedError, TransientFetchError
from d3_item_salvager.services.build_guides import (
    GUIDE_LIST_FALLBACK_MAX_AGE_HOURS,
    BuildGuideService,
)
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.services.sync_summary import SyncSummary
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    PROFILE_PREFIX,
    SEARCH_PATH,
    FakeMaxroll,
    Fault,
)
from tests.index_expectations import expected_rows, touch_guide
from tests.index_reader import IndexReader


class Clock:
    """The service's idea of now, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    return any_backend_config


@asynccontextmanager
async def sync_service(
    config: AppConfig, clock: Clock | None = None, **sections: dict[str, Any]
) -> AsyncIterator[BuildGuideService]:
    """A BuildGuideService on `config` (with `sections` merged in) and the given clock."""
    if sections:
        values = config.model_dump(mode="python")
        for name, overrides in sections.items():
            values[name] = {**values[name], **overrides}
        values["maxroll"]["bearer_token"] = config.maxroll.require_bearer_token()
        config = AppConfig.model_validate(values)
    async with open_container(config) as container:
        yield BuildGuideService(
            await resolve(container.maxroll_gateway),
            await resolve(container.index_repository),
            config.maxroll,
            config.cache,
            now=clock or Clock(),
        )


def rename_first_profile(fake: FakeMaxroll, planner_id: str, name: str) -> None:
    fake.site.planners[planner_id].profiles[0]["name"] = name


def planners_of(fake: FakeMaxroll) -> set[str]:
    return {p for g in fake.site.guides for p in g.expected_planners()}


# Freshness


async def test_profile_renamed_upstream_reaches_the_index_after_the_window(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Inside the window an unchanged site costs only the search; after it, the rename lands."""
    clock = Clock()
    async with sync_service(live_config, clock) as service:
        await service.prepare_database()
        guide = fake_maxroll.site.guides[1]
        rename_first_profile(fake_maxroll, guide.variant_planners[0], "Renamed Upstream")
        fake_maxroll.reset_log()
        clock.now += timedelta(minutes=live_config.cache.revalidate_after_minutes - 1)
        inside = await service.prepare_database()
        assert set(fake_maxroll.paths()) == {SEARCH_PATH}
        assert inside.guides_skipped == len(fake_maxroll.site.guides)
        clock.now += timedelta(minutes=2)
        fake_maxroll.reset_log()
        after = await service.prepare_database()
    assert after.guides_revalidated == len(fake_maxroll.site.guides)
    assert after.builds_updated == 1
    assert index.rows() == expected_rows(fake_maxroll.site)
    # Every document asked for conditionally: only the renamed profile came back whole.
    assert fake_maxroll.count(GUIDE_PREFIX, status=304) == len(fake_maxroll.site.guides)
    assert fake_maxroll.count(PROFILE_PREFIX, status=200) == 1
    assert fake_maxroll.count(PROFILE_PREFIX, status=304) == len(planners_of(fake_maxroll)) - 1


async def test_revalidate_zero_rechecks_every_sync_with_304s(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """With revalidate_after_minutes = 0 the next sync picks up a rename; the rest answer 304."""
    async with sync_service(live_config, cache={"revalidate_after_minutes": 0}) as service:
        await service.prepare_database()
        fake_maxroll.reset_log()
        unchanged = await service.prepare_database()
        documents = len(fake_maxroll.site.guides) + len(planners_of(fake_maxroll))
        search_pages = fake_maxroll.count(SEARCH_PATH)
        assert unchanged.requests == search_pages + documents
        assert unchanged.not_modified == documents
        assert (unchanged.builds_updated, unchanged.usages_created) == (0, 0)
        guide = fake_maxroll.site.guides[3]
        rename_first_profile(fake_maxroll, guide.variant_planners[0], "Renamed Again")
        renamed = await service.prepare_database()
    assert renamed.builds_updated == 1
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_shared_planner_changed_under_one_guide_updates_every_guide_sharing_it(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Guide A is modified, guide B is not: B's build from their shared planner is renamed too."""
    first, second = fake_maxroll.site.guides[:2]
    shared = first.variant_planners[0]
    second.variant_planners = [shared, *second.variant_planners]
    async with sync_service(live_config) as service:
        await service.prepare_database()
        rename_first_profile(fake_maxroll, shared, "Shared Renamed")
        touch_guide(first)
        fake_maxroll.reset_log()
        summary = await service.prepare_database()
    names = index.query(
        "SELECT guide_id, name FROM builds WHERE planner_id = :p AND profile_index = 0", p=shared
    )
    assert sorted(names) == [
        (first.guide_id, "Shared Renamed"),
        (second.guide_id, "Shared Renamed"),
    ]
    assert fake_maxroll.count(PROFILE_PREFIX + shared) == 1
    assert summary.guides_processed == 2
    assert index.rows() == expected_rows(fake_maxroll.site)


# The guide listing


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_token_fails_without_the_cached_list(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader, status: int
) -> None:
    async with sync_service(live_config) as service:
        await service.prepare_database()
        before = index.dump()
        fake_maxroll.fail(SEARCH_PATH, Fault(status=status))
        with pytest.raises(TokenRefusedError, match="bearer token was refused"):
            await service.prepare_database()
    assert fake_maxroll.count(SEARCH_PATH, status=status) == 1  # never retried
    assert index.dump() == before


async def test_capped_listing_removes_nothing_and_keeps_the_cached_list(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    async with sync_service(live_config) as service:
        await service.prepare_database()
        cache = service_cache_bytes(live_config)
    stored = index.rows()["guides"]
    fake_maxroll.site.guides.pop(0)  # gone from Maxroll, but the capped listing cannot tell
    capped = {"search_page_size": 2, "search_max_pages": 1}
    async with sync_service(live_config, maxroll=capped) as service:
        summary = await service.prepare_database()
    assert (summary.guide_list_complete, summary.guides_removed) == (False, 0)
    assert summary.failure_reason() is None
    assert "search_max_pages" in summary.warnings[0].error
    assert index.rows()["guides"] == stored
    assert service_cache_bytes(live_config) == cache


async def test_failed_search_page_removes_nothing_and_keeps_the_cached_list(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    small_pages = {"search_page_size": 2}
    fake_maxroll.estimated_total = len(fake_maxroll.site.search_hits())  # exact, as on Maxroll
    async with sync_service(live_config, maxroll=small_pages) as service:
        await service.prepare_database()
        cache = service_cache_bytes(live_config)
        stored = index.rows()["guides"]
        fake_maxroll.site.guides.pop()
        # The first page answers; the next search request fails for good (400 is not retried).
        fake_maxroll.fail(SEARCH_PATH, Fault(), Fault(status=400))
        summary = await service.prepare_database()
    assert (summary.guide_list_complete, summary.guides_removed) == (False, 0)
    assert "failed" in summary.warnings[0].error
    assert index.rows()["guides"] == stored
    assert service_cache_bytes(live_config) == cache


async def test_fewer_hits_than_announced_removes_nothing(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    async with sync_service(live_config) as service:
        await service.prepare_database()
        stored = index.rows()["guides"]
        fake_maxroll.site.guides.pop()
        fake_maxroll.estimated_total = 500
        summary = await service.prepare_database()
    assert (summary.guide_list_complete, summary.guides_removed) == (False, 0)
    assert "announced about 500 hits" in summary.warnings[0].error
    assert index.rows()["guides"] == stored


async def test_cache_refresh_keeps_the_cached_list_when_the_listing_is_not_whole(
    live_config: AppConfig, fake_maxroll: FakeMaxroll
) -> None:
    async with open_container(live_config) as container:
        refresh: CacheRefreshService = await resolve(container.cache_refresh_service)
        whole = await refresh.refresh()
        cache = service_cache_bytes(live_config)
        fake_maxroll.site.guides.pop()
        fake_maxroll.estimated_total = 500
        cut = await refresh.refresh()
    assert (whole.guide_list_complete, cut.guide_list_complete) == (True, False)
    assert service_cache_bytes(live_config) == cache


async def test_empty_listing_fails_the_run_and_removes_nothing(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    async with sync_service(live_config) as service:
        await service.prepare_database()
        before = index.dump()
        cache = service_cache_bytes(live_config)
        fake_maxroll.site.guides.clear()
        fake_maxroll.site.other_hits.clear()
        with pytest.raises(ParseError, match="listed no build guide"):
            await service.prepare_database()
    assert index.dump() == before
    assert service_cache_bytes(live_config) == cache


async def test_junk_hits_are_refused_counted_and_never_fetched(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    junk = [
        "https://evil.example/d3/guides/trap",
        "https://user@maxroll.gg/d3/guides/trap",
        "https://maxroll.gg/d3/guides/../admin",
        "https://maxroll.gg/d3/guides/trap?x=1",
        "https://maxroll.gg/d3/guides/trap#top",
        None,
    ]
    fake_maxroll.site.other_hits.extend(
        {"id": str(9000 + n), "permalink": link, "post_modified_unix": 1} for n, link in
        enumerate(junk)
    )  # fmt: skip
    async with sync_service(live_config) as service:
        summary = await service.prepare_database()
    assert summary.hits_refused == len(junk)
    assert (summary.guides_failed, summary.problems, summary.failure_reason()) == (0, 0, None)
    assert summary.guide_list_complete
    assert not any("trap" in path or "admin" in path for path in fake_maxroll.paths())
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_cached_list_stands_in_only_while_young(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """A search outage uses a recent cached list (nothing removed); an old one is not used."""
    attempts = live_config.maxroll.retry_attempts
    async with sync_service(live_config) as service:
        await service.prepare_database()
        fake_maxroll.site.guides.pop()
        fake_maxroll.fail(SEARCH_PATH, *[Fault(status=503)] * attempts)
        young = await service.prepare_database()
        assert (young.guide_list_source, young.guides_removed) == ("cache", 0)
        assert young.failure_reason() is None
        assert young.has_transient_failures
        path = live_config.cache.dir / "guide_list.json"
        payload = json.loads(path.read_bytes())
        payload["fetched_at"] = time.time() - GUIDE_LIST_FALLBACK_MAX_AGE_HOURS * 3600 - 60
        path.write_text(json.dumps(payload), encoding="utf-8")
        fake_maxroll.fail(SEARCH_PATH, *[Fault(status=503)] * attempts)
        with pytest.raises(TransientFetchError):
            await service.prepare_database()
    assert len(index.rows()["guides"]) == len(fake_maxroll.site.guides) + 1


# Outcomes


async def test_disk_full_while_caching_does_not_abort_the_sync(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """The document cache cannot be written (a folder stands where its file goes): the index is
    still filled and the problem is listed."""
    (live_config.cache.dir / "documents.sqlite").mkdir(parents=True)
    async with sync_service(live_config) as service:
        summary = await service.prepare_database()
    assert index.rows() == expected_rows(fake_maxroll.site)
    assert (summary.guides_failed, summary.failure_reason()) == (0, None)
    [problem] = summary.warnings
    assert problem.where == "document cache"
    # Every guide page, every profile and data.json.
    documents = len(fake_maxroll.site.guides) + len(planners_of(fake_maxroll)) + 1
    assert f"{documents} document(s) could not be cached" in problem.error


async def test_cached_documents_no_guide_refers_to_are_pruned(
    live_config: AppConfig, fake_maxroll: FakeMaxroll
) -> None:
    site = fake_maxroll.site
    async with sync_service(live_config) as service:
        await service.prepare_database()
        assert len(cached_urls(live_config, "guide-planners")) == len(site.guides)
        gone = site.guides.pop()
        summary = await service.prepare_database()
    still_used = planners_of(fake_maxroll)
    orphaned = set(gone.expected_planners()) - still_used
    assert summary.documents_pruned == 1 + len(orphaned)
    assert len(cached_urls(live_config, "guide-planners")) == len(site.guides)
    assert len(cached_urls(live_config, "profiles")) == len(still_used)


def cached_urls(config: AppConfig, namespace: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(config.cache.dir / "documents.sqlite")) as cache:
        rows = cache.execute("SELECT url FROM documents WHERE namespace = ?", (namespace,))
        return {url for (url,) in rows}


def service_cache_bytes(config: AppConfig) -> bytes:
    return (config.cache.dir / "guide_list.json").read_bytes()


def test_more_than_half_of_the_attempted_guides_failing_fails_the_run() -> None:
    summary = SyncSummary(guides_processed=2)
    for n in range(2):
        summary.fail_guide(f"https://maxroll.gg/d3/guides/g{n}", "boom", transient=False)
    assert summary.failure_reason() is None  # half is not more than half
    summary.fail_guide("https://maxroll.gg/d3/guides/g2", "boom", transient=False)
    assert summary.failure_reason() == (
        "3 of 5 guides failed (more than half); first: https://maxroll.gg/d3/guides/g0: boom"
    )
    assert summary.to_dict()["problems"] == 3
