"""Leadership of a SQLite job store: a lock beside the store, which the kernel drops when its
holder dies.

On a SQLite job store (`scheduler.job_store_path`), whose processes share one host, the process
that holds this lock leads: there is no lease row to renew and nothing expires, so nothing
needs a clock, and a leader that dies lets the lock go at once. A lease row inside the file would
also be deleted or replaced with the file, letting a scheduler started on the new file lead at
once beside the old leader; the lock stays where it was. The lock has two parts, both needed:

- an exclusive `flock(2)` on `.<store name>.lock` in the store's folder. It holds between all
  processes that share the folder, containers sharing a volume included, but a folder deleted
  whole takes it along;
- on Linux, a Unix socket bound to an abstract name made from the store's absolute path. No file
  operation can remove it, so it also covers a deleted folder, but it is seen only by processes
  in one network namespace (not by separate containers).

Both belong to an open file or socket, so they exclude two processes and also two runtimes in
one process. The leader checks every round (`renew`) that the store and the lock file are still
the ones it opened; either deleted or replaced ends its leading for good (FatalLeadershipError),
and a scheduler started on the new files meanwhile leads only after it has stopped. The holder
writes its worker id into the lock file, so `status` can name it, and stamps the file's
modification time every round, so `status` tells a frozen leader (the lock held, no round for a
lease period) from a live one (see `probe_leader`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

_ABSTRACT_NAMES = sys.platform == "linux"


def leader_lock_path(job_store: Path) -> Path:
    """The lock file of a SQLite job store: hidden, beside it, outside `<store>*` globs; beside
    the file itself when the store's path goes through a symbolic link, so every path to one
    store finds one lock file."""
    real = Path(os.path.realpath(job_store))
    return real.with_name(f".{real.name}.lock")


def leader_socket_name(job_store: Path) -> bytes:
    """The abstract socket name of a job store (Linux): the same for every path to the file
    that resolves alike, whether or not the file or its folder exists now."""
    digest = hashlib.sha256(os.path.realpath(job_store).encode()).hexdigest()[:32]
    return f"\0d3is-leader-{digest}".encode()


class FatalLeadershipError(RuntimeError):
    """Leading cannot go on in this process (e.g. its job store was deleted or replaced)."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return (found.st_dev, found.st_ino)


class LeaderLock:
    """The job store's lock file (flock) and, on Linux, its abstract socket; non-blocking.

    It is what leadership holds on a SQLite job store: `try_acquire`, `renew` and `release`
    answer as a lease's do (leadership.py), without a statement or an expiry.
    """

    ttl: float | None = None  # held until released, or until the process dies

    def __init__(self, job_store: Path, holder: str = "", check_interval: float = 1.0) -> None:
        self.job_store = job_store
        self.path = leader_lock_path(job_store)
        self.holder = holder
        self.check_interval = check_interval  # how often the leader checks its files
        self._socket_name = leader_socket_name(job_store)
        self._store_identity = _identity(job_store)  # the store as opened by this process
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._socket: socket.socket | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def try_acquire(self) -> bool:
        """Lead unless another process does (leadership's side of `take`). A standby whose
        store was deleted or replaced never leads: its connections may still write to the old
        file, beside a scheduler restarted on the new one (raises, as `renew` does)."""
        self._check_store()
        return self.take()

    async def renew(self) -> bool:
        """Still ours while the store and the lock file are the ones opened (else raises); the
        lock file's modification time says when we last checked (`probe_leader`)."""
        self._check_store()
        if not self.in_place():
            raise FatalLeadershipError(
                f"{self.path}: the scheduler's lock file was deleted or replaced while the "
                "scheduler ran; stopping (restart to lead again)"
            )
        self._touch()
        return True

    def _touch(self) -> None:
        """Stamp the lock file now: a leader whose rounds stop (a frozen process) still holds
        the lock, and only this time tells `status` so."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.utime(self._fd)

    def _check_store(self) -> None:
        if _identity(self.job_store) != self._store_identity:
            raise FatalLeadershipError(
                f"scheduler.job_store_path = {str(self.job_store)!r}: the job store was deleted "
                "or replaced while the scheduler ran; stopping (restart to use the new file)"
            )

    async def release(self) -> None:
        self.let_go()

    def stepped_down(self) -> None:
        """Let the lock go at once, with no statement: the next leader may start."""
        self.let_go()

    def take(self) -> bool:
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
        with contextlib.suppress(OSError):  # only for `status` to name us: a full disk may refuse
            os.ftruncate(fd, 0)
            os.write(fd, self.holder.encode())
        self._touch()
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

    def let_go(self) -> None:
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
        return self._identity is not None and _identity(self.path) == self._identity


@dataclass(frozen=True, slots=True)
class LeaderSeen:
    """What the lock file beside a SQLite job store says: who took it, whether the kernel still
    holds the lock for it, and when it last went through a round (epoch seconds)."""

    holder: str
    held: bool
    renewed_at: float


def probe_leader(job_store: Path) -> LeaderSeen | None:
    """Who leads the SQLite job store, or None when no process ever led it. Reads only: the
    lock file is opened read-only, never created, and locked shared for an instant (a process
    trying to lead then tries again at its next round)."""
    path = leader_lock_path(job_store)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        holder = os.read(fd, 1024).decode(errors="replace") or "a process that did not say"
        renewed_at = os.fstat(fd).st_mtime
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LeaderSeen(holder, True, renewed_at)
        return LeaderSeen(holder, False, renewed_at)  # closing the file lets the lock go
    finally:
        os.close(fd)
