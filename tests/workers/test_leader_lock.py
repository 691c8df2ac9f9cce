"""The leader lock beside a SQLite job store: one holder, kept across a replaced store."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from d3_item_salvager.workers.leader_lock import LeaderLock


def test_one_holder_at_a_time_and_release_frees_it(tmp_path: Path) -> None:
    store = tmp_path / "scheduler.sqlite"
    first, second = LeaderLock(store), LeaderLock(store)
    assert first.path == tmp_path / ".scheduler.sqlite.lock"
    assert first.try_acquire() is True
    assert first.try_acquire() is True  # already ours
    assert second.try_acquire() is False
    first.release()
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    second.release()


def test_the_lock_outlives_a_replaced_store_and_notices_its_own_replacement(
    tmp_path: Path,
) -> None:
    """Replacing the store leaves the lock held; deleting the lock file itself is noticed."""
    store = tmp_path / "scheduler.sqlite"
    store.write_bytes(b"old")
    holder = LeaderLock(store)
    assert holder.try_acquire()
    store.unlink()
    store.write_bytes(b"new")
    assert LeaderLock(store).try_acquire() is False
    assert holder.in_place()
    holder.path.unlink()
    assert not holder.in_place()
    holder.release()
    assert not holder.in_place()


@pytest.mark.skipif(sys.platform != "linux", reason="abstract socket names are Linux's")
def test_the_lock_outlives_a_deleted_folder_on_linux(tmp_path: Path) -> None:
    """The store's whole folder deleted and made again: a new lock file is free, but the
    abstract socket name, which no file operation removes, still excludes a second holder."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    store = folder / "scheduler.sqlite"
    holder = LeaderLock(store)
    assert holder.try_acquire()
    shutil.rmtree(folder)
    folder.mkdir()
    second = LeaderLock(store)
    assert second.try_acquire() is False
    assert not second.held
    assert second.path.exists()  # its flock was taken and let go again
    holder.release()
    assert second.try_acquire() is True
    second.release()
