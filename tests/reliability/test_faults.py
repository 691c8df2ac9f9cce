"""Syncs under injected faults: transient ones change nothing, permanent ones stay contained."""

from __future__ import annotations

from pathlib import Path

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.services.build_guides import BuildGuideService, SyncSummary
from d3_item_salvager.testing.fake_maxroll import (
    GUIDE_PREFIX,
    PROFILE_PREFIX,
    FakeMaxroll,
    Fault,
    RandomTransientFaults,
    serve,
)
from d3_item_salvager.testing.fake_site import build_site
from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows, touch_guide
from tests.index_reader import IndexReader


async def sync(config: AppConfig, force_refresh: bool = False) -> SyncSummary:
    async with open_container(config) as container:
        service: BuildGuideService = await resolve(container.build_guide_service)
        return await service.prepare_database(force_refresh)


def index_file(config: AppConfig) -> Path:
    path = config.database.sqlite_path
    assert path is not None
    return path


@pytest.mark.slow
async def test_thirty_percent_transient_faults_give_the_clean_index(tmp_path: Path) -> None:
    """A full sync with 30% of requests failing transiently ends exactly as a clean sync."""
    site = build_site(12, planners_per_guide=3)
    with serve(site) as clean:
        clean_config = make_config(tmp_path / "clean", maxroll=clean.config_values())
        clean_summary = await sync(clean_config)
    faults = RandomTransientFaults(0.3, seed=11)
    with serve(site, fault_hook=faults) as faulty:
        config = make_config(tmp_path / "faulty", maxroll=faulty.config_values())
        summary = await sync(config)
    assert faults.total >= 10
    assert summary.guides_failed == 0
    assert summary.guides_processed == clean_summary.guides_processed == 12
    assert summary.requests == clean_summary.requests + faults.total
    assert stored_rows(index_file(config)) == expected_rows(site)
    assert stored_rows(index_file(config)) == stored_rows(index_file(clean_config))


@pytest.mark.parametrize(
    ("where", "fault", "error"),
    [
        ("page", Fault(body=b""), "the page is empty"),
        ("page", Fault(body=b"<html><body><p>maintenance</p></body></html>"), "no gear planner"),
        ("profile", Fault(body=b"{not json"), "invalid JSON"),
        ("profile", Fault(body=b'{"id": "1", "data": "{[oops"}'), "'data' field is not JSON"),
        ("profile", Fault(body=b""), "the body is empty"),
        ("profile", Fault(status=404), "404 Not Found"),
        ("page", Fault(status=410), "HTTP 410"),
    ],
)
async def test_permanent_faults_fail_one_guide_and_keep_its_rows(
    any_backend_config: AppConfig,
    index: IndexReader,
    fake_maxroll: FakeMaxroll,
    where: str,
    fault: Fault,
    error: str,
) -> None:
    """A broken page fails its guide, a broken profile is a problem of it; rows are kept."""
    await sync(any_backend_config)
    site = fake_maxroll.site
    before = index.rows()
    broken, fine = site.guides[1], site.guides[2]
    touch_guide(broken)
    touch_guide(fine)
    site.planners[fine.variant_planners[0]].profiles[0]["name"] = "Renamed"
    path = (
        GUIDE_PREFIX + broken.slug
        if where == "page"
        else PROFILE_PREFIX + broken.variant_planners[0]
    )
    fake_maxroll.fail(path, fault)
    summary = await sync(any_backend_config)
    after = index.rows()
    if where == "page":
        assert (summary.guides_failed, summary.guides_processed) == (1, 1)
        assert summary.failures[0].url == broken.permalink
        assert error in summary.failures[0].error
        kept = {b for b in before["builds"] if b[0] == broken.guide_id}
        [(modified,)] = index.query(
            "SELECT modified_unix FROM guides WHERE id = :id", id=broken.guide_id
        )
        assert modified == broken.modified_unix - 100  # still the last good sync's time
    else:
        # One broken planner is a problem of the guide: its rows are kept, the guide's other
        # planners sync, and the guide stays unchecked so the next sync reads it again.
        assert (summary.guides_failed, summary.guides_processed) == (0, 2)
        assert summary.warnings[0].where == broken.permalink
        assert error in summary.warnings[0].error
        kept = {
            b for b in before["builds"] if b[:2] == (broken.guide_id, path[len(PROFILE_PREFIX) :])
        }
        [(checked,)] = index.query(
            "SELECT last_checked_at FROM guides WHERE id = :id", id=broken.guide_id
        )
        assert checked is None
    assert summary.failure_reason() is None
    assert not summary.has_transient_failures
    assert kept <= after["builds"]
    assert (fine.guide_id, fine.variant_planners[0], 0, "Renamed", fine.class_name) in after[
        "builds"
    ]


async def test_transient_failure_after_retries_is_marked_transient(
    live_config: AppConfig, fake_maxroll: FakeMaxroll
) -> None:
    """A guide whose page keeps failing with 503 fails as transient, so the job retries."""
    guide = fake_maxroll.site.guides[0]
    fake_maxroll.fail(GUIDE_PREFIX + guide.slug, *[Fault(status=503)] * 10)
    summary = await sync(live_config)
    assert summary.guides_failed == 1
    assert summary.has_transient_failures
    assert summary.guides_processed == len(fake_maxroll.site.guides) - 1
