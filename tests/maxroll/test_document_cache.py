"""DocumentCache on a real SQLite file: round trips, confirmation, pruning, corruption, failures."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.errors import CacheError
from d3_item_salvager.maxroll.client import Validators
from d3_item_salvager.maxroll.document_cache import DocumentCache, Stamp
from d3_item_salvager.maxroll.gateway import MaxrollGateway
from tests.conftest import make_config

URL = "https://example.test/profile/1"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[DocumentCache]:
    cache = DocumentCache(tmp_path / "documents.sqlite", legacy_folder=tmp_path / "documents")
    yield cache
    cache.close()


def test_a_document_reads_back_with_its_validators_and_time(cache: DocumentCache) -> None:
    cache.put("profiles", URL, b'{"a": 1}\n\x00{"b": 2}', Validators('"v1"', "Mon"), 1.8e9)
    document = cache.get("profiles", URL)
    assert document is not None
    assert document.body == b'{"a": 1}\n\x00{"b": 2}'
    assert document.validators == Validators('"v1"', "Mon")
    assert document.fetched_at == 1.8e9
    assert cache.get("guide-planners", URL) is None  # namespaces are apart
    assert cache.get("profiles", "https://example.test/profile/2") is None


def test_put_replaces_and_confirm_renews_only_the_time(cache: DocumentCache) -> None:
    cache.put("profiles", URL, b"old", Validators(etag='"v1"'), 1.0)
    cache.put("profiles", URL, b"new", Validators(etag='"v2"'), 2.0)
    assert cache.confirm("profiles", URL, Stamp('"v2"', None, 2.0), 3.0) == b"new"
    never = "https://example.test/never-cached"
    assert cache.confirm("profiles", never, Stamp('"v2"', None, 2.0), 4.0) is None
    document = cache.get("profiles", URL)
    assert document is not None
    assert (document.body, document.validators.etag, document.fetched_at) == (b"new", '"v2"', 3.0)
    assert document.stamp == Stamp('"v2"', None, 3.0)


def test_renew_renews_the_time_of_that_version_only(cache: DocumentCache) -> None:
    """renew (a 304 whose parsed result is already known) moves the time of the very version
    the stamp names, and of no other; the body stays."""
    cache.put("item-data", URL, b"body", Validators(etag='"v1"'), 1.0)
    assert cache.renew("item-data", URL, Stamp('"v1"', None, 1.0), 2.0)
    assert not cache.renew("item-data", URL, Stamp('"v1"', None, 1.0), 3.0)  # renewed since
    assert cache.stamp("item-data", URL) == Stamp('"v1"', None, 2.0)
    assert cache.body_of("item-data", URL, Stamp('"v1"', None, 2.0)) == b"body"


def test_stamps_are_the_validators_and_times_without_the_bodies(cache: DocumentCache) -> None:
    cache.put("profiles", URL, b"x" * 1000, Validators('"v1"', "Mon"), 1.0)
    cache.put("profiles", URL + "/2", b"{}", Validators(), 2.0)
    cache.put("guide-planners", URL, b"{}", Validators('"g"'), 3.0)
    assert cache.stamps("profiles") == {
        URL: Stamp('"v1"', "Mon", 1.0),
        URL + "/2": Stamp(None, None, 2.0),
    }
    assert cache.stamps("item-data") == {}
    assert cache.stamp("guide-planners", URL) == Stamp('"g"', None, 3.0)
    assert cache.stamp("guide-planners", URL + "/2") is None


@pytest.mark.parametrize(
    "stamp",
    [
        Stamp('"v2"', "Mon", 2.0),  # another etag
        Stamp('"v1"', None, 2.0),  # a validator fewer (NULL is compared with IS)
        Stamp('"v1"', "Mon", 1.5),  # renewed or rewritten since
    ],
)
def test_a_stamp_of_another_version_neither_reads_nor_renews(
    cache: DocumentCache, stamp: Stamp
) -> None:
    """Only the very version a stamp was read from is used: anything else reads as gone."""
    cache.put("profiles", URL, b"body", Validators('"v1"', "Mon"), 2.0)
    assert cache.body_of("profiles", URL, stamp) is None
    assert cache.confirm("profiles", URL, stamp, 9.0) is None
    assert cache.stamp("profiles", URL) == Stamp('"v1"', "Mon", 2.0)
    assert cache.body_of("profiles", URL, Stamp('"v1"', "Mon", 2.0)) == b"body"


def test_stamps_of_an_unreadable_cache_are_none(tmp_path: Path) -> None:
    (tmp_path / "documents.sqlite").mkdir()
    cache = DocumentCache(tmp_path / "documents.sqlite")
    assert cache.stamps("profiles") is None  # not "none cached": it may be readable later
    assert cache.stamp("profiles", URL) is None
    assert cache.body_of("profiles", URL, Stamp(None, None, 1.0)) is None
    with pytest.raises(CacheError, match="cannot use the document cache"):
        cache.confirm("profiles", URL, Stamp(None, None, 1.0), 2.0)


def test_prune_keeps_listed_urls_and_removes_the_old_one_file_per_document_folder(
    cache: DocumentCache, tmp_path: Path
) -> None:
    cache.put("profiles", URL, b"{}", Validators(), 1.0)
    cache.put("profiles", "https://example.test/profile/gone", b"{}", Validators(), 1.0)
    cache.put("guide-planners", "https://example.test/profile/gone", b"{}", Validators(), 1.0)
    old = tmp_path / "documents" / "profiles"
    old.mkdir(parents=True)
    key = "0123456789abcdef" * 2
    for name in (f"{key}.body", f"{key}.meta.json", f".{key}.body.x1y2.tmp"):
        (old / name).write_bytes(b"{}")
    assert cache.prune("profiles", {URL}) == 1
    assert cache.get("profiles", URL) is not None
    assert cache.get("guide-planners", "https://example.test/profile/gone") is not None
    assert not (tmp_path / "documents").exists()


def test_prune_leaves_files_it_did_not_write_in_the_old_folder(
    cache: DocumentCache, tmp_path: Path
) -> None:
    """`documents/` may hold someone else's files: only the old entries' names are deleted."""
    key = "fedcba9876543210" * 2
    ours = tmp_path / "documents" / "profiles" / f"{key}.body"
    ours.parent.mkdir(parents=True)
    ours.write_bytes(b"{}")
    foreign = [
        tmp_path / "documents" / "notes.txt",
        tmp_path / "documents" / "profiles" / "keep.body",
        tmp_path / "documents" / "profiles" / f"{key}.body.bak",
    ]
    for path in foreign:
        path.write_bytes(b"not ours")
    cache.prune("profiles", set())
    assert not ours.exists()
    assert all(path.read_bytes() == b"not ours" for path in foreign)


def test_a_garbage_database_is_discarded_and_started_anew(
    cache: DocumentCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.put("profiles", URL, b"{}", Validators(), 1.0)
    cache.close()
    (tmp_path / "documents.sqlite").write_bytes(b"\x00garbage" * 1000)
    assert cache.get("profiles", URL) is None
    assert "discarding corrupt" in caplog.text
    cache.put("profiles", URL, b"again", Validators(), 2.0)
    document = cache.get("profiles", URL)
    assert document is not None
    assert document.body == b"again"


def test_a_full_disk_is_a_cache_error_and_reads_go_on(cache: DocumentCache) -> None:
    """SQLite's own "database or disk is full" (the page cap stands in for the disk)."""
    cache.put("profiles", URL, b"{}", Validators(), 1.0)
    with cache._lock:  # the connection is only used under the lock
        assert cache._connection is not None
        (pages,) = cache._connection.execute("PRAGMA page_count").fetchone()
        cache._connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(CacheError, match="full"):
        cache.put("profiles", "https://example.test/big", b"x" * 100_000, Validators(), 1.0)
    assert cache.get("profiles", URL) is not None


