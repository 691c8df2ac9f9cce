"""MaxrollClient over real HTTP: auth, retries, Retry-After, 404, size cap, concurrency, 304."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from tenacity import AsyncRetrying

from d3_item_salvager.config import AppConfig
from d3_item_salvager.errors import (
    FetchError,
    NotFoundError,
    TransientFetchError,
    UnsafeUrlError,
)
from d3_item_salvager.maxroll import client as client_module
from d3_item_salvager.maxroll.client import MaxrollClient, parse_retry_after
from d3_item_salvager.maxroll.http import build_http_client
from d3_item_salvager.testing.fake_maxroll import (
    ITEM_DATA_PATH,
    PROFILE_PREFIX,
    SEARCH_PATH,
    FakeMaxroll,
    Fault,
)
from tests.conftest import make_config


class RecordingSleep:
    """Stands in for anyio.sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def client(live_config: AppConfig, sleeps: RecordingSleep) -> AsyncIterator[MaxrollClient]:
    async with build_http_client(live_config.maxroll) as http:
        yield MaxrollClient(http, live_config.maxroll, sleep=sleeps)


async def test_search_sends_bearer_token_and_page_body(
    client: MaxrollClient, fake_maxroll: FakeMaxroll
) -> None:
    """The search is a POST with the token, JSON content type and limit/offset."""
    body = await client.search_page(offset=4, limit=2)
    assert b'"offset": 4' in body
    [request] = fake_maxroll.requests
    assert (request.method, request.path) == ("POST", SEARCH_PATH)
    assert request.headers["authorization"] == f"Bearer {fake_maxroll.token}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "*/*"


async def test_wrong_token_is_a_permanent_error_without_the_token(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """401 is not retried, and the error names the URL but never the token."""
    values = fake_maxroll.config_values() | {"bearer_token": "wrong-secret-9"}
    config = make_config(tmp_path, maxroll=values)
    async with build_http_client(config.maxroll) as http:
        client = MaxrollClient(http, config.maxroll)
        with pytest.raises(FetchError) as caught:
            await client.search_page(0, 21)
    assert not isinstance(caught.value, TransientFetchError)
    assert "HTTP 401" in str(caught.value)
    assert SEARCH_PATH in str(caught.value)
    assert "wrong-secret-9" not in str(caught.value) + repr(client)
    assert fake_maxroll.count(SEARCH_PATH) == 1


async def test_429_and_503_are_retried_honouring_retry_after(
    client: MaxrollClient, fake_maxroll: FakeMaxroll, sleeps: RecordingSleep
) -> None:
    """Transient statuses are retried; Retry-After sets the wait; the body then arrives."""
    path = PROFILE_PREFIX + "300000000"
    fake_maxroll.fail(path, Fault(status=429, retry_after="7"), Fault(status=503, retry_after="2"))
    fetched = await client.planner_profile("300000000")
    assert fetched.body is not None
    assert b'"id": "300000000"' in fetched.body
    assert sleeps.waits == [7.0, 2.0]
    assert fake_maxroll.count(path) == 3
    assert client.stats.retries == 2


async def test_a_first_attempt_that_succeeds_builds_no_retry_loop(
    client: MaxrollClient, fake_maxroll: FakeMaxroll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenacity's loop (objects in cycles, left for the cyclic collector) only after a failure."""
    loops: list[object] = []

    class CountedRetrying(AsyncRetrying):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            loops.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(client_module, "AsyncRetrying", CountedRetrying)
    await client.planner_profile("300000000")
    assert loops == []
    path = PROFILE_PREFIX + "300000001"
    fake_maxroll.fail(path, Fault(status=503))
    await client.planner_profile("300000001")
    assert len(loops) == 1
    assert (fake_maxroll.count(path), client.stats.retries) == (2, 1)


async def test_transient_failures_give_up_after_the_configured_attempts(
    client: MaxrollClient, fake_maxroll: FakeMaxroll, live_config: AppConfig
) -> None:
    """After retry_attempts tries the last transient error is raised, naming the URL."""
    attempts = live_config.maxroll.retry_attempts
    fake_maxroll.fail(ITEM_DATA_PATH, *[Fault(status=502)] * attempts)
    with pytest.raises(TransientFetchError, match=r"data\.json failed: HTTP 502"):
        await client.item_data()
    assert fake_maxroll.count(ITEM_DATA_PATH) == attempts


async def test_connection_reset_and_truncated_body_are_retried(
    client: MaxrollClient, fake_maxroll: FakeMaxroll
) -> None:
    """A reset connection and a body cut short are transient, and the retry succeeds."""
    fake_maxroll.fail(ITEM_DATA_PATH, Fault(reset=True), Fault(truncate=True))
    fetched = await client.item_data()
    assert fetched.body is not None
    assert fetched.body.startswith(b'{"items"')
    assert fake_maxroll.count(ITEM_DATA_PATH) == 3


async def test_read_timeout_is_transient(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """A server slower than the timeout gives a TransientFetchError after the retries."""
    values = fake_maxroll.config_values() | {"request_timeout_seconds": 0.2, "retry_attempts": 2}
    config = make_config(tmp_path, maxroll=values)
    fake_maxroll.fail(ITEM_DATA_PATH, Fault(delay=1.0), Fault(delay=1.0))
    async with build_http_client(config.maxroll) as http:
        client = MaxrollClient(http, config.maxroll, sleep=RecordingSleep())
        with pytest.raises(TransientFetchError, match="timed out"):
            await client.item_data()


async def test_404_is_not_retried(client: MaxrollClient, fake_maxroll: FakeMaxroll) -> None:
    """A missing document raises NotFoundError (a LookupError) after one request."""
    with pytest.raises(NotFoundError) as caught:
        await client.planner_profile("123456789")
    assert isinstance(caught.value, LookupError)
    assert "/profiles/load/d3/123456789" in str(caught.value)
    assert fake_maxroll.count(PROFILE_PREFIX) == 1


@pytest.mark.parametrize(
    "planner_id", ["../../etc", "12/34", "1 2", "%2e%2e", "１２３", "", "9" * 16]
)
async def test_unsafe_planner_ids_are_refused_before_any_request(
    client: MaxrollClient, fake_maxroll: FakeMaxroll, planner_id: str
) -> None:
    """Only ASCII digits reach the profile URL."""
    with pytest.raises(UnsafeUrlError):
        await client.planner_profile(planner_id)
    assert fake_maxroll.requests == []


@pytest.mark.parametrize(
    "permalink",
    [
        "https://evil.example/d3/guides/x",
        "https://maxroll.gg@evil.example/d3/guides/x",
        "https://maxroll.gg/d3/guides/../../admin",
        "https://maxroll.gg/d3/guides/%2e%2e/admin",
        "https://maxroll.gg//evil.example/d3/guides/x",
        "https://maxroll.gg/d3/resources/x",
        "http://maxroll.gg/d3/guides/x",
        "https://maxroll.gg/d3/guides/x?next=//evil",
        "https://maxroll.gg/d3/guides/x\\..\\y",
        "//evil.example/d3/guides/x",
    ],
)
async def test_unsafe_permalinks_are_refused(
    client: MaxrollClient, fake_maxroll: FakeMaxroll, permalink: str
) -> None:
    """Crafted permalinks never reach another host or path."""
    with pytest.raises(UnsafeUrlError):
        await client.guide_page(permalink)
    assert fake_maxroll.requests == []


async def test_oversized_response_is_refused(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """A body over max_response_bytes is a permanent FetchError."""
    values = fake_maxroll.config_values() | {"max_response_bytes": 1000}
    config = make_config(tmp_path, maxroll=values)
    async with build_http_client(config.maxroll) as http:
        client = MaxrollClient(http, config.maxroll)
        with pytest.raises(FetchError, match="over the 1000-byte limit"):
            await client.item_data()


async def test_conditional_request_gets_304(
    client: MaxrollClient, fake_maxroll: FakeMaxroll
) -> None:
    """Sending the ETag back yields 304 with no body."""
    first = await client.item_data()
    assert first.validators.etag
    second = await client.item_data(first.validators)
    assert second.not_modified
    assert fake_maxroll.requests[-1].headers["if-none-match"] == first.validators.etag
    assert client.stats.not_modified == 1


async def test_concurrency_is_capped(tmp_path: Path, fake_maxroll: FakeMaxroll) -> None:
    """With max_concurrency=3, the server never sees more than 3 requests at once."""
    fake_maxroll.latency = 0.05
    config = make_config(tmp_path, maxroll=fake_maxroll.config_values() | {"max_concurrency": 3})
    planner_ids = list(fake_maxroll.site.planners)[:12]
    async with build_http_client(config.maxroll) as http:
        client = MaxrollClient(http, config.maxroll)
        async with anyio.create_task_group() as group:
            for planner_id in planner_ids:
                group.start_soon(client.planner_profile, planner_id)
    assert fake_maxroll.count(PROFILE_PREFIX) == 12
    assert fake_maxroll.max_in_flight == 3


async def test_redirects_are_not_followed() -> None:
    """A 3xx is a permanent error naming the target, never followed to another host."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(302, headers={"location": "https://evil.example/"})

    config = make_config(Path("/nonexistent"), maxroll={"bearer_token": "t"})
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        client = MaxrollClient(http, config.maxroll)
        with pytest.raises(FetchError, match="redirect to 'https://evil.example/'"):
            await client.item_data()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        ("100000", 300.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Delta seconds and HTTP dates are read; long waits are capped; junk is ignored."""
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == expected
