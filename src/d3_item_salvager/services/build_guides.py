"""BuildGuideService: keep the index in step with the guides on Maxroll.

One sync: read the guide list (search API; the cached list only when the API is unreachable), skip
guides whose modified time is unchanged since their last successful sync, read each remaining
guide's planners and their profiles (each profile once per sync, however many guides share it),
resolve every item against the catalog, write each guide in its own transaction, and remove guides
that vanished from Maxroll. One guide failing never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from d3_item_salvager.config import CacheConfig, MaxrollConfig
from d3_item_salvager.data.repository import IndexRepository, placeholder_item
from d3_item_salvager.errors import (
    D3ItemSalvagerError,
    FetchError,
    IndexDatabaseError,
    MaxrollError,
    ParseError,
    TransientFetchError,
)
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, PlannerProfile
from d3_item_salvager.services.single_flight import SingleFlight

_log = get_logger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class GuideFailure:
    """A guide that did not sync, and why."""

    url: str
    error: str
    transient: bool


@dataclass(slots=True)
class SyncSummary:
    """What one sync did. Every count is a real change in the index."""

    guides_seen: int = 0
    guides_processed: int = 0
    guides_skipped: int = 0
    guides_failed: int = 0
    guides_removed: int = 0
    builds_created: int = 0
    builds_updated: int = 0
    builds_removed: int = 0
    items_upserted: int = 0
    unknown_items: int = 0
    usages_created: int = 0
    usages_removed: int = 0
    requests: int = 0
    not_modified: int = 0
    bytes_received: int = 0
    guide_list_source: str = "api"
    duration_seconds: float = 0.0
    failures: list[GuideFailure] = field(default_factory=list)

    @property
    def has_transient_failures(self) -> bool:
        return any(failure.transient for failure in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BuildGuideService:
    """Syncs the index with Maxroll; usable with or without the scheduler."""

    def __init__(
        self,
        gateway: MaxrollGateway,
        repository: IndexRepository,
        maxroll_config: MaxrollConfig,
        cache_config: CacheConfig,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._gateway = gateway
        self._repository = repository
        self._maxroll_config = maxroll_config
        self._cache_config = cache_config
        self._now = now

    async def fetch_guides(self, force_refresh: bool = False) -> list[GuideRecord]:
        """The guide list: from the cache while it is fresh, else from the search API."""
        if not force_refresh:
            max_age = self._cache_config.guide_list_ttl_minutes * 60
            cached = await self._gateway.cached_guide_list(max_age_seconds=max_age)
            if cached is not None:
                return cached
        return await self._gateway.refresh_guide_list()

    async def prepare_database(
        self, force_refresh: bool = False, progress: Progress | None = None
    ) -> SyncSummary:
        """Sync the index with Maxroll and report what changed.

        Raises:
            ConfigError: no bearer token is configured.
            FetchError, ParseError: neither the search API nor a cached guide list is available,
                or the item catalog cannot be had.
        """
        started = time.monotonic()
        self._maxroll_config.require_bearer_token()
        stats_before = self._gateway.client.stats.snapshot()
        summary = SyncSummary()

        guides = await self._current_guides(summary)
        summary.guides_seen = len(guides)
        stored = await self._repository.stored_guides()
        todo = [
            guide
            for guide in guides
            if force_refresh
            or guide.guide_id not in stored
            or stored[guide.guide_id].modified_unix != guide.modified_unix
            or stored[guide.guide_id].url != guide.url
        ]
        summary.guides_skipped = len(guides) - len(todo)

        # The whole catalog is in the index (for "what does no build use"): a new data.json
        # reaches `items` on the next sync even when no guide changed.
        catalog = await self._gateway.item_catalog()
        summary.items_upserted += await self._repository.sync_catalog(catalog)
        if todo:
            await self._sync_guides(todo, catalog, summary, force_refresh, progress)

        await self._remove_vanished(guides, stored, summary)
        stats = self._gateway.client.stats
        summary.requests = stats.requests - stats_before.requests
        summary.not_modified = stats.not_modified - stats_before.not_modified
        summary.bytes_received = stats.bytes_received - stats_before.bytes_received
        summary.duration_seconds = round(time.monotonic() - started, 3)
        return summary

    # Steps

    async def _current_guides(self, summary: SyncSummary) -> list[GuideRecord]:
        try:
            return await self._gateway.refresh_guide_list()
        except (FetchError, ParseError) as exc:
            cached = await self._gateway.cached_guide_list(max_age_seconds=None)
            if cached is None:
                raise
            _log.warning(
                "guide search failed; using the cached guide list", extra={"error": str(exc)}
            )
            summary.guide_list_source = "cache"
            return cached

    async def _sync_guides(
        self,
        todo: list[GuideRecord],
        catalog: ItemCatalog,
        summary: SyncSummary,
        force_refresh: bool,
        progress: Progress | None,
    ) -> None:
        profiles: SingleFlight[str, PlannerProfile] = SingleFlight(
            lambda planner_id: self._gateway.planner_profile(
                planner_id, conditional=not force_refresh
            )
        )
        # Fetching runs concurrently (the client caps requests in flight); writes are serialised
        # because SQLite has one writer, and queueing here is cheaper than its busy timeout.
        write_lock = anyio.Lock()
        guide_slots = anyio.Semaphore(self._maxroll_config.max_concurrency * 2)
        done = 0

        async def sync_one(guide: GuideRecord) -> None:
            nonlocal done
            async with guide_slots:
                try:
                    builds = await self._read_guide(guide, profiles, force_refresh)
                    resolved, unknown = self._resolve_items(builds, catalog)
                    async with write_lock:
                        changes = await self._repository.write_guide(
                            guide, builds, resolved, self._now()
                        )
                except (MaxrollError, IndexDatabaseError, D3ItemSalvagerError) as exc:
                    summary.guides_failed += 1
                    summary.failures.append(
                        GuideFailure(guide.url, str(exc), isinstance(exc, TransientFetchError))
                    )
                    _log.warning("guide failed", extra={"guide": guide.url, "error": str(exc)})
                else:
                    summary.guides_processed += 1
                    summary.unknown_items += unknown
                    summary.builds_created += changes.builds_created
                    summary.builds_updated += changes.builds_updated
                    summary.builds_removed += changes.builds_removed
                    summary.items_upserted += changes.items_upserted
                    summary.usages_created += changes.usages_created
                    summary.usages_removed += changes.usages_removed
                done += 1
                if progress is not None:
                    progress(done, len(todo))

        async with anyio.create_task_group() as group:
            for guide in todo:
                group.start_soon(sync_one, guide)

    async def _read_guide(
        self,
        guide: GuideRecord,
        profiles: SingleFlight[str, PlannerProfile],
        force_refresh: bool,
    ) -> list[BuildRecord]:
        planners = await self._gateway.guide_planners(guide, conditional=not force_refresh)
        builds: list[BuildRecord] = []
        for planner_id in planners.planner_ids:
            profile = await profiles.get(planner_id)
            builds.extend(profile.builds)
        return builds

    @staticmethod
    def _resolve_items(
        builds: list[BuildRecord], catalog: ItemCatalog
    ) -> tuple[dict[str, CatalogItem], int]:
        """Catalog records for every used id; unknown ids get a placeholder and are counted."""
        resolved: dict[str, CatalogItem] = {}
        unknown = 0
        for build in builds:
            for usage in build.usages:
                if usage.item_id in resolved:
                    continue
                record = catalog.get(usage.item_id)
                if record is None:
                    unknown += 1
                    record = placeholder_item(usage.item_id)
                # Key on the id the profile used: an alias resolves to its item's details.
                resolved[usage.item_id] = CatalogItem(
                    usage.item_id, record.name, record.slot, record.quality, record.set_name
                )
        return resolved, unknown

    async def _remove_vanished(
        self, guides: list[GuideRecord], stored: dict[int, Any], summary: SyncSummary
    ) -> None:
        listed = {guide.guide_id for guide in guides}
        vanished = [guide_id for guide_id in stored if guide_id not in listed]
        if not vanished:
            return
        if not guides:
            # An empty list is far likelier a broken search than Maxroll deleting every guide.
            _log.warning(
                "the guide list is empty; keeping the stored guides",
                extra={"stored": len(stored)},
            )
            return
        removed = await self._repository.remove_guides(vanished)
        summary.guides_removed = removed.guides
        summary.builds_removed += removed.builds
        summary.usages_removed += removed.usages
        _log.info("removed guides that vanished from Maxroll", extra={"guides": removed.guides})
