"""Conditional reads: one worker-thread hand-off per document in a session, and a cached copy
another writer changes meanwhile is never trusted (real SQLite file, real HTTP to the fake)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing

import anyio
import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.maxroll import document_cache
from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.gateway import PROFILES
from d3_item_salvager.maxroll.http import build_http_client
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    PROFILE_PREFIX,
    FakeMaxroll,
    Fault,
)
from tests.counting_gateway import CountingGateway


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def open_gateway(config: AppConfig, clock: FakeClock) -> AsyncIterator[CountingGateway]:
    """A gateway on its own client (a second one on the same cache stands for another process)."""
    async with build_http_client(config.maxroll) as http:
        gateway = CountingGateway(
            MaxrollClient(http, config.maxroll),
            config.maxroll,
            config.cache,
            anyio.CapacityLimiter(2),
            clock=clock,
        )
        try:
            yield gateway
        finally:
            gateway.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def gateway(live_config: AppConfig, clock: FakeClock) -> AsyncIterator[CountingGateway]:
    async with open_gateway(live_config, clock) as gateway:
        yield gateway


@pytest.fixture
async def other(live_config: AppConfig, clock: FakeClock) -> AsyncIterator[CountingGateway]:
    """Another writer of the same cache file, its clock a little ahead."""
    async with open_gateway(live_config, FakeClock(clock.now + 5)) as other:
        yield other


def statuses(fake: FakeMaxroll, planner_id: str) -> list[int]:
    return [r.status for r in fake.requests if r.path == PROFILE_PREFIX + planner_id]


def planners(fake: FakeMaxroll) -> list[str]:
    return list(fake.site.planners)


async def test_a_session_reads_each_document_with_one_hand_off(
    gateway: CountingGateway, fake_maxroll: FakeMaxroll, clock: FakeClock
) -> None:
    """Downloaded or revalidated: one call per document after its request, and one per
    namespace for the validators, read again by the next session; outside, two per document."""
    guides = (await gateway.search_guides()).guides[:2]
    profiles = planners(fake_maxroll)[:3]
    for step in ("_parse_and_store", "_confirm_and_parse"):
        gateway.hand_offs.clear()
        clock.now += 60
        async with gateway.sync_session():
            for guide in guides:
                await gateway.guide_planners(guide)
            for planner_id in profiles:
                await gateway.planner_profile(planner_id)
        assert gateway.hand_offs == ["stamps", step, step, "stamps", step, step, step]
    assert fake_maxroll.count(GUIDE_PREFIX, status=304) == 2
    assert fake_maxroll.count(PROFILE_PREFIX, status=304) == 3
    gateway.hand_offs.clear()
    await gateway.planner_profile(profiles[0])
    assert gateway.hand_offs == ["stamp", "_confirm_and_parse"]


async def test_a_session_keeps_the_validators_of_its_own_writes(
    gateway: CountingGateway, fake_maxroll: FakeMaxroll, clock: FakeClock
) -> None:
    """Stored, then renewed: each later read in the session is a 304 answered from the cache."""
    planner_id = planners(fake_maxroll)[0]
    async with gateway.sync_session():
        first = await gateway.planner_profile(planner_id)
        for _ in range(2):
            clock.now += 1
            assert await gateway.planner_profile(planner_id) == first
    assert statuses(fake_maxroll, planner_id) == [200, 304, 304]
    stamp = gateway.documents.stamp(PROFILES, planner_id)
    assert stamp is not None
    assert stamp.fetched_at == clock.now  # renewed by the last 304


async def test_a_full_download_in_a_session_sends_no_validators(
    gateway: CountingGateway, fake_maxroll: FakeMaxroll
) -> None:
    planner_id = planners(fake_maxroll)[0]
    await gateway.planner_profile(planner_id)
    async with gateway.sync_session():
        await gateway.planner_profile(planner_id)
        _, changed = await gateway.planner_profile_update(planner_id, conditional=False)
    assert statuses(fake_maxroll, planner_id) == [200, 304, 200]
    assert fake_maxroll.requests[-1].headers.get("if-none-match") is None
    assert changed  # as without a session: a full download is not compared


@pytest.mark.parametrize("meanwhile", ["replaced", "deleted"])
async def test_a_copy_changed_during_its_revalidation_is_downloaded_again(
    gateway: CountingGateway,
    other: CountingGateway,
    fake_maxroll: FakeMaxroll,
    meanwhile: str,
) -> None:
    """The 304 confirmed the version whose validators were read; another writer has since
    stored the document again, or deleted it: the copy found is not used, the document is
    downloaded in full (never an error) and counts as changed."""
    target, first_read = planners(fake_maxroll)[:2]
    expected = await gateway.planner_profile(target)
    async with gateway.sync_session():
        await gateway.planner_profile(first_read)  # the session reads the profiles' validators
        if meanwhile == "replaced":
            await other.planner_profile(target, conditional=False)
        else:
            await other.prune_documents(set(), set())
        profile, changed = await gateway.planner_profile_update(target)
    assert (profile, changed) == (expected, True)
    # The first read, the other writer's download (when it replaced the copy), then 304 and 200.
    other_writer = [200] if meanwhile == "replaced" else []
    assert statuses(fake_maxroll, target) == [200, *other_writer, 304, 200]
    assert fake_maxroll.requests[-1].headers.get("if-none-match") is None
    assert gateway.cache_write_failures == 0
    assert gateway.documents.stamp(PROFILES, target) is not None  # cached again


async def test_a_new_version_another_writer_cached_first_still_counts_as_changed(
    gateway: CountingGateway,
    other: CountingGateway,
    fake_maxroll: FakeMaxroll,
) -> None:
    """Maxroll changed the profile and another process cached the new version before this
    read's 200 arrived: compared with what the session read (not with that row), it changed."""
    target, first_read = planners(fake_maxroll)[:2]
    before = await gateway.planner_profile(target)
    async with gateway.sync_session():
        await gateway.planner_profile(first_read)
        fake_maxroll.site.planners[target].profiles[0]["name"] = "Renamed Upstream"
        await other.planner_profile(target)
        profile, changed = await gateway.planner_profile_update(target)
    assert changed
    assert profile != before
    assert profile.builds[0].name == "Renamed Upstream"
    assert statuses(fake_maxroll, target) == [200, 200, 200]


