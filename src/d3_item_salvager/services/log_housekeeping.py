"""Delete log files past their retention, inside the log folder only.

Never the live log file, never anything outside `logging.dir`, never through a symlink: the walk
does not follow links, skips them, and checks each candidate's real path before deleting it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from d3_item_salvager.config import LoggingConfig
from d3_item_salvager.logging_setup import get_logger, live_log_files

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LogCleanupSummary:
    """What a cleanup deleted and kept."""

    deleted_files: int
    deleted_bytes: int
    kept_files: int
    skipped_links: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_log_file(name: str) -> bool:
    # workers.log, workers.log.1 (rotation), other *.log files; nothing else is ours to delete.
    return ".log" in name


class LogHousekeepingService:
    """Removes old log files; the walk runs in a worker thread."""

    def __init__(
        self,
        config: LoggingConfig,
        limiter: anyio.CapacityLimiter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._limiter = limiter
        self._clock = clock

    async def cleanup(self) -> LogCleanupSummary:
        """Delete log files older than `logging.retention_days`."""
        return await anyio.to_thread.run_sync(self._cleanup_sync, limiter=self._limiter)

    def _cleanup_sync(self) -> LogCleanupSummary:
        root = Path(self._config.dir)
        if not root.is_dir() or root.is_symlink():
            return LogCleanupSummary(0, 0, 0, 0, 0)
        real_root = root.resolve()
        live = live_log_files(self._config)
        cutoff = self._clock() - self._config.retention_days * 86400
        deleted = deleted_bytes = kept = links = errors = 0
        for folder, subfolders, files in os.walk(real_root, followlinks=False):
            # Never descend into linked folders (os.walk lists them but does not follow them).
            subfolders[:] = [d for d in subfolders if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except OSError:
                    errors += 1
                    continue
                if stat.S_ISLNK(info.st_mode):
                    links += 1
                    continue
                resolved = path.resolve()
                if (
                    not stat.S_ISREG(info.st_mode)
                    or not _is_log_file(name)
                    or resolved in live
                    or not resolved.is_relative_to(real_root)
                    or info.st_mtime >= cutoff
                ):
                    kept += 1
                    continue
                try:
                    path.unlink()
                except OSError as exc:
                    errors += 1
                    _log.warning(
                        "cannot delete old log file", extra={"path": str(path), "error": str(exc)}
                    )
                    continue
                deleted += 1
                deleted_bytes += info.st_size
        return LogCleanupSummary(deleted, deleted_bytes, kept, links, errors)
