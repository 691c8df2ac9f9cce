"""BuildGuideService: keep the index in step with the guides on Maxroll.

One sync: read the guide listing (search API; the cached list only when the API is unreachable
for transient reasons, and only up to GUIDE_LIST_FALLBACK_MAX_AGE_HOURS old), pick the guides to
read (new, modified, or last checked longer ago than `cache.revalidate_after_minutes`), read each
one's planners and their profiles with conditional requests (each profile once per sync, however
many guides share it; a stored guide sharing a profile that changed is re-read too, so every
guide reflects one version), resolve every item against the catalog, write each guide in its own
transaction (on SQLite, a savepoint in a group commit), and, only from a whole listing, remove guides that vanished and prune the cache.
One guide or planner failing never stops the others; see sync_summary.py for the outcome policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio

from d3_item_salvager.config import CacheConfig, MaxrollConfig
from d3_item_salvager.data.repository import IndexRepository, StoredGuide, placeholder_item
from d3_item_salvager.errors import (
    D3ItemSalvagerError,
    IndexLockedError,
    MaxrollError,
    ParseError,
    TransientFetchError,
)
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from d3_item_salvager.maxroll.guide_listing import GuideListing
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, PlannerProfile
from d3_item_salvager.services.single_flight import SingleFlight
from d3_item_salvager.services.sync_summary import GuideFailure, Problem, SyncSummary

__all__ = [
    "GUIDE_LIST_FALLBACK_MAX_AGE_HOURS",
    "BuildGuideService",
    "GuideFailure",
    "Problem",
    "SyncSummary",
]

_log = get_logger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class _LoadedProfile:
    """A profile read in this sync, whether it changed, and whether the cache holds this copy."""

    profile: PlannerProfile
    changed: bool
    cached: bool


# A profile no guide in flight holds is forgotten (its fingerprint and changed flag are kept) and
# read back from the document cache if another guide asks for it later in the same sync.
_Forgotten = tuple[int, bool]
Profiles = SingleFlight[str, _LoadedProfile, _Forgotten]

# The cached guide list stands in for an unreachable search only while younger than this: a
# three-day-old list still names nearly every guide, and nothing is removed while it is used.
GUIDE_LIST_FALLBACK_MAX_AGE_HOURS = 72.0


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

    async def prepare_database(
        self, force_refresh: bool = False, progress: Progress | None = None
    ) -> SyncSummary:
        """Sync the index with Maxroll and report what changed.

        Raises:
            ConfigError: no bearer token is configured.
            TokenRefusedError: the search refused the bearer token.
            FetchError, ParseError: no usable guide listing (the search failed with no recent
                cached list, or listed no guide), or the item catalog cannot be had.
        """
        # The cached documents' validators are read once for the sync, not once per document.
        async with self._gateway.sync_session():
            return await self._prepare_database(force_refresh, progress)

    async def _prepare_database(
        self, force_refresh: bool, progress: Progress | None
    ) -> SyncSummary:
        started = time.monotonic()
        self._maxroll_config.require_bearer_token()
        stats_before = self._gateway.client.stats.snapshot()
        cache_failures_before = self._gateway.cache_write_failures
        summary = SyncSummary()

        listing = await self._current_listing(summary)
        guides = listing.guides
        summary.guides_seen = len(guides)
        stored = await self._repository.stored_guides()
        now = self._now()
        todo = [g for g in guides if force_refresh or self._due(g, stored.get(g.guide_id), now)]
        summary.guides_revalidated = sum(
            1
            for g in todo
            if g.guide_id in stored
            and (stored[g.guide_id].modified_unix, stored[g.guide_id].url)
            == (g.modified_unix, g.url)
        )

        # The whole catalog is in the index (for "what does no build use"): a new data.json
        # reaches `items` on the next sync even when no guide changed.
        # `force_refresh` refetches every document, the catalog too, however fresh its cache.
        catalog = await self._gateway.item_catalog(force_refresh=force_refresh)
        try:
            summary.items_upserted += await self._repository.sync_catalog(catalog)
        except IndexLockedError as exc:
            # Transient: the guides are still tried (they may find the lock gone) and a retry
            # run follows.
            summary.warn("item catalog", str(exc), transient=True)
        if todo:
            profiles = self._profiles_of_this_sync(conditional=not force_refresh)
            read = {guide.guide_id for guide in todo}
            conditional = not force_refresh
            changed = await self._sync_guides(
                todo, catalog, profiles, summary, progress, conditional
            )
            # A stored guide whose profile changed under another guide is re-read now, so that
            # every guide sharing the profile shows the same version of it. When this sync read
            # every stored guide (a first or a full sync) none can lag behind, and the query (an
            # IN list of every planner, tens of ms on the loop at 3,000 guides) is skipped.
            unread = any(guide_id not in read for guide_id in stored)
            sharing = await self._repository.guides_using_planners(changed) if unread else set()
            followers = [g for g in guides if g.guide_id in sharing and g.guide_id not in read]
            if followers:
                await self._sync_guides(
                    followers, catalog, profiles, summary, progress, conditional
                )
        summary.guides_skipped = (
            summary.guides_seen - summary.guides_processed - summary.guides_failed
        )

        if listing.complete:
            await self._remove_vanished(guides, stored, summary)
            await self._prune_cache(guides, summary)
        cache_failures = self._gateway.cache_write_failures - cache_failures_before
        if cache_failures:
            summary.warn(
                "document cache",
                f"{cache_failures} document(s) could not be cached "
                f"(last: {self._gateway.last_cache_error})",
            )
        stats = self._gateway.client.stats
        summary.requests = stats.requests - stats_before.requests
        summary.not_modified = stats.not_modified - stats_before.not_modified
        summary.bytes_received = stats.bytes_received - stats_before.bytes_received
        summary.duration_seconds = round(time.monotonic() - started, 3)
        return summary

    # Steps

    def _profiles_of_this_sync(self, *, conditional: bool) -> Profiles:
        """Each profile read once per sync, kept in memory only while a guide in flight uses it.

        A profile forgotten in between is read back from the document cache, never asked of
        Maxroll again, so every guide sharing it sees the one version this sync read. It is
        kept whole when its cached copy may not be that version (a cache write failed meanwhile).
        """
        gateway = self._gateway

        async def load(planner_id: str) -> _LoadedProfile:
            failures = gateway.cache_write_failures
            profile, changed = await gateway.planner_profile_update(
                planner_id, conditional=conditional
            )
            # Conservative: any cache write failure meanwhile (ours or another's) keeps it whole.
            return _LoadedProfile(profile, changed, gateway.cache_write_failures == failures)

        def forget(loaded: _LoadedProfile) -> _Forgotten | None:
            return (hash(loaded.profile), loaded.changed) if loaded.cached else None

        async def restore(planner_id: str, forgotten: _Forgotten) -> _LoadedProfile | None:
            fingerprint, changed = forgotten
            profile = await gateway.cached_planner_profile(planner_id)
            if profile is None or hash(profile) != fingerprint:
                _log.warning(
                    "the cached profile is gone or changed since this sync read it; reading it again",
                    extra={"planner": planner_id},
                )
                return None
            return _LoadedProfile(profile, changed, cached=True)

        return SingleFlight(load, forget=forget, restore=restore)

    def _due(self, guide: GuideRecord, stored: StoredGuide | None, now: datetime) -> bool:
        """A guide is read when new, modified, moved, or not checked within the window."""
        if stored is None or (stored.modified_unix, stored.url) != (guide.modified_unix, guide.url):
            return True
        if stored.last_checked_at is None:
            return True
        window = timedelta(minutes=self._cache_config.revalidate_after_minutes)
        return now - stored.last_checked_at >= window

    async def _current_listing(self, summary: SyncSummary) -> GuideListing:
        try:
            listing = await self._gateway.refresh_guide_list()
        except TransientFetchError as exc:
            max_age = GUIDE_LIST_FALLBACK_MAX_AGE_HOURS * 3600
            cached = await self._gateway.cached_guide_list(max_age_seconds=max_age)
            if cached is None:
                raise
            summary.guide_list_source = "cache"
            summary.guide_list_complete = False
            summary.warn(
                "guide listing", f"search unreachable, cached list used: {exc}", transient=True
            )
            return GuideListing(tuple(cached), ("the cached list stands in for the search",))
        summary.hits_refused = listing.hits_refused
        if not listing.guides:
            raise ParseError(
                "the guide search", "it listed no build guide (an empty listing is never trusted)"
            )
        if not listing.complete:
            summary.guide_list_complete = False
            summary.warn(
                "guide listing",
                "incomplete, so no guide was removed and the cached list was kept: "
                + "; ".join(listing.incomplete),
            )
        return listing

    async def _sync_guides(
        self,
        todo: list[GuideRecord],
        catalog: ItemCatalog,
        profiles: Profiles,
        summary: SyncSummary,
        progress: Progress | None,
        conditional: bool,
    ) -> set[str]:
        """Read and write `todo`; returns the planners whose profile changed."""
        # Fetching runs concurrently (the client caps requests in flight); the repository
        # serialises writes (SQLite has one writer; its writer commits queued guides together).
        changed: set[str] = set()
        done = 0

        async def sync_one(guide: GuideRecord) -> None:
            nonlocal done
            held: list[str] = []  # the profiles this guide holds until it is written
            try:
                builds, missing = await self._read_guide(
                    guide, profiles, summary, changed, conditional, held
                )
                resolved, unknown = self._resolve_items(builds, catalog)
                changes = await self._repository.write_guide(
                    guide, builds, resolved, self._now(), kept_planners=missing
                )
            except (MaxrollError, D3ItemSalvagerError) as exc:
                transient = isinstance(exc, TransientFetchError | IndexLockedError)
                summary.fail_guide(guide.url, str(exc), transient=transient)
            else:
                summary.guides_processed += 1
                summary.unknown_items += unknown
                summary.builds_created += changes.builds_created
                summary.builds_updated += changes.builds_updated
                summary.builds_removed += changes.builds_removed
                summary.items_upserted += changes.items_upserted
                summary.usages_created += changes.usages_created
                summary.usages_removed += changes.usages_removed
            finally:
                for planner_id in held:
                    profiles.release(planner_id)
            done += 1
            if progress is not None:
                progress(done, len(todo))

        # A fixed number of workers take the guides in turn, so only that many guides (their
        # pages, profiles and rows) are in memory at once, however long the listing.
        queue = iter(todo)

        async def worker() -> None:
            for guide in queue:
                await sync_one(guide)

        async with anyio.create_task_group() as group:
            for _ in range(min(self._maxroll_config.max_concurrency * 2, len(todo))):
                group.start_soon(worker)
        return changed

    async def _read_guide(
        self,
        guide: GuideRecord,
        profiles: Profiles,
        summary: SyncSummary,
        changed: set[str],
        conditional: bool,
        held: list[str],
    ) -> tuple[list[BuildRecord], set[str]]:
        """The builds of every planner that loaded, and the planners that did not.

        A planner that fails (404, broken, unreachable) is listed as a problem and its stored
        builds are kept; the guide fails only when none of its planners loaded. Every profile
        asked for (loaded or failed) is appended to `held`, for the caller to release.
        """
        planners = await self._gateway.guide_planners(guide, conditional=conditional)
        builds: list[BuildRecord] = []
        missing: set[str] = set()
        errors: list[MaxrollError] = []
        for planner_id in planners.planner_ids:
            try:
                loaded = await profiles.get(planner_id)
            except Exception as exc:
                held.append(planner_id)  # an error is held like a value
                if not isinstance(exc, MaxrollError):
                    raise
                missing.add(planner_id)
                errors.append(exc)
                continue
            held.append(planner_id)
            if loaded.changed:
                changed.add(planner_id)
            builds.extend(loaded.profile.builds)
        if errors and len(missing) == len(planners.planner_ids):
            raise errors[0]
        for error in errors:
            summary.warn(guide.url, str(error), transient=isinstance(error, TransientFetchError))
        return builds, missing

    @staticmethod
    def _resolve_items(
        builds: list[BuildRecord], catalog: ItemCatalog
    ) -> tuple[dict[str, CatalogItem], int]:
        """Catalog records for every used id; unknown ids get a placeholder and are counted."""
        resolved: dict[str, CatalogItem] = {}
        unknown = 0
        # Each distinct id once (a guide's ~170 usages name far fewer items), in first-use order.
        used = dict.fromkeys(usage.item_id for build in builds for usage in build.usages)
        for item_id in used:
            record = catalog.get(item_id)
            if record is None:
                unknown += 1
                record = placeholder_item(item_id)
            # Key on the id the profile used: an alias resolves to its item's details. The
            # catalog's own record is shared when it has that id: a copy per guide would live
            # until the guide is written, surviving young collections for nothing.
            if record.item_id != item_id:
                record = CatalogItem(
                    item_id, record.name, record.slot, record.quality, record.set_name
                )
            resolved[item_id] = record
        return resolved, unknown

    async def _remove_vanished(
        self,
        guides: Collection[GuideRecord],
        stored: dict[int, StoredGuide],
        summary: SyncSummary,
    ) -> None:
        """Delete the guides a whole listing no longer names."""
        listed = {guide.guide_id for guide in guides}
        vanished = [guide_id for guide_id in stored if guide_id not in listed]
        if not vanished:
            return
        try:
            removed = await self._repository.remove_guides(vanished)
        except IndexLockedError as exc:
            summary.warn("removing vanished guides", str(exc), transient=True)
            return
        summary.guides_removed = removed.guides
        summary.builds_removed += removed.builds
        summary.usages_removed += removed.usages
        _log.info("removed guides that vanished from Maxroll", extra={"guides": removed.guides})

    async def _prune_cache(self, guides: Collection[GuideRecord], summary: SyncSummary) -> None:
        """Delete cached pages and profiles no listed guide refers to any more."""
        planners = await self._repository.planner_ids()
        summary.documents_pruned = await self._gateway.prune_documents(
            {guide.url for guide in guides}, planners
        )
