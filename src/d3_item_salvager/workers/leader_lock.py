"""The leader lock: held by the process leading a SQLite job store, outside the store's file.

The lease lives inside the job-store file, so a file deleted or replaced under a running leader
takes the lease with it: a scheduler started on the new file would find the lease free and lead at
once, beside the old leader, which notices the replacement only on its next lease round. So on
SQLite the leader also holds a lock that deleting or replacing the store leaves in place, and a
process competes for the lease only while it holds it. A scheduler on a replaced store therefore
leads only after the old leader has stopped: it lets the lock go when it steps down, and the
kernel does when it dies. The lock has two parts, both needed:

- an exclusive `flock(2)` on `.<store name>.lock` in the store's folder. It holds between all
  processes that share the folder, containers sharing a volume included, but a folder deleted
  whole takes it along;
- on Linux, a Unix socket bound to an abstract name made from the store's absolute path. No file
  operation can remove it, so it also covers a deleted folder, but it is seen only by processes
  in one network namespace (not by separate containers).

Both belong to an open file or socket, so they exclude two processes and also two runtimes in
one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
from pathlib import Path

_ABSTRACT_NAMES = sys.platform == "linux"


def leader_lock_path(job_store: Path) -> Path:
    """The lock file of a SQLite job store: hidden, beside it, outside `<store>*` globs."""
    return job_store.with_name(f".{job_store.name}.lock")


def leader_socket_name(job_store: Path) -> bytes:
    """The abstract socket name of a job store (Linux): the same for every path to the file
    that resolves alike, whether or not the file or its folder exists now."""
    digest = hashlib.sha256(os.path.realpath(job_store).encode()).hexdigest()[:32]
    return f"\0d3is-leader-{digest}".encode()


class LeaderLock:
    """The job store's lock file (flock) and, on Linux, its abstract socket; non-blocking."""

    def __init__(self, job_store: Path) -> None:
        self.path = leader_lock_path(job_store)
        self._socket_name = leader_socket_name(job_store)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._socket: socket.socket | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take both parts unless another holder has either; True when we hold it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_name = self._bind_name()
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        if not held_name:
            os.close(fd)  # releases the flock
            return False
        opened = os.fstat(fd)
        self._fd, self._identity = fd, (opened.st_dev, opened.st_ino)
        return True

    def _bind_name(self) -> bool:
        if not _ABSTRACT_NAMES:
            return True
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bound.bind(self._socket_name)
        except OSError:  # EADDRINUSE: another holder
            bound.close()
            return False
        self._socket = bound
        return True

    def release(self) -> None:
        """Let the lock go (closing the file releases the flock, closing the socket its name)."""
        if self._socket is not None:
            bound, self._socket = self._socket, None
            bound.close()
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
