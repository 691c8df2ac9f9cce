"""The Maxroll HTTP client: search, guide pages, planner profiles and item data.

Every request goes through one shared `httpx2.AsyncClient`, at most `max_concurrency` at a time.
Transient failures (timeouts, connection errors, 408, 429, 5xx) are retried with jittered
exponential backoff that honours Retry-After; permanent ones raise at once. Every attempt, the
first and each retry, is counted in `stats.requests`, each retry in `stats.retries`: the transport
under the client (httpx2's own) re-sends nothing by itself. No exception of httpx2 or the libraries
under it leaves this module: callers see `FetchError` and its subclasses, each naming the URL, and
a failure below HTTP also names the host and port it could not reach.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import httpx2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from d3_item_salvager.config import MaxrollConfig
from d3_item_salvager.errors import (
    FetchError,
    NotFoundError,
    TokenRefusedError,
    TransientFetchError,
)
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.urls import guide_page_url, planner_profile_url

_log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Retry-After may ask for a long pause; beyond this the run is better off failing and retrying later.
MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Validators:
    """What a server said about a document, for a conditional request next time."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["if-none-match"] = self.etag
        if self.last_modified:
            headers["if-modified-since"] = self.last_modified
        return headers


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response: the body, or None when the server answered 304 Not Modified."""

    url: str
    body: bytes | None
    validators: Validators

    @property
    def not_modified(self) -> bool:
        return self.body is None


@dataclass(slots=True)
class RequestStats:
    """Counts of what the client sent and received (one instance per client)."""

    requests: int = 0
    retries: int = 0
    not_modified: int = 0
    bytes_received: int = 0

    def snapshot(self) -> RequestStats:
        return RequestStats(
            self.requests,
            self.retries,
            self.not_modified,
            self.bytes_received,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    delta = when.timestamp() - datetime.fromtimestamp(now, UTC).timestamp()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_SECONDS)


class MaxrollClient:
    """Typed access to the four Maxroll endpoints.

    Args:
        http: the process's shared client (the container owns and closes it).
        config: endpoints, token, concurrency, retry and size settings.
        sleep: how to wait between retries; tests pass a recorder instead of real sleeping.
        on_response: called with the status code of every response (metrics).
    """

    def __init__(
        self,
        http: httpx2.AsyncClient,
        config: MaxrollConfig,
        *,
        sleep: Sleep = anyio.sleep,
        on_response: Callable[[int], None] | None = None,
    ) -> None:
        self._http = http
        self._config = config
        self._sleep = sleep
        self._on_response = on_response
        self._slots = anyio.Semaphore(config.max_concurrency)
        self.stats = RequestStats()

    def __repr__(self) -> str:
        return f"MaxrollClient(site_url={self._config.site_url!r}, token=[REDACTED])"

    # Endpoints

    async def search_page(self, offset: int, limit: int) -> bytes:
        """One page of the guide search (POST with the bearer token)."""
        token = self._config.require_bearer_token()
        headers = {
            "accept": "*/*",
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
        }
        body = {"q": "", "facets": [], "limit": limit, "offset": offset}
        try:
            fetched = await self._request(
                "POST", self._config.search_url, headers=headers, json=body
            )
        except FetchError as exc:
            if exc.status_code in (401, 403):
                raise TokenRefusedError(exc.url, exc.status_code) from None
            raise
        assert fetched.body is not None  # unconditional requests always carry a body
        return fetched.body

    async def guide_page(self, permalink: str, validators: Validators | None = None) -> Fetched:
        """A guide page, at the permalink's path on the configured site."""
        url = guide_page_url(self._config.site_url, permalink)
        return await self._request("GET", url, validators=validators)

    async def planner_profile(
        self, planner_id: str, validators: Validators | None = None
    ) -> Fetched:
        """A planner profile; the id is validated as digits before it reaches the URL."""
        url = planner_profile_url(self._config.planner_profile_url, planner_id)
        return await self._request("GET", url, validators=validators)

    async def item_data(self, validators: Validators | None = None) -> Fetched:
        """The master item data (data.json)."""
        return await self._request("GET", self._config.item_data_url, validators=validators)

    # Transport

    def _wait_seconds(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientFetchError) and error.retry_after_seconds is not None:
            return error.retry_after_seconds
        backoff = wait_random_exponential(
            multiplier=self._config.retry_initial_backoff_seconds,
            max=self._config.retry_max_backoff_seconds,
        )
        return float(backoff(state))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json: object = None,
        validators: Validators | None = None,
    ) -> Fetched:
        headers = dict(headers or {})
        if validators is not None:
            headers.update(validators.headers())
        # The first attempt runs outside tenacity, which is entered only once it has failed:
        # a retry loop is ~30 GC-tracked objects in reference cycles per request, garbage only
        # the cyclic collector frees, and most requests succeed the first time.
        first_error: TransientFetchError | None = None
        try:
            async with self._slots:
                return await self._attempt(method, url, headers, json)
        except TransientFetchError as exc:
            first_error = exc
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientFetchError),
            stop=stop_after_attempt(self._config.retry_attempts),
            wait=self._wait_seconds,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first_error is not None:
                    # Tenacity's first attempt is the one already made: it counts against
                    # retry_attempts and its error sets the first wait, as before.
                    error, first_error = first_error, None
                    raise error
                async with self._slots:
                    return await self._attempt(method, url, headers, json)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "retrying request",
            extra={"attempt": state.attempt_number, "error": str(error)},
        )

    async def _attempt(
        self, method: str, url: str, headers: dict[str, str], json: object
    ) -> Fetched:
        self.stats.requests += 1
        try:
            request = self._http.build_request(method, url, headers=headers, json=json)
            response = await self._http.send(request, stream=True)
            try:
                self._count_status(response.status_code)
                self._raise_for_status(url, response)
                body = await self._read_limited(url, response)
            finally:
                # Error answers are closed unread: httpcore2 then closes their connection rather
                # than keep it, so nothing a server sent behind one (a stray 408) is ever read
                # as the answer to a later request (tests/maxroll/test_http_contracts.py).
                await response.aclose()
        except httpx2.TimeoutException as exc:
            raise TransientFetchError(
                url, f"timed out waiting for {_target(url)} {_cause(exc)}"
            ) from None
        except httpx2.TransportError as exc:
            raise TransientFetchError(
                url, f"connection to {_target(url)} failed {_cause(exc)}"
            ) from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            # A body that does not decode (a broken gzip stream), a URL httpx2 refuses: retrying
            # will not help.
            raise FetchError(url, f"request to {_target(url)} failed {_cause(exc)}") from None
        validators = Validators(
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )
        if response.status_code == 304:
            self.stats.not_modified += 1
            return Fetched(url=url, body=None, validators=validators)
        return Fetched(url=url, body=body, validators=validators)

    def _count_status(self, status: int) -> None:
        if self._on_response is not None:
            self._on_response(status)

    @staticmethod
    def _raise_for_status(url: str, response: httpx2.Response) -> None:
        status = response.status_code
        if status in (200, 304):
            return
        if status == 404:
            raise NotFoundError(url)
        reason = f"HTTP {status}"
        # 408: the server gave up waiting for a request. On a kept-alive connection it may be
        # the server's farewell to the idle connection, sent as our request went out; RFC 9110
        # (section 15.5.9) lets the client repeat the request, and it is never the answer.
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise TransientFetchError(
                url, reason, status_code=status, retry_after_seconds=retry_after
            )
        if 300 <= status < 400:
            reason += f" redirect to {response.headers.get('location', '?')!r} (not followed)"
        raise FetchError(url, reason, status_code=status)

    async def _read_limited(self, url: str, response: httpx2.Response) -> bytes:
        limit = self._config.max_response_bytes
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise FetchError(url, f"response of {declared} bytes is over the {limit}-byte limit")
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FetchError(url, f"response is over the {limit}-byte limit")
            chunks.append(chunk)
        self.stats.bytes_received += size
        return b"".join(chunks)


def _target(url: str) -> str:
    """`host:port` of a URL, the port spelled out even when it is the scheme's default."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL:
        return "?"
    return f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"


def _cause(error: Exception) -> str:
    """`(ErrorType: message)` of a library's error, its message cut short."""
    detail = str(error).strip()
    return f"({type(error).__name__}: {detail[:200]})" if detail else f"({type(error).__name__})"
