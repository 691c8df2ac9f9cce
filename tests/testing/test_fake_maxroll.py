"""The shipped FakeMaxroll: real HTTP, content a test can change, counts, faults and a config."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from d3_item_salvager.data import IndexQueries
from d3_item_salvager.errors import IndexDatabaseError
from d3_item_salvager.testing import FakeMaxroll, Fault
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    ITEM_DATA_PATH,
    PROFILE_PREFIX,
    SEARCH_PATH,
)
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.index_expectations import expected_rows, stored_rows


def assert_index_matches(
    database: Path, maxroll: FakeMaxroll
) -> dict[str, set[tuple[object, ...]]]:
    """The index holds the site's guides, builds and usages (items of removed guides may stay)."""
    stored, expected = stored_rows(database), expected_rows(maxroll.site)
    for table in ("guides", "builds", "item_usages"):
        assert stored[table] == expected[table], table
    assert expected["items"] <= stored["items"]
    return stored


async def test_serves_the_maxroll_endpoints_with_token_paging_and_etags() -> None:
    """Search needs the bearer token and pages; guides, profiles and data.json answer 304s."""
    async with FakeMaxroll() as maxroll, httpx.AsyncClient(base_url=maxroll.base_url) as client:
        assert (await client.post(SEARCH_PATH, json={})).status_code == 401
        auth = {"authorization": f"Bearer {maxroll.token}"}
        pages = [
            (await client.post(SEARCH_PATH, json={"offset": offset, "limit": 4}, headers=auth))
            for offset in (0, 4)
        ]
        hits = [hit["id"] for page in pages for hit in page.json()["hits"]]
        assert len(hits) == len(set(hits)) == 8
        assert pages[0].json()["estimatedTotalHits"] >= len(maxroll.site.search_hits())

        guide = maxroll.site.guides[0]
        page = await client.get(GUIDE_PREFIX + guide.slug)
        assert 'id="variants-header">Variants' in page.text
        profile = await client.get(PROFILE_PREFIX + guide.variant_planners[0])
        assert profile.json()["id"] == guide.variant_planners[0]
        data = await client.get(ITEM_DATA_PATH)
        unchanged = await client.get(
            ITEM_DATA_PATH, headers={"if-none-match": data.headers["etag"]}
        )
        assert (data.status_code, unchanged.status_code) == (200, 304)
        assert (await client.get(GUIDE_PREFIX + "no-such-guide")).status_code == 404
        assert maxroll.counts() == {"search": 3, "guide": 2, "profile": 1, "data": 2}


def test_serves_in_a_plain_with_block_and_stops_after_it() -> None:
    """The sync form serves too, and the port is closed once the block ends."""
    with FakeMaxroll() as maxroll:
        url = maxroll.base_url + ITEM_DATA_PATH
        assert httpx.get(url).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_config_points_at_the_fake_and_keeps_files_under_home(tmp_path: Path) -> None:
    """config() aims every Maxroll URL at the fake and roots every file at the given folder."""
    with FakeMaxroll() as maxroll:
        config = maxroll.config(tmp_path, maxroll={"max_concurrency": 2})
    assert config.maxroll.search_url == maxroll.base_url + SEARCH_PATH
    assert config.maxroll.require_bearer_token() == maxroll.token
    assert config.maxroll.max_concurrency == 2
    assert config.maxroll.retry_initial_backoff_seconds == 0
    assert config.database.sqlite_path is not None
    for path in (config.database.sqlite_path, config.cache.dir, config.logging.dir):
        assert path.is_relative_to(tmp_path)
    assert config.scheduler.job_store_path.is_relative_to(tmp_path)


async def test_a_test_changes_the_site_and_the_next_sync_follows(tmp_path: Path) -> None:
    """Added, edited and removed guides, edited profiles and renamed items reach the index."""
    async with FakeMaxroll() as maxroll:
        config = maxroll.config(tmp_path)
        database = config.database.sqlite_path
        assert database is not None
        async with WorkerRuntime(config, run_scheduler=False) as runtime:
            assert (await runtime.run_job("scrape_guides")).succeeded
            assert stored_rows(database) == expected_rows(maxroll.site)

            added = maxroll.add_guide("monk", planners=2, title="Fresh Monk")
            gone = maxroll.remove_guide(maxroll.site.guides[0].slug)
            edited = maxroll.edit_guide(maxroll.site.guides[0].slug, title="Retitled")
            replanned = maxroll.site.guides[1]
            new_planner = maxroll.add_planner("crusader", profiles=2)
            maxroll.edit_guide(replanned.slug, variant_planners=[new_planner])
            assert (await runtime.run_job("scrape_guides")).succeeded
            stored = assert_index_matches(database, maxroll)
            titles = {row[0]: row[2] for row in stored["guides"]}
            assert titles[added.guide_id] == "Fresh Monk"
            assert titles[edited.guide_id] == "Retitled"
            assert gone.guide_id not in titles
            planners = {row[1] for row in stored["builds"] if row[0] == replanned.guide_id}
            assert planners == {new_planner}

            # Profile edits and item renames leave the guide's modified time alone, as on Maxroll.
            planner = edited.variant_planners[0]
            maxroll.set_profile_item(planner, 0, "head", "Unique_Helm_005_x1")
            maxroll.rename_item("Unique_Helm_005_x1", "Crown of Tests")
            # data.json is cached for cache.item_catalog_ttl_minutes; refresh_cache revalidates it.
            assert (await runtime.run_job("refresh_cache")).succeeded
            result = await runtime.run_job("scrape_guides", force_refresh=True)
            assert result.succeeded
            stored = assert_index_matches(database, maxroll)
            assert ("Unique_Helm_005_x1", "Crown of Tests") in {row[:2] for row in stored["items"]}


