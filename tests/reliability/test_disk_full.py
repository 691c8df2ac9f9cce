"""A full disk while caching: the sync never claims success it did not earn, and loses no data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import pytest

from d3_item_salvager.maxroll import document_cache
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows
from tests.reliability.test_faults import index_file, sync


class DiskFull:
    """Stands in for the `os` module of the cache: every cache file written goes to /dev/full,
    so writes fail with the kernel's real ENOSPC; everything else is the real `os`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, mode: str) -> IO[bytes]:
        os.close(fd)
        return open("/dev/full", mode)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_disk_full_while_caching_fails_the_guides_and_keeps_the_index(
    tmp_path: Path, fake_maxroll: FakeMaxroll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the disk full the run fails naming the cache file and ENOSPC; rows stay; it recovers."""
    config = make_config(tmp_path, maxroll=fake_maxroll.config_values())
    first = await sync(config)
    assert first.guides_failed == 0
    before = stored_rows(index_file(config))

    monkeypatch.setattr(document_cache, "os", DiskFull())
    async with WorkerRuntime(config, run_scheduler=False):
        result = await tasks.scrape_guides_task(trigger="manual", force_refresh=True)
    assert result.outcome == "failed"
    assert result.error is not None
    assert "cannot write cache file" in result.error
    assert "No space left on device" in result.error
    assert stored_rows(index_file(config)) == before
    assert list((tmp_path / "cache").rglob("*.tmp")) == []  # no half-written temporary files

    monkeypatch.undo()
    again = await sync(config, force_refresh=True)
    assert again.guides_failed == 0
    assert stored_rows(index_file(config)) == expected_rows(fake_maxroll.site)
