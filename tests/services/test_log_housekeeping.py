"""Log cleanup deletes old log files in logging.dir only: never the live file, never via links."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio

from d3_item_salvager.config import LoggingConfig
from d3_item_salvager.services.log_housekeeping import LogHousekeepingService

DAY = 86400.0


def aged(path: Path, days: float, content: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    moment = time.time() - days * DAY
    os.utime(path, (moment, moment), follow_symlinks=False)
    return path


async def test_cleanup_deletes_only_old_log_files_inside_the_folder(tmp_path: Path) -> None:
    """Old rotated logs go; new logs, the live log, other files and everything outside stay."""
    logs = tmp_path / "logs"
    outside = tmp_path / "outside"
    old_rotated = aged(logs / "workers.log.3", 30)
    old_nested = aged(logs / "archive" / "old.log", 30)
    live = aged(logs / "workers.log", 30)  # even when old, the live file is kept
    recent = aged(logs / "workers.log.1", 1)
    not_a_log = aged(logs / "notes.txt", 30)
    outside_file = aged(outside / "precious.log", 30)
    aged(outside / "dir" / "deep.log", 30)
    (logs / "link-to-outside.log").symlink_to(outside_file)
    (logs / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)

    service = LogHousekeepingService(
        LoggingConfig(dir=logs, retention_days=14), anyio.CapacityLimiter(1)
    )
    summary = await service.cleanup()

    assert not old_rotated.exists()
    assert not old_nested.exists()
    assert live.exists()
    assert recent.exists()
    assert not_a_log.exists()
    assert outside_file.exists()
    assert (outside / "dir" / "deep.log").exists()
    assert (logs / "link-to-outside.log").is_symlink()
    assert (summary.deleted_files, summary.deleted_bytes, summary.skipped_links) == (2, 2, 1)


async def test_log_folder_that_is_a_symlink_is_left_alone(tmp_path: Path) -> None:
    """If logging.dir itself is a link, cleanup does nothing rather than follow it."""
    real = tmp_path / "real"
    old = aged(real / "workers.log.5", 30)
    (tmp_path / "logs").symlink_to(real, target_is_directory=True)
    service = LogHousekeepingService(LoggingConfig(dir=tmp_path / "logs"), anyio.CapacityLimiter(1))
    summary = await service.cleanup()
    assert old.exists()
    assert summary.deleted_files == 0


async def test_missing_log_folder_is_not_an_error(tmp_path: Path) -> None:
    """No folder yet: nothing to delete."""
    service = LogHousekeepingService(LoggingConfig(dir=tmp_path / "none"), anyio.CapacityLimiter(1))
    assert (await service.cleanup()).deleted_files == 0
