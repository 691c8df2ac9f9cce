"""The whole item catalog is in the index and follows data.json, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import Container, resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.services.cache_refresh import CacheRefreshService
from d3_item_salvager.testing.fake_maxroll import GUIDE_PREFIX, FakeMaxroll
from tests.index_expectations import expected_rows
from tests.index_reader import IndexReader


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    """Every test here runs with the index on SQLite and on PostgreSQL."""
    return any_backend_config


@pytest.fixture
async def service(live_container: Container) -> BuildGuideService:
    service: BuildGuideService = await resolve(live_container.build_guide_service)
    return service


async def test_every_catalog_item_is_in_the_index(
    service: BuildGuideService, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    """Used or not, every catalog item is stored with its name, slot, quality and set."""
    site = fake_maxroll.site
    site.catalog.append(
        {"id": "Unique_Helm_Unused_x1", "name": "Nobody's Hat", "type": "helm",
         "quality": "legendary"}
    )  # fmt: skip
    summary = await service.prepare_database()
    stored = {row[0]: row for row in index.query("SELECT id, name, slot, quality FROM items")}
    assert set(stored) == {record["id"] for record in site.catalog}
    assert stored["Unique_Helm_Unused_x1"] == (
        "Unique_Helm_Unused_x1", "Nobody's Hat", "head", "legendary"
    )  # fmt: skip
    assert index.rows()["items"] == expected_rows(site)["items"]
    assert summary.items_upserted == len(site.catalog)


async def test_a_catalog_change_reaches_the_index_without_a_guide_change(
    live_container: Container,
    service: BuildGuideService,
    fake_maxroll: FakeMaxroll,
    index: IndexReader,
) -> None:
    """A renamed and a new catalog item are written by the next sync; no guide is re-read."""
    await service.prepare_database()
    site = fake_maxroll.site
    used_id = min(str(row[3]) for row in expected_rows(site)["item_usages"])
    record = next(record for record in site.catalog if record["id"] == used_id)
    record["name"] = "Renamed Upstream"
    site.catalog.append(
        {"id": "Unique_Boots_New_x1", "name": "New Boots", "type": "boots", "quality": "set",
         "set": "synthset"}
    )  # fmt: skip
    # The cache refresh job revalidates data.json; the next sync applies what it brought.
    refresh: CacheRefreshService = await resolve(live_container.cache_refresh_service)
    await refresh.refresh()
    fake_maxroll.reset_log()
    unchanged = index.dump()
    summary = await service.prepare_database()
    assert summary.guides_processed == 0
    assert fake_maxroll.count(GUIDE_PREFIX) == 0
    assert summary.items_upserted == 2
    assert index.query("SELECT name FROM items WHERE id = :id", id=used_id) == [
        ("Renamed Upstream",)
    ]
    assert index.query("SELECT set_name FROM items WHERE id = 'Unique_Boots_New_x1'") == [
        ("Synthetic Battlegear",)
    ]
    assert index.rows() == expected_rows(site)
    assert index.dump() != unchanged
    # An unchanged catalog writes nothing.
    again = index.dump()
    assert (await service.prepare_database()).items_upserted == 0
    assert index.dump() == again


async def test_an_alias_row_follows_its_item(
    live_container: Container,
    service: BuildGuideService,
    fake_maxroll: FakeMaxroll,
    index: IndexReader,
) -> None:
    """An old id a profile still uses is stored with its item's details, renamed with it."""
    site = fake_maxroll.site
    site.catalog.append(
        {"id": "P4_Unique_Helm_Alias", "name": "Aliased Helm", "type": "helm",
         "quality": "legendary", "ids": ["Unique_Helm_Alias_x1"]}
    )  # fmt: skip
    first_planner = site.planners[site.guides[0].expected_planners()[0]]
    first_planner.profiles[0]["items"]["head"] = {"id": "Unique_Helm_Alias_x1"}
    await service.prepare_database()
    alias_row = "SELECT name, quality FROM items WHERE id = 'Unique_Helm_Alias_x1'"
    assert index.query(alias_row) == [("Aliased Helm", "legendary")]
    site.catalog[-1]["name"] = "Renamed Helm"
    refresh: CacheRefreshService = await resolve(live_container.cache_refresh_service)
    await refresh.refresh()
    summary = await service.prepare_database()
    assert summary.guides_processed == 0
    assert index.query(alias_row) == [("Renamed Helm", "legendary")]
    assert index.query("SELECT name FROM items WHERE id = 'P4_Unique_Helm_Alias'") == [
        ("Renamed Helm",)
    ]
