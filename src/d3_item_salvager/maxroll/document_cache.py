"""Documents kept on disk between runs, with their validators and the time they were fetched.

Each entry is two files under the cache folder: `<key>.body` and `<key>.meta.json` (URL, ETag,
Last-Modified, fetch time, size and SHA-256 of the body). Both are written atomically (temporary
file, then rename), body first, so a crashed process leaves either the old entry or the new one.
There is no fsync: after a power loss a file may come back empty or torn, and the checksum catches
that; an entry whose body does not match its checksum, or whose metadata is unreadable, is treated
as missing and removed. (An fsync per document cost more than the whole sync's parsing.) Keys are
hashes of the URL, so no response can choose where a file is written.
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
    """A folder of cached documents keyed by URL and a namespace."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _paths(self, namespace: str, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(f"{namespace}\n{url}".encode()).hexdigest()[:32]
        base = self._folder / namespace
        return base / f"{key}.body", base / f"{key}.meta.json"

    def get(self, namespace: str, url: str) -> CachedDocument | None:
        """The cached document, or None when absent or corrupt (a corrupt entry is removed)."""
        body_path, meta_path = self._paths(namespace, url)
        try:
            meta = json.loads(meta_path.read_bytes())
            body = body_path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._discard(namespace, url, f"unreadable ({exc})")
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("url") != url
            or meta.get("sha256") != hashlib.sha256(body).hexdigest()
            or not isinstance(meta.get("fetched_at"), int | float)
        ):
            self._discard(namespace, url, "checksum or metadata mismatch")
            return None
        return CachedDocument(
            url=url,
            body=body,
            validators=Validators(etag=meta.get("etag"), last_modified=meta.get("last_modified")),
            fetched_at=float(meta["fetched_at"]),
        )

    def put(
        self, namespace: str, url: str, body: bytes, validators: Validators, fetched_at: float
    ) -> None:
        """Store a document; raises CacheError when the folder is not writable."""
        body_path, meta_path = self._paths(namespace, url)
        meta = {
            "url": url,
            "etag": validators.etag,
            "last_modified": validators.last_modified,
            "fetched_at": fetched_at,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        write_atomically(body_path, body)
        write_atomically(meta_path, json.dumps(meta).encode())

    def touch(self, namespace: str, url: str, fetched_at: float) -> None:
        """Mark a cached document as confirmed fresh (after a 304): only its metadata is rewritten."""
        _body_path, meta_path = self._paths(namespace, url)
        try:
            meta = json.loads(meta_path.read_bytes())
        except (OSError, ValueError):
            return  # nothing sound to renew; the next read discards and refetches it
        if isinstance(meta, dict):
            meta["fetched_at"] = fetched_at
            write_atomically(meta_path, json.dumps(meta).encode())

    def prune(self, namespace: str, keep: set[str]) -> int:
        """Delete the entries of `namespace` whose URL is not in `keep`; returns how many.

        Entries whose metadata cannot be read are deleted too (they would be discarded on read).
        """
        folder = self._folder / namespace
        try:
            metas = list(folder.glob("*.meta.json"))
        except OSError:
            return 0
        pruned = 0
        for meta_path in metas:
            try:
                url = json.loads(meta_path.read_bytes()).get("url")
            except (OSError, ValueError, AttributeError):
                url = None
            if isinstance(url, str) and url in keep:
                continue
            body_path = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".body")
            for path in (meta_path, body_path):
                with contextlib.suppress(OSError):
                    path.unlink()
            pruned += 1
        return pruned

    def _discard(self, namespace: str, url: str, why: str) -> None:
        _log.warning("discarding corrupt cache entry", extra={"url": url, "reason": why})
        for path in self._paths(namespace, url):
            with contextlib.suppress(OSError):
                path.unlink()
