"""Documents kept on disk between runs, with their validators and the time they were fetched.

Each entry is one file, `<namespace>/<key>.doc`: a first line of JSON metadata (URL, ETag,
Last-Modified, size and SHA-256 of the body), then the body. The file's modification time is when
the document was fetched or last confirmed unchanged (a 304), so confirming an entry is one
`utime` and not a rewrite. Files are written atomically (temporary file, then rename), so a crashed
process leaves the old entry or the new one. There is no fsync: after a power loss a file may come
back empty or torn, and the checksum catches that; an entry whose body does not match its checksum,
or whose metadata is unreadable, is treated as missing and removed. (An fsync per document cost more
than the whole sync's parsing; creating a file costs ~0.9 ms of system CPU on the benchmark
machine's disk, which is why an entry is one file, not a body and a metadata file.) Keys are hashes
of the URL, so no response can choose where a file is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from d3_item_salvager.errors import CacheError
from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.client import Validators

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CachedDocument:
    """A document read back from the cache."""

    url: str
    body: bytes
    validators: Validators
    fetched_at: float


def write_atomically(path: Path, data: bytes, *, mtime: float | None = None) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never half.

    `mtime`, when given, becomes the file's modification time.
    """
    try:
        try:
            handle, temporary = _temporary_beside(path)
        except FileNotFoundError:
            # The folder is created on the first write only: a mkdir per file is a system call
            # per document for nothing.
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = _temporary_beside(path)
    except OSError as exc:
        raise CacheError(f"cannot write cache file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        if mtime is not None:
            os.utime(temporary, (mtime, mtime))
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CacheError(f"cannot write cache file {path}: {exc.strerror}") from None


def _temporary_beside(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


class DocumentCache:
    """A folder of cached documents keyed by URL and a namespace."""

    SUFFIX = ".doc"

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def path(self, namespace: str, url: str) -> Path:
        """The file of an entry (whether or not it exists)."""
        key = hashlib.sha256(f"{namespace}\n{url}".encode()).hexdigest()[:32]
        return self._folder / namespace / f"{key}{self.SUFFIX}"

    def get(self, namespace: str, url: str) -> CachedDocument | None:
        """The cached document, or None when absent or corrupt (a corrupt entry is removed)."""
        path = self.path(namespace, url)
        try:
            with path.open("rb") as stream:
                fetched_at = os.fstat(stream.fileno()).st_mtime
                header = stream.readline()
                body = stream.read()
            meta = json.loads(header)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._discard(path, url, f"unreadable ({exc})")
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("url") != url
            or meta.get("size") != len(body)
            or meta.get("sha256") != hashlib.sha256(body).hexdigest()
        ):
            self._discard(path, url, "checksum or metadata mismatch")
            return None
        return CachedDocument(
            url=url,
            body=body,
            validators=Validators(etag=meta.get("etag"), last_modified=meta.get("last_modified")),
            fetched_at=fetched_at,
        )

    def put(
        self, namespace: str, url: str, body: bytes, validators: Validators, fetched_at: float
    ) -> None:
        """Store a document; raises CacheError when the folder is not writable."""
        meta = {
            "url": url,
            "etag": validators.etag,
            "last_modified": validators.last_modified,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        # json.dumps escapes every newline inside strings: the header is exactly one line.
        header = json.dumps(meta).encode() + b"\n"
        write_atomically(self.path(namespace, url), header + body, mtime=fetched_at)

    def touch(self, namespace: str, url: str, fetched_at: float) -> None:
        """Mark a cached document as confirmed fresh (after a 304): only its time changes.

        Raises CacheError when the file exists but its time cannot be set; a file gone since it
        was read is left to the next read (it is fetched again then).
        """
        path = self.path(namespace, url)
        try:
            os.utime(path, (fetched_at, fetched_at))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CacheError(f"cannot write cache file {path}: {exc.strerror}") from None

    def prune(self, namespace: str, keep: set[str]) -> int:
        """Delete the entries of `namespace` whose URL is not in `keep`; returns how many.

        Entries whose metadata cannot be read are deleted too (they would be discarded on read),
        and so are files of the older two-file layout (`.body` and `.meta.json`), never read now.
        """
        folder = self._folder / namespace
        try:
            entries = list(folder.iterdir())
        except OSError:
            return 0
        pruned = 0
        for path in entries:
            if path.name.endswith(self.SUFFIX):
                try:
                    with path.open("rb") as stream:
                        url = json.loads(stream.readline()).get("url")
                except (OSError, ValueError, AttributeError):
                    url = None
                if isinstance(url, str) and url in keep:
                    continue
            elif not path.name.endswith((".body", ".meta.json")):
                continue  # not ours (temporary files of a write in progress among them)
            with contextlib.suppress(OSError):
                path.unlink()
            if not path.name.endswith(".meta.json"):  # an old entry is counted once
                pruned += 1
        return pruned

    def _discard(self, path: Path, url: str, why: str) -> None:
        _log.warning("discarding corrupt cache entry", extra={"url": url, "reason": why})
        with contextlib.suppress(OSError):
            path.unlink()
