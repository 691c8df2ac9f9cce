"""BuildGuideService against the fake Maxroll, on a real SQLite file and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container, resolve
from d3_item_salvager.data.repository import placeholder_item
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, ItemUsage
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    ITEM_DATA_PATH,
    PROFILE_PREFIX,
    FakeMaxroll,
    Fault,
)
from tests.conftest import make_config
from tests.index_expectations import expected_rows, touch_guide
from tests.index_reader import IndexReader

BOOM_TRIGGER = {
    "sqlite": [
        (
            "CREATE TRIGGER boom BEFORE INSERT ON item_usages WHEN NEW.item_id = 'Boom_Item' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    ],
    "postgresql": [
        (
            "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql"
        ),
        (
            "CREATE TRIGGER boom BEFORE INSERT ON item_usages FOR EACH ROW "
            "WHEN (NEW.item_id = 'Boom_Item') EXECUTE FUNCTION boom()"
        ),
    ],
}


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    """Every test here runs with the index on SQLite and on PostgreSQL."""
    return any_backend_config


@pytest.fixture
async def service(live_container: Container) -> BuildGuideService:
    service: BuildGuideService = await resolve(live_container.build_guide_service)
    return service


async def test_first_sync_fills_the_index_exactly(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Every guide, build, usage and item row is what the site implies, and nothing else."""
    summary = await service.prepare_database()
    site = fake_maxroll.site
    expected = expected_rows(site)
    assert index.rows() == expected
    assert summary.guides_seen == summary.guides_processed == len(site.guides)
    assert (summary.guides_skipped, summary.guides_failed, summary.guides_removed) == (0, 0, 0)
    assert summary.builds_created == len(expected["builds"])
    assert summary.usages_created == len(expected["item_usages"])
    assert summary.items_upserted == len(expected["items"])
    assert summary.unknown_items == 0
    planners = {p for g in site.guides for p in g.expected_planners()}
    assert fake_maxroll.count(PROFILE_PREFIX) == len(planners)
    assert fake_maxroll.count(GUIDE_PREFIX) == len(site.guides)
    assert summary.requests == len(fake_maxroll.requests)


