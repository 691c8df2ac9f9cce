"""The guide listing assembled from search pages, and whether it can be trusted as whole.

Only a whole listing may remove guides from the index or replace the cached list. A listing is
not whole when the page cap was reached, a page failed, a page short of the page size came before
the last page with hits, the hits fall short of what the search announced, or there are no hits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from d3_item_salvager.maxroll.models import GuideRecord
from d3_item_salvager.maxroll.search_parser import SearchPage


@dataclass(frozen=True, slots=True)
class GuideListing:
    """The guides a listing holds, and why it is not whole (empty when it is)."""

    guides: tuple[GuideRecord, ...]
    incomplete: tuple[str, ...] = ()
    hits_refused: int = 0

    @property
    def complete(self) -> bool:
        return not self.incomplete


def assemble_listing(
    pages: Mapping[int, SearchPage],
    failed: Mapping[int, str],
    *,
    page_size: int,
    max_pages: int,
) -> GuideListing:
    """Join the pages read (by page number) into one listing, judging whether it is whole.

    `failed` names the pages that could not be read, with the error. `estimatedTotalHits` is an
    estimate and Maxroll's runs a little high, so the hits may fall short of it by less than one
    page before the listing counts as cut short.
    """
    incomplete = [f"search page {number + 1} failed: {error}" for number, error in failed.items()]
    numbers = sorted(pages)
    last = numbers[-1] if numbers else None
    # The listing ends at its last page with hits. Pages asked for beyond it, because the
    # estimate ran past a page boundary, come back empty: that is the end, not a gap.
    end = max((number for number in numbers if pages[number].hit_count), default=None)
    for number in numbers:
        if end is not None and number < end and pages[number].hit_count < page_size:
            incomplete.append(f"search page {number + 1} was short before the end of the listing")
    if last is not None and pages[last].hit_count >= page_size and last + 1 >= max_pages:
        incomplete.append(f"the page cap (maxroll.search_max_pages = {max_pages}) was reached")
    hits = sum(page.hit_count for page in pages.values())
    announced = pages[numbers[0]].estimated_total if numbers and numbers[0] == 0 else None
    if announced is not None and hits < announced - page_size:
        incomplete.append(f"the search announced about {announced} hits but returned {hits}")
    if hits == 0 and not failed:
        incomplete.append("the search returned no hits")
    guides: dict[str, GuideRecord] = {}
    for number in numbers:
        for guide in pages[number].guides:
            guides.setdefault(guide.url, guide)
    return GuideListing(
        guides=tuple(guides.values()),
        incomplete=tuple(incomplete),
        hits_refused=sum(len(page.rejected) for page in pages.values()),
    )