async def test_an_identical_body_sent_again_is_unchanged(
    gateway: CountingGateway, fake_maxroll: FakeMaxroll
) -> None:
    """A server that ignores the validators answers 200 with the same document: not a change
    (compared with the cached copy in the same call that stores it)."""
    planner_id = planners(fake_maxroll)[0]
    await gateway.planner_profile(planner_id)
    cached = gateway.documents.get(PROFILES, planner_id)
    assert cached is not None
    fake_maxroll.fail(PROFILE_PREFIX + planner_id, Fault(status=200, body=cached.body))
    async with gateway.sync_session():
        _, changed = await gateway.planner_profile_update(planner_id)
    assert statuses(fake_maxroll, planner_id) == [200, 200]
    assert fake_maxroll.requests[-1].headers.get("if-none-match") is not None
    assert not changed


async def test_a_prune_in_a_session_drops_the_validators_it_read(
    gateway: CountingGateway, fake_maxroll: FakeMaxroll
) -> None:
    """After a prune the session reads the validators again: a pruned document is downloaded
    at once, not first asked for with validators of a copy that is gone."""
    planner_id = planners(fake_maxroll)[0]
    async with gateway.sync_session():
        await gateway.planner_profile(planner_id)
        assert await gateway.prune_documents(set(), set()) == 1
        await gateway.planner_profile(planner_id)
    assert statuses(fake_maxroll, planner_id) == [200, 200]
    assert fake_maxroll.requests[-1].headers.get("if-none-match") is None


async def test_a_copy_that_cannot_be_renewed_is_still_used(
    live_config: AppConfig,
    fake_maxroll: FakeMaxroll,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process holds the write lock past the timeout: the 304's copy is read anyway,
    the document is not downloaded again, and the failed renewal is counted."""
    monkeypatch.setattr(document_cache, "_TIMEOUT_SECONDS", 0.2)
    planner_id = planners(fake_maxroll)[0]
    async with open_gateway(live_config, clock) as gateway:
        expected = await gateway.planner_profile(planner_id)
        path = live_config.cache.dir / "documents.sqlite"
        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            async with gateway.sync_session():
                clock.now += 60
                profile, changed = await gateway.planner_profile_update(planner_id)
            holder.execute("ROLLBACK")
        assert (profile, changed) == (expected, False)
        assert statuses(fake_maxroll, planner_id) == [200, 304]
        assert gateway.cache_write_failures == 1
        assert "locked" in gateway.last_cache_error


async def test_validators_unreadable_at_first_are_read_again_for_the_next_document(
    gateway: CountingGateway, other: CountingGateway, fake_maxroll: FakeMaxroll
) -> None:
    """A session does not keep "nothing cached" from a failed read: once the cache can be read,
    its documents are revalidated, not all downloaded in full."""
    first, later = planners(fake_maxroll)[:2]
    database = gateway.documents.path
    database.mkdir(parents=True)  # a folder where the database goes: the cache cannot be opened
    async with gateway.sync_session():
        await gateway.planner_profile(first)
        assert gateway.cache_write_failures == 1
        database.rmdir()
        await other.planner_profile(later)  # another process caches it meanwhile
        await gateway.planner_profile(later)
    assert statuses(fake_maxroll, later) == [200, 304]
    assert gateway.hand_offs.count("stamps") == 2
