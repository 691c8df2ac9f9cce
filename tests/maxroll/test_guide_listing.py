"""assemble_listing: when a listing read page by page is whole."""

from __future__ import annotations

from pathlib import Path

import anyio

from d3_item_salvager.maxroll.client import MaxrollClient
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.guide_listing import assemble_listing
from d3_item_salvager.maxroll.http import build_http_client
from d3_item_salvager.maxroll.search_parser import SearchPage
from d3_item_salvager.testing.fake_maxroll import serve
from d3_item_salvager.testing.fake_site import build_site
from tests.conftest import make_config


def pages(*hit_counts: int, estimate: int | None = None) -> dict[int, SearchPage]:
    return {
        number: SearchPage(guides=(), hit_count=count, estimated_total=estimate)
        for number, count in enumerate(hit_counts)
    }


def test_empty_pages_after_the_last_short_page_end_the_listing() -> None:
    """The estimate ran past a page boundary: the extra pages come back empty, nothing is lost."""
    listing = assemble_listing(pages(3, 3, 1, 0, 0, estimate=9), {}, page_size=3, max_pages=10)
    assert listing.complete


def test_a_short_or_empty_page_before_a_page_with_hits_is_a_gap() -> None:
    short = assemble_listing(pages(3, 2, 3, 1), {}, page_size=3, max_pages=10)
    empty = assemble_listing(pages(3, 0, 3, 1, 0), {}, page_size=3, max_pages=10)
    assert short.incomplete == ("search page 2 was short before the end of the listing",)
    assert empty.incomplete == ("search page 2 was short before the end of the listing",)


def test_a_full_page_at_the_cap_is_still_cut_short() -> None:
    listing = assemble_listing(pages(3, 3), {}, page_size=3, max_pages=2)
    assert listing.incomplete == ("the page cap (maxroll.search_max_pages = 2) was reached",)


async def test_an_estimate_past_a_page_boundary_still_gives_a_whole_listing(
    tmp_path: Path,
) -> None:
    """60 hits, 7 a page, about 67 announced: pages 1-8 full, 9 short, 10 asked for and empty."""
    site = build_site(30)
    with serve(site) as fake:
        config = make_config(tmp_path, maxroll=fake.config_values() | {"search_page_size": 7})
        async with build_http_client(config.maxroll) as http:
            gateway = MaxrollGateway(
                MaxrollClient(http, config.maxroll),
                config.maxroll,
                config.cache,
                anyio.CapacityLimiter(2),
            )
            listing = await gateway.search_guides()
        assert fake.count("/indexes") == 10
    assert listing.incomplete == ()
    assert [g.url for g in listing.guides] == [g.permalink for g in site.guides]
