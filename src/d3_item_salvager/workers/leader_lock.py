"""The leader lock: a lock file beside a SQLite job store, held by the process leading it.

The lease lives inside the job-store file, so a file deleted or replaced under a running leader
takes the lease with it: a scheduler started on the new file would find the lease free and lead at
once, beside the old leader, which notices the replacement only on its next lease round. So on
SQLite the leader also holds an exclusive `flock(2)` on `.<store name>.lock` in the store's folder,
a file that deleting or replacing the store leaves in place. A process competes for the lease only
while it holds this lock, so a scheduler on a replaced store leads only after the old leader has
stopped: it lets the lock go when it steps down, and the kernel does when it dies.

flock locks belong to an open file, so they exclude two processes and also two runtimes in one
process. They hold between processes sharing the folder on one host, which is where SQLite's own
locking already confines a job store (containers sharing a volume included).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def leader_lock_path(job_store: Path) -> Path:
    """The lock file of a SQLite job store: hidden, beside it, outside `<store>*` globs."""
    return job_store.with_name(f".{job_store.name}.lock")


class LeaderLock:
    """An exclusive, non-blocking flock on the job store's lock file; not reentrant."""

    def __init__(self, job_store: Path) -> None:
        self.path = leader_lock_path(job_store)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock unless another holder has it; True when we hold it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        opened = os.fstat(fd)
        self._fd, self._identity = fd, (opened.st_dev, opened.st_ino)
        return True

    def release(self) -> None:
        """Let the lock go (closing the file releases the flock)."""
        if self._fd is not None:
            fd, self._fd, self._identity = self._fd, None, None
            os.close(fd)

    def in_place(self) -> bool:
        """Whether the file we hold locked is still the one at the lock's path: deleted or
        replaced, another process could lock the new file while we still lead."""
        if self._identity is None:
            return False
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(self.path)
            return (now.st_dev, now.st_ino) == self._identity
        return False
