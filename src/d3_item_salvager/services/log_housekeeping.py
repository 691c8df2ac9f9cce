"""Delete this program's own old log rotations, and nothing else.

Only the numbered backups `RotatingFileHandler` makes of `logging.file_name` (`workers.log.1`,
`workers.log.2`, ...) directly inside `logging.dir` are candidates: `logs/` is a common folder name
and the job runs inside host apps, so any other file there (`app.log`, `nginx-access.log`, ...) is
someone else's, however old. Never the live file, never a subfolder, never through a symlink.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from d3_item_salvager.config import LoggingConfig
from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LogCleanupSummary:
    """What a cleanup deleted and kept (counting only our own rotations)."""

    deleted_files: int
    deleted_bytes: int
    kept_files: int
    skipped_links: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rotation_pattern(file_name: str) -> re.Pattern[str]:
    """Names of the numbered backups of `file_name` (never the live file itself)."""
    return re.compile(re.escape(file_name) + r"\.[1-9][0-9]*")


class LogHousekeepingService:
    """Removes old rotations of the program's log file; the scan runs in a worker thread."""

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
        """Delete rotations of `logging.file_name` older than `logging.retention_days`."""
        return await anyio.to_thread.run_sync(self._cleanup_sync, limiter=self._limiter)

    def _cleanup_sync(self) -> LogCleanupSummary:
        root = Path(self._config.dir)
        if not root.is_dir() or root.is_symlink():
            return LogCleanupSummary(0, 0, 0, 0, 0)
        ours = rotation_pattern(self._config.file_name)
        cutoff = self._clock() - self._config.retention_days * 86400
        deleted = deleted_bytes = kept = links = errors = 0
        with os.scandir(root) as entries:
            names = sorted(entry.name for entry in entries if ours.fullmatch(entry.name))
        for name in names:
            path = root / name
            try:
                info = path.lstat()
            except OSError:
                errors += 1
                continue
            if stat.S_ISLNK(info.st_mode):
                links += 1
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
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