async def test_edits_name_what_is_missing() -> None:
    """Editing an unknown guide, planner, item or field fails with a clear error."""
    maxroll = FakeMaxroll()
    with pytest.raises(KeyError, match="no guide with slug 'nope'"):
        maxroll.edit_guide("nope", title="x")
    with pytest.raises(AttributeError, match="no field 'colour'"):
        maxroll.edit_guide(maxroll.site.guides[0].slug, colour="red")
    with pytest.raises(KeyError, match="no planner '1'"):
        maxroll.remove_planner("1")
    with pytest.raises(KeyError, match="no item 'Nope'"):
        maxroll.rename_item("Nope", "x")
    with pytest.raises(ValueError, match="unknown class"):
        maxroll.add_guide("bard")
    with pytest.raises(RuntimeError, match="before asking its config"):
        maxroll.config("/tmp/unused")


async def test_removed_planner_answers_404_and_queued_faults_are_counted() -> None:
    """remove_planner makes the profile URL 404; fail() injects one fault per request."""
    async with FakeMaxroll() as maxroll, httpx.AsyncClient(base_url=maxroll.base_url) as client:
        planner = maxroll.site.guides[1].variant_planners[0]
        maxroll.remove_planner(planner)
        assert (await client.get(PROFILE_PREFIX + planner)).status_code == 404
        maxroll.fail(ITEM_DATA_PATH, Fault(status=503, retry_after="0"))
        assert (await client.get(ITEM_DATA_PATH)).status_code == 503
        assert (await client.get(ITEM_DATA_PATH)).status_code == 200
        assert maxroll.count(ITEM_DATA_PATH, status=503) == 1


def test_importing_the_kit_does_not_import_pytest() -> None:
    """Host apps may import d3_item_salvager.testing outside a test run."""
    code = "import sys, d3_item_salvager.testing; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_a_renamed_build_reaches_the_index_read_in_one_line(tmp_path: Path) -> None:
    """rename_build changes one profile's name; IndexQueries.open reads the index of a config."""
    async with FakeMaxroll() as maxroll:
        config = maxroll.config(tmp_path)
        with pytest.raises(IndexDatabaseError, match="no index database"):
            async with IndexQueries.open(config):
                pass
        guide = maxroll.site.guides[0]
        planner = guide.variant_planners[0]
        async with WorkerRuntime(config, burst=True) as runtime:
            assert (await runtime.run_job("scrape_guides")).succeeded
            maxroll.rename_build(planner, 1, "Speed Farming")
            assert guide.modified_unix == maxroll.site.guides[0].modified_unix
            assert (await runtime.run_job("scrape_guides", force_refresh=True)).succeeded
        async with IndexQueries.open(config) as queries:
            info = await queries.guide(guide.slug)
        names = {(b.planner_id, b.profile_index): b.name for b in info.builds}
        assert names[(planner, 1)] == "Speed Farming"
        assert names[(planner, 0)] == maxroll.site.planners[planner].profiles[0]["name"].strip()
        with pytest.raises(IndexError, match="no 9"):
            maxroll.rename_build(planner, 9, "x")
        with pytest.raises(KeyError, match="no planner 'nope'"):
            maxroll.rename_build("nope", 0, "x")


async def test_fail_matches_the_whole_target_with_its_query() -> None:
    """A queued fault hits only a request whose path and query equal the given path."""
    async with FakeMaxroll() as maxroll, httpx.AsyncClient(base_url=maxroll.base_url) as client:
        maxroll.fail(ITEM_DATA_PATH, Fault(status=500))
        maxroll.fail(ITEM_DATA_PATH + "?v=2", Fault(status=503))
        assert (await client.get(ITEM_DATA_PATH + "?v=1")).status_code == 404
        assert (await client.get(ITEM_DATA_PATH + "?v=2")).status_code == 503
        assert (await client.get(ITEM_DATA_PATH + "/")).status_code == 404
        assert (await client.get(ITEM_DATA_PATH)).status_code == 500
        assert (await client.get(ITEM_DATA_PATH)).status_code == 200
        assert maxroll.paths()[:2] == [ITEM_DATA_PATH + "?v=1", ITEM_DATA_PATH + "?v=2"]


async def test_the_tracker_is_readable_after_the_runtime_closed(tmp_path: Path) -> None:
    """After close the runs stay readable; waiting for a run that cannot come raises at once."""
    async with FakeMaxroll() as maxroll:
        async with WorkerRuntime(maxroll.config(tmp_path), burst=True) as runtime:
            run = await runtime.run_job("scrape_guides")
            pending = asyncio.create_task(runtime.wait_for_runs("scrape_guides", 2))
            await asyncio.sleep(0)  # a yield, not a wait: the task starts waiting before close
        assert runtime.tracker.runs() == [run]
        assert runtime.tracker.counts["scrape_guides"] == 1
        assert runtime.tracker.closed
        with anyio.fail_after(10):
            assert await runtime.wait_for_runs("scrape_guides", 1) == [run]
            with pytest.raises(RuntimeError, match="no more runs will finish"):
                await runtime.wait_for_runs("scrape_guides", 2)
            with pytest.raises(RuntimeError, match="no more runs will finish"):
                await pending
