"""The leader lock beside a SQLite job store: one holder, kept across a replaced store."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from d3_item_salvager.workers.leader_lock import LeaderLock, leader_lock_path, probe_leader


def held_by(store: Path) -> tuple[str, bool] | None:
    seen = probe_leader(store)
    return (seen.holder, seen.held) if seen is not None else None


def test_one_holder_at_a_time_and_release_frees_it(tmp_path: Path) -> None:
    store = tmp_path / "scheduler.sqlite"
    first, second = LeaderLock(store), LeaderLock(store)
    assert first.path == tmp_path / ".scheduler.sqlite.lock"
    assert first.take() is True
    assert first.take() is True  # already ours
    assert second.take() is False
    first.let_go()
    assert second.take() is True
    assert first.take() is False
    second.let_go()


def test_the_lock_outlives_a_replaced_store_and_notices_its_own_replacement(
    tmp_path: Path,
) -> None:
    """Replacing the store leaves the lock held; deleting the lock file itself is noticed."""
    store = tmp_path / "scheduler.sqlite"
    store.write_bytes(b"old")
    holder = LeaderLock(store)
    assert holder.take()
    store.unlink()
    store.write_bytes(b"new")
    assert LeaderLock(store).take() is False
    assert holder.in_place()
    holder.path.unlink()
    assert not holder.in_place()
    holder.let_go()
    assert not holder.in_place()


@pytest.mark.skipif(sys.platform != "linux", reason="abstract socket names are Linux's")
def test_the_lock_outlives_a_deleted_folder_on_linux(tmp_path: Path) -> None:
    """The store's whole folder deleted and made again: a new lock file is free, but the
    abstract socket name, which no file operation removes, still excludes a second holder."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    store = folder / "scheduler.sqlite"
    holder = LeaderLock(store)
    assert holder.take()
    shutil.rmtree(folder)
    folder.mkdir()
    second = LeaderLock(store)
    assert second.take() is False
    assert not second.held
    assert second.path.exists()  # its flock was taken and let go again
    holder.let_go()
    assert second.take() is True
    second.let_go()


def test_status_reads_who_leads_without_taking_or_creating_anything(tmp_path: Path) -> None:
    """`probe_leader` names the holder written into the lock file and says whether the kernel
    still holds the lock for it; it creates no file and leaves the lock free to take."""
    store = tmp_path / "scheduler.sqlite"
    assert probe_leader(store) is None
    assert not leader_lock_path(store).exists()
    holder = LeaderLock(store, "host:1:abc")
    assert holder.take()
    assert held_by(store) == ("host:1:abc", True)
    holder.let_go()
    assert held_by(store) == ("host:1:abc", False)
    successor = LeaderLock(store, "host:2:d")
    assert successor.take()  # the probe left nothing held
    assert held_by(store) == ("host:2:d", True)
    successor.let_go()


def test_a_lock_file_without_a_name_still_reads_as_held(tmp_path: Path) -> None:
    """A lock file an older release holds says nothing of its holder: `probe_leader` still
    reports it held, with a holder that says so rather than an empty name."""
    store = tmp_path / "scheduler.sqlite"
    older = LeaderLock(store)  # an older release wrote no name
    assert older.take()
    leader_lock_path(store).write_bytes(b"")
    assert held_by(store) == ("a process that did not say", True)
    older.let_go()


async def test_every_round_stamps_the_lock_file_for_status(tmp_path: Path) -> None:
    """Taking the lock and every renewal stamp the lock file's modification time, which is how
    `status` tells a leader still going through its rounds from a frozen one."""
    store = tmp_path / "scheduler.sqlite"
    store.write_bytes(b"")
    holder = LeaderLock(store, "host:1:abc")
    assert holder.take()
    long_ago = time.time() - 3600
    os.utime(holder.path, (long_ago, long_ago))
    seen = probe_leader(store)
    assert seen is not None
    assert seen.renewed_at == long_ago
    assert await holder.renew()
    seen = probe_leader(store)
    assert seen is not None
    assert seen.renewed_at > long_ago + 3000
    holder.let_go()


def test_every_path_to_one_store_finds_one_lock_file(tmp_path: Path) -> None:
    """A store reached through a symbolic link (to it or to its folder) has its lock file
    beside the file itself: `status` through either path sees the leader."""
    (tmp_path / "real").mkdir()
    store = tmp_path / "real" / "scheduler.sqlite"
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    through_link = tmp_path / "linked" / "scheduler.sqlite"
    assert leader_lock_path(through_link) == leader_lock_path(store)
    holder = LeaderLock(through_link, "host:1:abc")
    assert holder.take()
    assert held_by(store) == ("host:1:abc", True)
    holder.let_go()
