"""Services: the application's use cases, built on the Maxroll gateway and the index."""

from __future__ import annotations

from d3_item_salvager.services.build_guides import BuildGuideService, GuideFailure, SyncSummary
from d3_item_salvager.services.cache_refresh import CacheRefreshService, CacheRefreshSummary
from d3_item_salvager.services.log_housekeeping import LogCleanupSummary, LogHousekeepingService

__all__ = [
    "BuildGuideService",
    "CacheRefreshService",
    "CacheRefreshSummary",
    "GuideFailure",
    "LogCleanupSummary",
    "LogHousekeepingService",
    "SyncSummary",
]
