"""Refresh the on-disk caches (guide list and item catalog) without touching the index."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from d3_item_salvager.maxroll.gateway import MaxrollGateway


@dataclass(frozen=True, slots=True)
class CacheRefreshSummary:
    """What a cache refresh fetched."""

    guides: int
    guide_list_complete: bool  # False: the listing was not whole and the cached list was kept
    catalog_items: int
    requests: int
    not_modified: int
    duration_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CacheRefreshService:
    """Keeps the guide list and item catalog caches fresh between syncs."""

    def __init__(self, gateway: MaxrollGateway) -> None:
        self._gateway = gateway

    async def refresh(self) -> CacheRefreshSummary:
        """Re-read the guide list and revalidate the item catalog (a 304 when unchanged).

        A failure leaves the previous caches in place and is raised to the caller; a listing
        that is not whole is reported and does not replace the cached list.
        """
        started = time.monotonic()
        before = self._gateway.client.stats.snapshot()
        listing = await self._gateway.refresh_guide_list()
        catalog = await self._gateway.item_catalog(revalidate=True)
        stats = self._gateway.client.stats
        return CacheRefreshSummary(
            guides=len(listing.guides),
            guide_list_complete=listing.complete,
            catalog_items=len(catalog),
            requests=stats.requests - before.requests,
            not_modified=stats.not_modified - before.not_modified,
            duration_seconds=round(time.monotonic() - started, 3),
        )
