"""A full disk while caching: the cache is an optimisation, so the sync goes on and says so.
A full disk under the job store: one line saying so, exit 2, the stored history kept."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import anyio
import pytest

from d3_item_salvager.maxroll import document_cache
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.workers import tasks
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config
from tests.index_expectations import expected_rows, stored_rows
from tests.processes import child_env, run_cli
from tests.reliability.test_faults import index_file, sync
from tests.workers.test_cli import cli_config


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


def can_mount_a_small_disk() -> bool:
    """Whether this machine lets an unprivileged user namespace mount a tmpfs (most Linux do)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not can_mount_a_small_disk(), reason="needs unshare and a user namespace")
async def test_a_job_store_on_a_full_disk_says_so_and_keeps_its_history(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """The job store's folder is a tmpfs filled to the last byte (the kernel's real ENOSPC):
    `run` exits 2 saying the disk is full and that the history is kept, never to move it aside."""
    config = cli_config(tmp_path, fake_maxroll)
    store = tmp_path / "store"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(str(tmp_path / "jobs.sqlite"), str(store / "jobs.sqlite")))
    code, _, stderr = await run_cli("run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert code == 0, stderr
    before = (store / "jobs.sqlite").read_bytes()
    # In a mount namespace of its own, the store's folder becomes a small disk holding a copy of
    # the store, filled to the last byte; outside it, the folder is untouched.
    script = f"""
        set -e
        cp -a store saved
        mount -t tmpfs -o size=256k tmpfs store
        cp -a saved/. store/
        head -c 1048576 /dev/zero > store/filler 2>/dev/null || true
        exec {sys.executable} -m d3_item_salvager.workers run cleanup-logs --config {config}
    """
    process = await asyncio.create_subprocess_exec(
        "unshare", "-rm", "sh", "-c", script,
        cwd=tmp_path, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    with anyio.fail_after(60):
        stdout, raw_stderr = await process.communicate()
    stderr = raw_stderr.decode()
    assert (process.returncode, stdout) == (2, b""), stderr
    [line] = stderr.strip().splitlines()
    assert f"scheduler.job_store_path = '{store / 'jobs.sqlite'}'" in line
    assert "the disk holding the job store is full" in line
    assert "the stored jobs and run history are kept" in line
    assert "move the file aside" not in line
    assert "sqlalche.me" not in line
    assert (store / "jobs.sqlite").read_bytes() == before
