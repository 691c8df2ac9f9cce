"""Maxroll documents as domain records: fetch (conditionally), parse off the loop, cache on disk.

The gateway is what services use. It joins the client (requests), the parsers (pure functions run
in worker threads through the shared limiter) and the on-disk caches. A document is stored in the
cache only after it parsed, so a broken response never replaces a good cached copy. A sync opens
`sync_session()` so that each guide page or profile costs one worker-thread call after its
request (`revalidation.ConditionalDocuments`). The guide list and the item catalog are fetched
once for every job of the runtime asking at the same moment (`InFlight`): on a first start the
sync and the cache refresh would otherwise each read the whole search and the 2 MB data.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import anyio
import anyio.to_thread

from d3_item_salvager.config import CacheConfig, MaxrollConfig
from d3_item_salvager.errors import CacheError, FetchError, ParseError, TokenRefusedError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.catalog import ItemCatalog, parse_item_catalog
from d3_item_salvager.maxroll.client import MaxrollClient, Validators
from d3_item_salvager.maxroll.document_cache import CachedDocument, DocumentCache, Stamp
from d3_item_salvager.maxroll.guide_list_cache import GuideListCache
from d3_item_salvager.maxroll.guide_listing import GuideListing, assemble_listing
from d3_item_salvager.maxroll.guide_parser import GuidePlanners, parse_guide_planners
from d3_item_salvager.maxroll.in_flight import InFlight
from d3_item_salvager.maxroll.models import GuideRecord, PlannerProfile
from d3_item_salvager.maxroll.profile_parser import parse_planner_profile
from d3_item_salvager.maxroll.revalidation import ConditionalDocuments
from d3_item_salvager.maxroll.search_parser import SearchPage, parse_search_page

_log = get_logger(__name__)
T = TypeVar("T")

GUIDE_PLANNERS = "guide-planners"
PROFILES = "profiles"
ITEM_DATA = "item-data"


def maxroll_gateway_resource(
    client: MaxrollClient,
    maxroll_config: MaxrollConfig,
    cache_config: CacheConfig,
    limiter: anyio.CapacityLimiter,
) -> Iterator[MaxrollGateway]:
    """Container resource: one gateway per container, its document cache closed on shutdown."""
    gateway = MaxrollGateway(client, maxroll_config, cache_config, limiter)
    try:
        yield gateway
    finally:
        gateway.close()


class MaxrollGateway:
    """Guides, planners, profiles and the item catalog, each fetched at most when needed."""

    def __init__(
        self,
        client: MaxrollClient,
        maxroll_config: MaxrollConfig,
        cache_config: CacheConfig,
        limiter: anyio.CapacityLimiter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self._config = maxroll_config
        self._cache_config = cache_config
        self._limiter = limiter
        self._clock = clock
        self.documents = DocumentCache(
            cache_config.dir / "documents.sqlite", legacy_folder=cache_config.dir / "documents"
        )
        self.guide_list_cache = GuideListCache(cache_config.dir)
        # The parsed catalog: the hash of its body, and the validators of the cached version it
        # is known to come from (None: not known yet). data.json is about 2 MB: reading it back,
        # hashing and parsing it on every run kept megabytes in each worker thread's allocator.
        self._catalog: tuple[str, ItemCatalog, Validators | None] | None = None
        self.cache_write_failures = 0
        self.last_cache_error = ""
        self._conditional = ConditionalDocuments(
            self.documents, self._in_thread, clock, self._cache_write_failed
        )
        self._listing_in_flight: InFlight[str, GuideListing] = InFlight()
        self._catalog_in_flight: InFlight[str, ItemCatalog] = InFlight()

    def close(self) -> None:
        """Close the document cache's database connection (it reopens if used again)."""
        self.documents.close()

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def sync_session(self) -> AbstractAsyncContextManager[None]:
        """Within: one worker-thread call per guide page or profile read, not two.

        The validators of the cached documents (not their bodies) are read once per namespace
        instead of once per document; see `ConditionalDocuments`.
        """
        return self._conditional.session()

    # Guide list

    async def search_guides(self) -> GuideListing:
        """Every D3 build guide from the search API, and whether the listing is whole.

        The first page's `estimatedTotalHits` says how many more pages to ask for at once (the
        client's concurrency cap still applies); since it is only an estimate, pages are then read
        one by one until a short or empty page, or the page cap. The first page failing raises
        (there is no listing at all); a later page failing makes the listing incomplete.
        """
        limit = self._config.search_page_size
        max_pages = self._config.search_max_pages
        first = await self._search_page(0)
        pages: dict[int, SearchPage] = {0: first}
        failed: dict[int, str] = {}
        refused: list[TokenRefusedError] = []

        async def fetch(number: int) -> None:
            try:
                pages[number] = await self._search_page(number)
            except TokenRefusedError as exc:
                refused.append(exc)
            except (FetchError, ParseError) as exc:
                failed[number] = str(exc)
                _log.warning("search page failed", extra={"page": number + 1, "error": str(exc)})

        if first.hit_count >= limit and first.estimated_total:
            expected = min(-(-first.estimated_total // limit), max_pages)
            async with anyio.create_task_group() as group:
                for number in range(1, expected):
                    group.start_soon(fetch, number)
        while (
            not (failed or refused)
            and pages[max(pages)].hit_count >= limit
            and max(pages) + 1 < max_pages
        ):
            await fetch(max(pages) + 1)
        if refused:
            raise refused[0]
        listing = assemble_listing(pages, failed, page_size=limit, max_pages=max_pages)
        for reason in listing.incomplete:
            _log.warning("guide listing incomplete: %s", reason, extra={"reason": reason})
        return listing

    async def _search_page(self, number: int) -> SearchPage:
        offset = number * self._config.search_page_size
        body = await self.client.search_page(offset=offset, limit=self._config.search_page_size)
        page: SearchPage = await self._in_thread(
            parse_search_page, body, f"guide search page at offset {offset}"
        )
        for problem in page.rejected:
            _log.warning("search hit refused", extra={"problem": problem})
        return page

    async def refresh_guide_list(self) -> GuideListing:
        """Read the list from the API; store it in the cache only when it is whole.

        Callers asking while a refresh is under way share its outcome.
        """
        return await _shared(self._listing_in_flight, "guide list", self._refresh_guide_list)

    async def _refresh_guide_list(self) -> GuideListing:
        listing = await self.search_guides()
        if listing.complete:
            try:
                await self._in_thread(
                    self.guide_list_cache.save, list(listing.guides), self._clock()
                )
            except CacheError as exc:
                self._cache_write_failed(exc)
        return listing

    async def cached_guide_list(self, max_age_seconds: float | None) -> list[GuideRecord] | None:
        """The cached list when present and (if max_age_seconds is given) younger than that."""
        loaded = await self._in_thread(self.guide_list_cache.load)
        if loaded is None:
            return None
        guides, fetched_at = loaded
        if max_age_seconds is not None and self._clock() - fetched_at > max_age_seconds:
            return None
        return guides

    # Guide pages and planner profiles

    def _cache_write_failed(self, error: CacheError) -> None:
        self.cache_write_failures += 1
        self.last_cache_error = str(error)
        _log.warning(
            "could not write the cache; continuing without it", extra={"error": str(error)}
        )

    async def guide_planners(
        self, guide: GuideRecord, *, conditional: bool = True
    ) -> GuidePlanners:
        """The planner ids of a guide (only the ids are cached, not the page)."""
        document = f"guide page {guide.url}"

        def parse(body: bytes) -> GuidePlanners:
            return parse_guide_planners(body, document)  # bytes: see parse_guide_planners

        def parse_cached(body: bytes) -> GuidePlanners:
            cached = json.loads(body)
            return GuidePlanners(tuple(cached["planner_ids"]), cached["from_variants"])

        def encode(result: GuidePlanners, _body: bytes) -> bytes:
            payload = {"planner_ids": result.planner_ids, "from_variants": result.from_variants}
            return json.dumps(payload).encode()

        planners, _changed = await self._conditional.read(
            GUIDE_PLANNERS,
            guide.url,
            lambda validators: self.client.guide_page(guide.url, validators),
            parse,
            encode,
            previous=await self._previous(GUIDE_PLANNERS, guide.url, conditional),
            parse_cached=parse_cached,
        )
        for value in planners.rejected:
            _log.warning("planner id refused", extra={"guide": guide.url, "value": value})
        return planners

    async def planner_profile(self, planner_id: str, *, conditional: bool = True) -> PlannerProfile:
        """A planner's builds (the raw profile document is cached)."""
        profile, _changed = await self.planner_profile_update(planner_id, conditional=conditional)
        return profile

    async def planner_profile_update(
        self, planner_id: str, *, conditional: bool = True
    ) -> tuple[PlannerProfile, bool]:
        """A planner's builds, and whether the profile changed since the cached copy."""
        return await self._conditional.read(
            PROFILES,
            planner_id,
            lambda validators: self.client.planner_profile(planner_id, validators),
            lambda body: parse_planner_profile(body, planner_id),
            lambda _result, body: body,
            previous=await self._previous(PROFILES, planner_id, conditional),
        )

    async def _previous(self, namespace: str, key: str, conditional: bool) -> Stamp | None:
        """The stamp of the cached copy whose validators go with the request (None: no copy,
        or a full download asked for)."""
        return await self._conditional.cached_stamp(namespace, key) if conditional else None

    async def cached_planner_profile(self, planner_id: str) -> PlannerProfile | None:
        """A planner's builds from its cached copy alone (no request); None without a sound one."""

        def read() -> PlannerProfile | None:
            cached = self.documents.get(PROFILES, planner_id)
            if cached is None:
                return None
            try:
                return parse_planner_profile(cached.body, planner_id)
            except ParseError:
                return None

        return await self._in_thread(read)

    async def prune_documents(self, guide_urls: set[str], planner_ids: set[str]) -> int:
        """Delete cached guide pages and profiles no listed guide refers to; returns how many."""
        pruned = await self._in_thread(self.documents.prune, GUIDE_PLANNERS, guide_urls)
        pruned += await self._in_thread(self.documents.prune, PROFILES, planner_ids)
        # An open session reads the stamps again rather than tracking what was deleted.
        self._conditional.forget(GUIDE_PLANNERS)
        self._conditional.forget(PROFILES)
        return pruned

    # Item catalog

    async def item_catalog(
        self, *, force_refresh: bool = False, revalidate: bool = False
    ) -> ItemCatalog:
        """The item catalog: from the cache while fresh, else a conditional GET.

        `revalidate` sends the conditional GET even while the cache is fresh; `force_refresh`
        downloads the whole document.

        When Maxroll cannot be reached or sends a broken document, a cached copy (however old)
        is used with a warning; without one, the error is raised. Callers asking while a fetch
        of the same kind (full or conditional) is under way share its outcome.
        """
        url = self._config.item_data_url
        stamp = await self._in_thread(self.documents.stamp, ITEM_DATA, url)
        ttl = self._cache_config.item_catalog_ttl_minutes * 60
        fresh = stamp is not None and self._clock() - stamp.fetched_at < ttl
        if stamp is not None and fresh and not (force_refresh or revalidate):
            known = self._known_catalog(stamp)
            if known is not None:
                return known  # the body is not even read
            cached = await self._in_thread(self.documents.get, ITEM_DATA, url)
            if cached is not None:
                return await self._cached_catalog(cached)
            stamp = None  # deleted meanwhile: download it
        return await _shared(
            self._catalog_in_flight,
            "item data, full download" if force_refresh else "item data",
            lambda: self._fetch_catalog(url, stamp, force_refresh),
        )

    async def _fetch_catalog(
        self, url: str, stamp: Stamp | None, force_refresh: bool
    ) -> ItemCatalog:
        try:
            catalog, _changed = await self._conditional.read(
                ITEM_DATA,
                url,
                lambda validators: self.client.item_data(validators),
                self._parse_catalog_sync,
                lambda _result, body: body,
                previous=stamp if not force_refresh else None,
                parse_cached=self._reparse_catalog_sync,
                known=self._known_catalog,
            )
            return catalog
        except (FetchError, ParseError) as exc:
            cached = await self._in_thread(self.documents.get, ITEM_DATA, url)
            if cached is None:
                raise
            _log.warning(
                "item data refresh failed; using the cached copy", extra={"error": str(exc)}
            )
            return await self._cached_catalog(cached)

    def _known_catalog(self, stamp: Stamp) -> ItemCatalog | None:
        """The parsed catalog when it is known to come from the cached version `stamp` names
        (by its validators: a server gives one representation one ETag)."""
        memo = self._catalog
        validators = Validators(stamp.etag, stamp.last_modified)
        if memo is None or memo[2] is None or memo[2] != validators or validators == Validators():
            return None
        return memo[1]

    def _parse_catalog_sync(self, body: bytes) -> ItemCatalog:
        catalog = parse_item_catalog(body)
        self._catalog = (str(hash(body)), catalog, None)
        return catalog

    def _reparse_catalog_sync(self, body: bytes) -> ItemCatalog:
        # Reuse the parsed catalog while the cached body is unchanged.
        memo = self._catalog
        if memo is not None and memo[0] == str(hash(body)):
            return memo[1]
        return self._parse_catalog_sync(body)

    async def _cached_catalog(self, cached: CachedDocument) -> ItemCatalog:
        """The catalog of a cached copy, parsed unless its body is the one parsed last; from
        then on that copy's validators name it (see _known_catalog)."""
        key = str(hash(cached.body))
        memo = self._catalog
        if memo is None or memo[0] != key:
            catalog = await self._in_thread(self._parse_catalog_sync, cached.body)
        else:
            catalog = memo[1]
        memo = self._catalog
        if memo is not None and memo[0] == key:  # not replaced by another parse meanwhile
            self._catalog = (key, memo[1], cached.validators)
        return catalog


async def _shared(in_flight: InFlight[str, T], key: str, fetch: Callable[[], Awaitable[T]]) -> T:
    """`fetch()`, or the outcome of the same fetch already under way (said at debug level)."""
    if key in in_flight:
        _log.debug("sharing a fetch already in flight", extra={"document": key})
    return await in_flight.run(key, fetch)