def test_a_folder_where_the_database_goes_is_a_cache_error(tmp_path: Path) -> None:
    (tmp_path / "documents.sqlite").mkdir()
    cache = DocumentCache(tmp_path / "documents.sqlite")
    with pytest.raises(CacheError, match="cannot use the document cache"):
        cache.put("profiles", URL, b"{}", Validators(), 1.0)
    assert cache.get("profiles", URL) is None
    assert cache.prune("profiles", set()) == 0
    assert (tmp_path / "documents.sqlite").is_dir()  # not ours to delete


def test_threads_share_the_cache(cache: DocumentCache) -> None:
    def write(number: int) -> None:
        for index in range(20):
            cache.put("profiles", f"{URL}/{number}/{index}", b"{}", Validators(), 1.0)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with sqlite3.connect(cache.path) as reader:
        assert reader.execute("SELECT count(*) FROM documents").fetchone() == (80,)


async def test_the_container_closes_the_document_cache_on_shutdown(tmp_path: Path) -> None:
    """The cache's SQLite connection is the container's: closed with it, never left to the GC."""
    config = make_config(tmp_path)
    async with open_container(config) as container:
        gateway: MaxrollGateway = await resolve(container.maxroll_gateway)
        gateway.documents.put("profiles", URL, b"{}", Validators(), 1.0)
        connection = gateway.documents._connection
        assert connection is not None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")


def test_a_new_cache_file_locked_by_another_writer_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes creating the cache at once: the switch to WAL waits instead of failing.

    The other writer lets go only once the cache has been refused and asks again, so the order is
    fixed, not left to timing (without the wait, `put` fails at the first refusal)."""
    path = tmp_path / "documents.sqlite"
    attempts: list[str] = []
    let_go, acquired = threading.Event(), threading.Event()
    connect = DocumentCache._connect

    def traced(self: DocumentCache) -> sqlite3.Connection:
        def trace(statement: str) -> None:
            if statement == "PRAGMA journal_mode = WAL":
                attempts.append(statement)
                if len(attempts) == 2:
                    let_go.set()

        connection = connect(self)
        connection.set_trace_callback(trace)
        return connection

    monkeypatch.setattr(DocumentCache, "_connect", traced)

    def hold() -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            acquired.set()
            let_go.wait(30)
            other.execute("ROLLBACK")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert acquired.wait(30)
        cache = DocumentCache(path)
        cache.put("profiles", URL, b"{}", Validators(), 1.0)
        assert cache.get("profiles", URL) is not None
        cache.close()
    finally:
        let_go.set()
        holder.join(30)
    assert len(attempts) >= 2