async def test_second_sync_is_a_no_op_without_page_or_profile_requests(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Unchanged guides are skipped: only the search is asked, and no row changes."""
    await service.prepare_database()
    before = index.dump()
    fake_maxroll.reset_log()
    summary = await service.prepare_database()
    assert index.dump() == before
    assert fake_maxroll.count(GUIDE_PREFIX) == fake_maxroll.count(PROFILE_PREFIX) == 0
    assert fake_maxroll.count(ITEM_DATA_PATH) == 0
    assert set(fake_maxroll.paths()) == {"/indexes/wp_posts_1/search"}
    assert summary.guides_skipped == len(fake_maxroll.site.guides)
    changed = (
        summary.guides_processed, summary.builds_created, summary.builds_updated,
        summary.builds_removed, summary.items_upserted, summary.usages_created,
        summary.usages_removed, summary.guides_removed,
    )  # fmt: skip
    assert changed == (0,) * 8


async def test_changed_guide_is_resynced_alone(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """A new modified time re-reads that guide only; a changed profile updates its rows."""
    await service.prepare_database()
    site = fake_maxroll.site
    guide = site.guides[2]
    touch_guide(guide)
    planner = site.planners[guide.variant_planners[0]]
    planner.profiles[0]["items"]["head"] = {"id": site.catalog[1]["id"]}
    planner.profiles[0]["name"] = "Renamed"
    del planner.profiles[-1]
    fake_maxroll.reset_log()
    summary = await service.prepare_database()
    # The item catalog is still fresh in its cache, so it is not asked for.
    assert sorted(fake_maxroll.paths("GET")) == sorted(
        [GUIDE_PREFIX + guide.slug] + [PROFILE_PREFIX + p for p in guide.expected_planners()]
    )
    assert (summary.guides_processed, summary.guides_skipped) == (1, len(site.guides) - 1)
    assert (summary.builds_updated, summary.builds_removed) == (1, 1)
    assert index.rows() == expected_rows(site)


async def test_vanished_guide_is_removed_with_its_builds(
    service: BuildGuideService,
    fake_maxroll: FakeMaxroll,
    live_config: AppConfig,
    index: IndexReader,
) -> None:
    """A guide no longer listed is deleted with its builds and usages, and reported."""
    await service.prepare_database()
    gone = fake_maxroll.site.guides.pop(0)
    summary = await service.prepare_database()
    assert summary.guides_removed == 1
    assert summary.builds_removed > 0
    stored, expected = index.rows(), expected_rows(fake_maxroll.site)
    for table in ("guides", "builds", "item_usages"):
        assert stored[table] == expected[table]
    assert stored["items"] >= expected["items"]  # item records outlive the guides using them
    assert index.query("SELECT 1 FROM guides WHERE id = :id", id=gone.guide_id) == []


async def test_shared_planner_is_fetched_once(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Two guides recommending the same planner cause one profile request."""
    first, second = fake_maxroll.site.guides[:2]
    second.variant_planners = [first.variant_planners[0], *second.variant_planners]
    await service.prepare_database()
    assert fake_maxroll.count(PROFILE_PREFIX + first.variant_planners[0]) == 1
    assert index.rows() == expected_rows(fake_maxroll.site)


async def test_failure_mid_guide_rolls_back_that_guide_only(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """A write that fails half-way leaves the guide's previous rows; other guides still sync."""
    await service.prepare_database()
    site = fake_maxroll.site
    before = index.rows()
    bad, good = site.guides[1], site.guides[3]
    # A real mid-transaction failure: the guide row and builds are written, then a usage
    # insert aborts.
    index.execute(*BOOM_TRIGGER[index.dialect])
    for guide in (bad, good):
        touch_guide(guide)
        site.planners[guide.variant_planners[0]].profiles.append(
            {"name": "New", "class": guide.class_name, "items": {"head": {"id": "Boom_Item"}}}
            if guide is bad
            else {"name": "New", "class": guide.class_name, "items": {"head": {"id": "Fine_Item"}}}
        )
    summary = await service.prepare_database()
    assert summary.guides_failed == 1
    assert summary.failures[0].url == bad.permalink
    assert "injected failure" in summary.failures[0].error
    assert summary.guides_processed == 1
    after = index.rows()
    for table in after:
        bad_before = {row for row in before[table] if row[0] in (bad.guide_id, bad.permalink)}
        bad_after = {row for row in after[table] if row[0] in (bad.guide_id, bad.permalink)}
        assert bad_before == bad_after
    assert (good.guide_id, good.variant_planners[0], 3, "New", good.class_name) in after["builds"]


async def test_404_planner_beside_good_ones_keeps_its_rows_and_is_listed(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """A planner gone (404) is a problem of the guide, not a failure: the other planners' rows
    are updated, the gone planner's rows kept, and the guide is read again on the next sync."""
    await service.prepare_database()
    site = fake_maxroll.site
    guide = site.guides[0]
    touch_guide(guide)
    gone = guide.variant_planners[1]
    gone_builds = {row for row in index.rows()["builds"] if row[:2] == (guide.guide_id, gone)}
    site.planners.pop(gone)
    kept = site.planners[guide.variant_planners[0]]
    kept.profiles[0]["name"] = "Renamed"
    summary = await service.prepare_database()
    assert (summary.guides_failed, summary.guides_processed) == (0, 1)
    assert summary.failure_reason() is None
    assert summary.problems == 1
    [problem] = summary.warnings
    assert (problem.where, problem.transient) == (guide.permalink, False)
    assert "404" in problem.error
    builds = index.rows()["builds"]
    assert gone_builds <= builds
    assert (guide.guide_id, guide.variant_planners[0], 0, "Renamed", guide.class_name) in builds
    fake_maxroll.reset_log()
    again = await service.prepare_database()
    assert again.problems == 1  # not marked checked: read again, still a problem
    assert fake_maxroll.count(GUIDE_PREFIX + guide.slug) == 1


async def test_unknown_item_ids_become_placeholders(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """An id missing from the catalog is kept as a usage of a placeholder item and counted."""
    site = fake_maxroll.site
    site.planners[site.guides[0].variant_planners[0]].profiles[0]["items"]["neck"] = {
        "id": "Mystery_Item_p9"
    }
    summary = await service.prepare_database()
    assert summary.unknown_items == 1
    [item] = index.query("SELECT * FROM items WHERE id = 'Mystery_Item_p9'")
    usages = index.query("SELECT slot, context FROM item_usages WHERE item_id = 'Mystery_Item_p9'")
    assert item == ("Mystery_Item_p9", "Mystery_Item_p9", None, "unknown", None)
    assert usages == [("neck", "main")]


async def test_search_outage_falls_back_to_the_cached_list(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """With the search API down, the last cached list is used and nothing is removed."""
    await service.prepare_database()
    before = index.dump()
    fake_maxroll.fail("/indexes/wp_posts_1/search", *[Fault(status=503)] * 10)
    summary = await service.prepare_database()
    assert summary.guide_list_source == "cache"
    assert summary.guides_skipped == len(fake_maxroll.site.guides)
    assert index.dump() == before


async def test_force_refresh_refetches_everything_unconditionally(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """force_refresh reads every page and profile again, with full downloads, changing nothing."""
    await service.prepare_database()
    before = index.rows()
    fake_maxroll.reset_log()
    summary = await service.prepare_database(force_refresh=True)
    assert fake_maxroll.count(GUIDE_PREFIX, status=200) == len(fake_maxroll.site.guides)
    assert fake_maxroll.count(PROFILE_PREFIX, status=304) == 0
    assert summary.builds_created == summary.usages_created == 0
    assert index.rows() == before


async def test_sync_refuses_to_start_without_a_token(
    tmp_path: Path, live_container: Container
) -> None:
    """No bearer token: a ConfigError before any request."""
    config = make_config(tmp_path)
    service = BuildGuideService(
        await resolve(live_container.maxroll_gateway),
        await resolve(live_container.index_repository),
        config.maxroll,
        config.cache,
    )
    with pytest.raises(ConfigError, match="bearer_token"):
        await service.prepare_database()


def test_resolved_items_share_the_catalogs_records_except_aliases() -> None:
    """An id the catalog holds resolves to its own record (no copy per guide); an alias or an
    unknown id gets a record under the id the profile used."""
    helm = CatalogItem("Helm", "A Helm", "head", "legendary")
    catalog = ItemCatalog({"Helm": helm}, {"Old_Helm": "Helm"})
    usages = tuple(ItemUsage(item, "head", "main") for item in ("Helm", "Old_Helm", "Nope"))
    build = BuildRecord("1", 0, "x", None, usages)
    resolved, unknown = BuildGuideService._resolve_items([build], catalog)
    assert resolved["Helm"] is helm
    assert resolved["Old_Helm"] == CatalogItem("Old_Helm", "A Helm", "head", "legendary")
    assert resolved["Nope"] == placeholder_item("Nope")
    assert unknown == 1
