"""DocumentCache on a real folder: one file per entry, confirmation by time, pruning, corruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from d3_item_salvager.errors import CacheError
from d3_item_salvager.maxroll.client import Validators
from d3_item_salvager.maxroll.document_cache import DocumentCache

URL = "https://example.test/profile/1"


@pytest.fixture
def cache(tmp_path: Path) -> DocumentCache:
    return DocumentCache(tmp_path / "documents")


def test_an_entry_is_one_file_that_reads_back(cache: DocumentCache, tmp_path: Path) -> None:
    cache.put("profiles", URL, b'{"a": 1}\n{"b": 2}', Validators('"v1"', "Mon"), 1_800_000_000.0)
    [entry] = (tmp_path / "documents" / "profiles").iterdir()
    assert entry == cache.path("profiles", URL)
    document = cache.get("profiles", URL)
    assert document is not None
    assert document.body == b'{"a": 1}\n{"b": 2}'  # a body with newlines is kept whole
    assert document.validators == Validators('"v1"', "Mon")
    assert document.fetched_at == 1_800_000_000.0
    assert cache.get("profiles", "https://example.test/profile/2") is None


def test_touch_renews_the_time_without_rewriting_the_file(cache: DocumentCache) -> None:
    cache.put("profiles", URL, b"{}", Validators(etag='"v1"'), 1_800_000_000.0)
    inode = cache.path("profiles", URL).stat().st_ino
    cache.touch("profiles", URL, 1_800_000_600.0)
    document = cache.get("profiles", URL)
    assert document is not None
    assert (document.body, document.fetched_at) == (b"{}", 1_800_000_600.0)
    assert cache.path("profiles", URL).stat().st_ino == inode
    cache.touch("profiles", "https://example.test/never-cached", 1.0)  # nothing to renew: no error


def test_a_torn_body_or_garbage_is_discarded(cache: DocumentCache) -> None:
    cache.put("profiles", URL, b'{"whole": true}', Validators(), 1.0)
    path = cache.path("profiles", URL)
    header = path.read_bytes().split(b"\n", 1)[0]
    path.write_bytes(header + b'\n{"who')
    assert cache.get("profiles", URL) is None
    assert not path.exists()
    cache.put("profiles", URL, b"{}", Validators(), 1.0)
    path.write_bytes(b"\x00garbage")
    assert cache.get("profiles", URL) is None
    assert not path.exists()


def test_prune_keeps_listed_urls_and_removes_old_layout_files(
    cache: DocumentCache, tmp_path: Path
) -> None:
    cache.put("profiles", URL, b"{}", Validators(), 1.0)
    cache.put("profiles", "https://example.test/profile/gone", b"{}", Validators(), 1.0)
    folder = tmp_path / "documents" / "profiles"
    (folder / "0123.body").write_bytes(b"{}")  # an entry of the two-file layout
    (folder / "0123.meta.json").write_bytes(b'{"url": "x"}')
    assert cache.prune("profiles", {URL}) == 2
    assert list(folder.iterdir()) == [cache.path("profiles", URL)]


def test_a_file_where_the_folder_goes_is_a_cache_error(
    cache: DocumentCache, tmp_path: Path
) -> None:
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "profiles").write_bytes(b"in the way")
    with pytest.raises(CacheError, match="cannot write cache file"):
        cache.put("profiles", URL, b"{}", Validators(), 1.0)
