"""The leader lock beside a SQLite job store: one holder, kept across a replaced store."""

from __future__ import annotations

from pathlib import Path

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
