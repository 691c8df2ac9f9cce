"""Documents kept on disk between runs, with their validators and the time they were fetched.

All entries live in one SQLite file (`documents.sqlite` under the cache folder), one row per
document: namespace, URL, ETag, Last-Modified, fetch time and body. Creating a file costs ~1 ms of
system CPU on the benchmark machine's disk (ext4 inode allocation), and a file per document (two,
before: body and metadata) was the largest CPU cost of a sync; a row costs ~0.06 ms. Each write
is its own transaction, so a crashed process leaves the old entry or the new one; there is no
fsync (WAL, synchronous NORMAL): after a power loss the last entries may be lost, never torn. A
database that cannot be read (garbage, a newer layout) is discarded and started anew: the cache is
an optimisation, and every document in it can be fetched again.

`write_atomically` (temporary file, then rename) is kept for the single-file caches (the list).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from d3_item_salvager.data.dialects import switch_to_wal
from d3_item_salvager.errors import CacheError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.client import Validators

_log = get_logger(__name__)

# What older releases wrote under `documents/<namespace>/`: `<key>.body`, `<key>.meta.json` (key:
# 32 hex digits) and their temporary files. Nothing else there is ours, so nothing else is deleted.
_LEGACY_FILE = re.compile(r"\.?[0-9a-f]{32}\.(body|meta\.json)(\..+\.tmp)?")

_TIMEOUT_SECONDS = 5.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents ("
    "namespace TEXT NOT NULL, url TEXT NOT NULL, etag TEXT, last_modified TEXT, "
    "fetched_at REAL NOT NULL, body BLOB NOT NULL, PRIMARY KEY (namespace, url))"
)


class Stamp(NamedTuple):
    """What identifies one stored version of a document: its validators and when it was stored.

    Every write (a new body, or a 304 renewing the time) gives a new stamp, so a row still
    carrying a stamp read earlier is the very version that was read then.
    """

    etag: str | None
    last_modified: str | None
    fetched_at: float

    @property
    def validators(self) -> Validators:
        return Validators(etag=self.etag, last_modified=self.last_modified)


# A row is the version a stamp describes only when all three match (`IS`: validators may be NULL).
_SAME_VERSION = "namespace = ? AND url = ? AND etag IS ? AND last_modified IS ? AND fetched_at = ?"


@dataclass(frozen=True, slots=True)
class CachedDocument:
    """A document read back from the cache."""

    url: str
    body: bytes
    validators: Validators
    fetched_at: float

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.validators.etag, self.validators.last_modified, self.fetched_at)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise CacheError(f"cannot write cache file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CacheError(f"cannot write cache file {path}: {exc.strerror}") from None


class DocumentCache:
    """Cached documents keyed by a namespace and URL, in one SQLite file.

    Safe to call from several threads: the one connection is used under a lock (each call is
    short). `legacy_folder` is where older releases kept one file per document; the first prune
    deletes those files (and folders left empty), never anything else found there.
    """

    def __init__(self, path: Path, *, legacy_folder: Path | None = None) -> None:
        self.path = path
        self._legacy_folder = legacy_folder
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def get(self, namespace: str, url: str) -> CachedDocument | None:
        """The cached document, or None when absent (or the cache cannot be read)."""
        row = self._read(
            "SELECT etag, last_modified, fetched_at, body FROM documents "
            "WHERE namespace = ? AND url = ?",
            (namespace, url),
        )
        if not row:
            return None
        etag, last_modified, fetched_at, body = row[0]
        return CachedDocument(
            url=url,
            body=bytes(body),
            validators=Validators(etag=etag, last_modified=last_modified),
            fetched_at=float(fetched_at),
        )

    def stamps(self, namespace: str) -> dict[str, Stamp] | None:
        """The stamp of every document of `namespace`, by URL, without the bodies (one query);
        None when the cache cannot be read (now: it may be readable again later)."""
        rows = self._read(
            "SELECT url, etag, last_modified, fetched_at FROM documents WHERE namespace = ?",
            (namespace,),
        )
        if rows is None:
            return None
        return {url: Stamp(etag, modified, float(at)) for url, etag, modified, at in rows}

    def stamp(self, namespace: str, url: str) -> Stamp | None:
        """The stamp of one document, without its body; None when absent or unreadable."""
        rows = self._read(
            "SELECT etag, last_modified, fetched_at FROM documents WHERE namespace = ? AND url = ?",
            (namespace, url),
        )
        if not rows:
            return None
        etag, last_modified, fetched_at = rows[0]
        return Stamp(etag, last_modified, float(fetched_at))

    def body_of(self, namespace: str, url: str, stamp: Stamp) -> bytes | None:
        """The body of the version `stamp` describes; None when that version is no longer stored
        (replaced, renewed or deleted since) or the cache cannot be read."""
        rows = self._read(
            f"SELECT body FROM documents WHERE {_SAME_VERSION}", (namespace, url, *stamp)
        )
        return bytes(rows[0][0]) if rows else None

    def confirm(self, namespace: str, url: str, stamp: Stamp, fetched_at: float) -> bytes | None:
        """After a 304 to `stamp`'s validators: renew the time and return the body, in one
        statement. None (nothing renewed) when that version is no longer stored: another writer
        replaced or renewed it, or it was deleted. Raises CacheError when it cannot be written.
        """
        rows = self._run(
            f"UPDATE documents SET fetched_at = ? WHERE {_SAME_VERSION} RETURNING body",
            (fetched_at, namespace, url, *stamp),
        )
        return bytes(rows[0][0]) if rows else None

    def renew(self, namespace: str, url: str, stamp: Stamp, fetched_at: float) -> bool:
        """`confirm` without reading the body back: False when that version is no longer stored.
        Raises CacheError when it cannot be written."""
        rows = self._run(
            f"UPDATE documents SET fetched_at = ? WHERE {_SAME_VERSION} RETURNING 1",
            (fetched_at, namespace, url, *stamp),
        )
        return bool(rows)

    def put(
        self, namespace: str, url: str, body: bytes, validators: Validators, fetched_at: float
    ) -> None:
        """Store a document; raises CacheError when it cannot be written (disk full)."""
        self._run(
            "INSERT OR REPLACE INTO documents "
            "(namespace, url, etag, last_modified, fetched_at, body) VALUES (?, ?, ?, ?, ?, ?)",
            (namespace, url, validators.etag, validators.last_modified, fetched_at, body),
        )

    def prune(self, namespace: str, keep: set[str]) -> int:
        """Delete the entries of `namespace` whose URL is not in `keep`; returns how many."""
        if self._legacy_folder is not None and self._legacy_folder.is_dir():
            remove_legacy_documents(self._legacy_folder)
        try:
            stored = self._run("SELECT url FROM documents WHERE namespace = ?", (namespace,))
            gone = [url for (url,) in stored if url not in keep]
            if gone:
                self._run(
                    "DELETE FROM documents WHERE namespace = ? "
                    "AND url IN (SELECT value FROM json_each(?))",
                    (namespace, json.dumps(gone)),
                )
        except CacheError as exc:
            _log.warning("could not prune the document cache", extra={"error": str(exc)})
            return 0
        return len(gone)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _read(self, statement: str, parameters: tuple[object, ...]) -> list[Any] | None:
        """A read's rows; None when the cache cannot be read (an optimisation, never an error)."""
        try:
            return self._run(statement, parameters)
        except CacheError as exc:
            _log.debug("document cache unreadable", extra={"error": str(exc)})
            return None

    def _run(self, statement: str, parameters: tuple[object, ...]) -> list[Any]:
        """One statement (its own transaction); its rows.

        A database that turns out corrupt is discarded and the statement run once more on a new
        one; any other failure (disk full, locked past the timeout) raises CacheError.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    connection = self._connection or self._open()
                    self._connection = connection
                    return connection.execute(statement, parameters).fetchall()
                except sqlite3.DatabaseError as exc:
                    if attempt == 2 or not _is_corruption(exc):
                        raise CacheError(
                            f"cannot use the document cache {self.path}: {exc}"
                        ) from None
                    self._discard(exc)
                except OSError as exc:
                    raise CacheError(
                        f"cannot use the document cache {self.path}: {exc.strerror}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self, error: sqlite3.Error) -> None:
        _log.warning(
            "discarding corrupt cache entry",
            extra={"url": str(self.path), "reason": f"unreadable database ({error})"},
        )
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{suffix}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each statement is its own transaction.
        connection = self._connect()
        try:
            # A new file: waits for another process creating it at the same moment.
            switch_to_wal(connection, _TIMEOUT_SECONDS, time.sleep)
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection


def remove_legacy_documents(folder: Path) -> None:
    """Delete the one-file-per-document entries older releases wrote under `folder`.

    Only files named the way those releases named them, one folder level down; each folder, and
    `folder` itself, is removed only when that leaves it empty.
    """
    for namespace in folder.iterdir():
        if not namespace.is_dir() or namespace.is_symlink():
            continue
        for entry in namespace.iterdir():
            if _LEGACY_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    entry.unlink()
        with contextlib.suppress(OSError):
            namespace.rmdir()  # fails, as it should, while anything else is in it
    with contextlib.suppress(OSError):
        folder.rmdir()


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    """Garbage or a damaged file (discard it), not a lock, a full disk or a missing folder."""
    text = str(error)
    return "malformed" in text or "not a database" in text
