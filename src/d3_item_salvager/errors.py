"""Errors raised by d3-item-salvager.

The tree::

    D3ItemSalvagerError
    ├── ConfigError                 a setting is missing or invalid
    ├── MaxrollError                anything that went wrong talking to, or reading, Maxroll
    │   ├── FetchError              a request failed for good (4xx, refused URL, body too large)
    │   │   ├── TransientFetchError the request may succeed later (timeout, reset, 429, 5xx)
    │   │   ├── NotFoundError       404 (also a LookupError)
    │   │   └── TokenRefusedError   the search answered 401 or 403 to the bearer token
    │   └── ParseError              a document is not in the expected format
    ├── UnsafeUrlError              a value would send a request somewhere it must not go
    ├── CacheError                  a cache file could not be written
    ├── IndexDatabaseError          the index database refused an operation
    │   └── IndexLockedError        another writer held the index past the busy timeout
    └── JobRunningElsewhereError    a manual run met a run of the same job in another process

Messages are built here from ids and URLs, so every caller reports the same facts the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

# SQLSTATE of PostgreSQL's "disk full" (class 53, insufficient resources).
_POSTGRES_DISK_FULL = "53100"


def error_text(error: BaseException) -> str:
    """How an error reads in a message. For a database error SQLAlchemy wrapped, the driver's own
    words: SQLAlchemy's text adds the SQL statement, its parameters and a "Background on this
    error at: https://sqlalche.me/..." line, which mean nothing to an operator. On one line."""
    driver_error = getattr(error, "orig", None)  # SQLAlchemy's DBAPIError; no import at start
    text = str(driver_error if isinstance(driver_error, BaseException) else error)
    return " ".join(text.split())  # one line: psycopg's messages span several


def disk_full(error: BaseException, folder: Path | None = None) -> bool:
    """Whether a database error means the disk is full.

    SQLite says "database or disk is full" when a write finds no space, but "disk I/O error" when
    it cannot even size the shared-memory file of a WAL database on opening; the latter is a full
    disk when `folder` (where the file lives) has no space left. PostgreSQL says so by SQLSTATE.
    """
    driver_error = getattr(error, "orig", error)
    name = getattr(driver_error, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or getattr(driver_error, "sqlstate", None) == _POSTGRES_DISK_FULL:
        return True
    if name.startswith("SQLITE_IOERR") and folder is not None:
        try:
            return os.statvfs(folder).f_bavail == 0
        except OSError:
            return False
    return False


def damaged_database(error: BaseException) -> bool:
    """Whether SQLite found the file damaged or not a database at all (the only errors for which
    starting over with an empty file is the remedy)."""
    name = getattr(getattr(error, "orig", error), "sqlite_errorname", "")
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


class D3ItemSalvagerError(Exception):
    """Base of every error this application raises on purpose."""


class ConfigError(D3ItemSalvagerError):
    """The configuration is missing a value or holds an invalid one."""


class MaxrollError(D3ItemSalvagerError):
    """Something went wrong fetching or reading a Maxroll document."""


class FetchError(MaxrollError):
    """A request to Maxroll failed and retrying will not help."""

    def __init__(self, url: str, reason: str, *, status_code: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.status_code = status_code
        super().__init__(f"fetching {url} failed: {reason}")


class TransientFetchError(FetchError):
    """A request to Maxroll failed in a way that may succeed on a later try."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        status_code: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(url, reason, status_code=status_code)


class NotFoundError(FetchError, LookupError):
    """Maxroll answered 404 for a document."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "404 Not Found", status_code=404)


class TokenRefusedError(FetchError):
    """The search API refused the bearer token (401 or 403): no listing can be trusted."""

    def __init__(self, url: str, status_code: int) -> None:
        super().__init__(
            url,
            f"HTTP {status_code}: the bearer token was refused "
            "(check maxroll.bearer_token; the cached guide list is not used in its place)",
            status_code=status_code,
        )


class ParseError(MaxrollError):
    """A Maxroll document is malformed: names the document and what is wrong with it."""

    def __init__(self, document: str, what: str) -> None:
        self.document = document
        self.what = what
        super().__init__(f"cannot read {document}: {what}")


class UnsafeUrlError(D3ItemSalvagerError, ValueError):
    """A planner id or permalink would make the client request another host or path."""

    def __init__(self, kind: str, value: str, why: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"refusing {kind} {value[:200]!r}: {why}")


class CacheError(D3ItemSalvagerError):
    """A cache file could not be written."""


class IndexDatabaseError(D3ItemSalvagerError):
    """The index database failed or holds a schema this version cannot use."""


class IndexLockedError(IndexDatabaseError):
    """Another writer held the index for longer than `database.busy_timeout_seconds`.

    Transient: the run is retried later.
    """


class JobRunningElsewhereError(D3ItemSalvagerError):
    """A manual run was refused: another process (or runtime) holds the job's claim now.

    The refused run never started; it is recorded `skipped` in the run history, naming the
    holder.
    """

    def __init__(self, job_id: str, holder: str, run_id: str) -> None:
        self.job_id, self.holder, self.run_id = job_id, holder, run_id
        super().__init__(f"{job_id} is running now in {holder} (run {run_id})")
