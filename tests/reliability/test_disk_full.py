"""A full disk while caching: the cache is an optimisation, so the sync goes on and says so."""

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
    """Stands in for the `os` module of the cache: every cache file written whole (the guide
    list) goes to /dev/full, so writes fail with the kernel's real ENOSPC; everything else is the
    real `os`. (The documents' SQLite file reports a full disk as SQLite's "database or disk is
    full": tests/maxroll/test_document_cache.py and the unwritable-cache test in
    tests/services/test_sync_truth.py cover that path.)"""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, mode: str) -> IO[bytes]:
        os.close(fd)
        return open("/dev/full", mode)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_disk_full_while_caching_still_syncs_and_lists_the_problem(
    tmp_path: Path, fake_maxroll: FakeMaxroll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the disk full (real ENOSPC) the run still writes the index; the summary lists the
    cache problem with the kernel's reason; no half-written temporary file is left behind."""
    config = make_config(tmp_path, maxroll=fake_maxroll.config_values())
    first = await sync(config)
    assert first.guides_failed == 0
    before = stored_rows(index_file(config))

    monkeypatch.setattr(document_cache, "os", DiskFull())
    async with WorkerRuntime(config, run_scheduler=False):
        result = await tasks.scrape_guides_task(trigger="manual", force_refresh=True)
    assert result.outcome == "success", result.error
    assert result.summary is not None
    assert result.summary["problems"] >= 1
    [problem] = result.summary["warnings"]
    assert "could not be cached" in problem["error"]
    assert "No space left on device" in problem["error"]
    assert stored_rows(index_file(config)) == before == expected_rows(fake_maxroll.site)
    assert list((tmp_path / "cache").rglob("*.tmp")) == []  # no half-written temporary files

    monkeypatch.undo()
    again = await sync(config, force_refresh=True)
    assert again.guides_failed == 0
    assert stored_rows(index_file(config)) == expected_rows(fake_maxroll.site)
