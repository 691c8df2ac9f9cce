"""Documents fetched with the cached copy's validators, parsed, and cached only once they parsed.

Each worker-thread hand-off costs more CPU than the SQLite statements it runs (thread wake-ups,
the loop's self-pipe, GIL hand-overs), so a document costs one: after its request, one call
parses and stores it (200) or renews, reads and parses the cached copy (304). The validators the
request needs are read before it: inside a sync session, those of a whole namespace at once
(small rows, no bodies) when its first document is asked for; outside, the document's own.

Between that read and the request's answer another writer (a second process, a prune) may
replace or delete the cached copy. Every stored version has a distinct stamp (validators and
fetch time), and a copy is only used, or compared with, when the row still carries the stamp
that was read: what a 304 confirmed is never taken from a different version, and a replaced copy
is never reported as unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from d3_item_salvager.errors import CacheError, FetchError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.client import Fetched, Validators
from d3_item_salvager.maxroll.document_cache import DocumentCache, Stamp

_log = get_logger(__name__)
T = TypeVar("T")


class InThread(Protocol):
    """Runs `function(*args)` in a worker thread."""

    async def __call__(self, function: Callable[..., T], *args: object) -> T: ...


class ConditionalDocuments:
    """Conditional reads of cached documents, one worker-thread call each after the request.

    `in_thread(function, *args)` runs a function in a worker thread; `on_cache_error` is told
    of every cache write that failed (the cache is an optimisation, never an error of the
    document).
    """

    def __init__(
        self,
        documents: DocumentCache,
        in_thread: InThread,
        clock: Callable[[], float],
        on_cache_error: Callable[[CacheError], None],
    ) -> None:
        self._documents = documents
        self._in_thread = in_thread
        self._clock = clock
        self._on_cache_error = on_cache_error
        # While a session is open: the stamps of each namespace's cached documents, read once,
        # then kept in step with the writes made here.
        self._sessions = 0
        self._stamps: dict[str, dict[str, Stamp]] = {}
        self._stamps_lock: anyio.Lock | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Within: each namespace's stamps are read once (one call), not once per document.

        They are kept until the last open session ends (sessions may overlap and share them).
        """
        if not self._sessions:  # a lock per outermost session: nothing waits on the old one
            self._stamps_lock = anyio.Lock()
        self._sessions += 1
        try:
            yield
        finally:
            self._sessions -= 1
            if not self._sessions:
                self._stamps.clear()

    def forget(self, namespace: str) -> None:
        """Read `namespace`'s stamps again when next needed (after deleting some of its rows)."""
        self._stamps.pop(namespace, None)

    async def cached_stamp(self, namespace: str, key: str) -> Stamp | None:
        """The stamp of the cached copy: from the session's read, else read now."""
        if not self._sessions:
            return await self._in_thread(self._documents.stamp, namespace, key)
        stamps = self._stamps.get(namespace)
        if stamps is None:
            assert self._stamps_lock is not None
            async with self._stamps_lock:  # the first documents of a sync arrive together
                stamps = self._stamps.get(namespace)
                if stamps is None:
                    stamps = await self._in_thread(self._documents.stamps, namespace)
                    if stamps is None:
                        # Unreadable now (locked past the timeout, say): no stamp for this
                        # document, and the next one tries again rather than the whole sync
                        # downloading everything.
                        return None
                    self._stamps[namespace] = stamps
        return stamps.get(key)

    async def read(
        self,
        namespace: str,
        key: str,
        fetch: Callable[[Validators | None], Awaitable[Fetched]],
        parse: Callable[[bytes], T],
        encode: Callable[[T, bytes], bytes],
        *,
        previous: Stamp | None,
        parse_cached: Callable[[bytes], T] | None = None,
        known: Callable[[Stamp], T | None] | None = None,
    ) -> tuple[T, bool]:
        """Fetch with the validators of `previous` (the cached copy's stamp; None downloads in
        full); on 304 parse the cached copy instead, or take `known(previous)` when it gives a
        result already parsed from that copy (then the body is not read back).

        Returns the result and whether the document differs from the copy `previous` describes
        (True when there was none). `encode(result, body)` is what is cached.
        """
        fetched = await fetch(previous.validators if previous else None)
        now = self._clock()
        if fetched.body is None:
            if previous is None:
                raise FetchError(fetched.url, "304 Not Modified without a cached copy")
            confirmed = await self._in_thread(
                self._confirm_and_parse,
                namespace, key, previous, now, parse_cached or parse,
                known(previous) if known is not None else None,
            )  # fmt: skip
            if confirmed is not None:
                result, cache_error = confirmed
                if cache_error is None:
                    self._remember(namespace, key, previous._replace(fetched_at=now))
                else:
                    self._on_cache_error(cache_error)
                return result, False
            # What the 304 confirmed is no longer cached (replaced or deleted meanwhile).
            _log.info(
                "the cached copy changed or vanished during its revalidation; downloading it",
                extra={"namespace": namespace, "url": key},
            )
            previous = None
            fetched = await fetch(None)
            now = self._clock()
            if fetched.body is None:
                raise FetchError(fetched.url, "304 Not Modified to an unconditional request")
        result, changed, cache_error = await self._in_thread(
            self._parse_and_store, namespace, key, fetched, now, parse, encode, previous
        )
        if cache_error is None:
            validators = fetched.validators
            self._remember(namespace, key, Stamp(validators.etag, validators.last_modified, now))
        else:
            self._remember(namespace, key, None)
            self._on_cache_error(cache_error)
        return result, changed

    def _remember(self, namespace: str, key: str, stamp: Stamp | None) -> None:
        """Keep the session's stamps in step with a write made here (None: not known)."""
        stamps = self._stamps.get(namespace)
        if stamps is None:
            return
        if stamp is None:
            stamps.pop(key, None)
        else:
            stamps[key] = stamp

    def _confirm_and_parse(
        self,
        namespace: str,
        key: str,
        previous: Stamp,
        now: float,
        parse: Callable[[bytes], T],
        known: T | None,
    ) -> tuple[T, CacheError | None] | None:
        """In a worker thread: renew and read the cached copy `previous` describes, then parse
        it (or use `known`, parsed from it before, without reading it back); None when that copy
        is no longer stored. A copy that cannot be renewed (disk full) is still read and used,
        with the error."""
        try:
            if known is not None:
                return (
                    (known, None) if self._documents.renew(namespace, key, previous, now) else None
                )
            body = self._documents.confirm(namespace, key, previous, now)
        except CacheError as exc:
            body = self._documents.body_of(namespace, key, previous)
            if body is None:
                return None
            return (known if known is not None else parse(body)), exc
        return None if body is None else (parse(body), None)

    def _parse_and_store(
        self,
        namespace: str,
        key: str,
        fetched: Fetched,
        now: float,
        parse: Callable[[bytes], T],
        encode: Callable[[T, bytes], bytes],
        previous: Stamp | None,
    ) -> tuple[T, bool, CacheError | None]:
        """In a worker thread: parse a new document, compare it with the copy `previous`
        describes, then cache it (only once it parsed).

        Changed unless that very copy is still stored with the same content: a copy another
        writer replaced meanwhile counts as changed, never as unchanged.
        """
        assert fetched.body is not None
        result = parse(fetched.body)
        encoded = encode(result, fetched.body)
        changed = previous is None or self._documents.body_of(namespace, key, previous) != encoded
        try:
            self._documents.put(namespace, key, encoded, fetched.validators, now)
        except CacheError as exc:
            return result, changed, exc
        return result, changed, None
