"""Log cleanup deletes only old rotations of our own log file: never the live file, never others'."""

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


async def test_cleanup_deletes_only_old_rotations_of_our_own_log_file(tmp_path: Path) -> None:
    """Old numbered backups of logging.file_name go; nothing else, however old, is touched."""
    logs = tmp_path / "logs"
    outside = tmp_path / "outside"
    old_rotations = [aged(logs / "workers.log.3", 30), aged(logs / "workers.log.12", 30, "xy")]
    live = aged(logs / "workers.log", 30)  # even when old, the live file is kept
    recent = aged(logs / "workers.log.1", 1)
    # Other programs' files in a shared `logs/` folder, all older than the retention.
    foreign = [
        aged(logs / name, 300)
        for name in (
            "app.log",
            "nginx-access.log",
            "nginx-access.log.1",
            "workers.log.old",
            "workers.log.1.gz",
            "workers.log.0",
            "other-workers.log.2",
            "notes.txt",
        )
    ]
    nested = aged(logs / "archive" / "workers.log.4", 30)
    outside_file = aged(outside / "workers.log.7", 30)
    (logs / "workers.log.9").symlink_to(outside_file)

    service = LogHousekeepingService(
        LoggingConfig(dir=logs, retention_days=14), anyio.CapacityLimiter(1)
    )
    summary = await service.cleanup()

    assert not any(path.exists() for path in old_rotations)
    assert all(path.exists() for path in [live, recent, nested, outside_file, *foreign])
    assert (logs / "workers.log.9").is_symlink()
    assert (summary.deleted_files, summary.deleted_bytes, summary.skipped_links) == (2, 3, 1)
    assert summary.kept_files == 1


async def test_cleanup_follows_a_custom_log_file_name(tmp_path: Path) -> None:
    """With logging.file_name = d3.log, d3.log.N rotations are ours and workers.log.N are not."""
    logs = tmp_path / "logs"
    ours = aged(logs / "d3.log.2", 30)
    not_ours = aged(logs / "workers.log.2", 30)
    service = LogHousekeepingService(
        LoggingConfig(dir=logs, file_name="d3.log", retention_days=14), anyio.CapacityLimiter(1)
    )
    assert (await service.cleanup()).deleted_files == 1
    assert not ours.exists()
    assert not_ours.exists()


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
