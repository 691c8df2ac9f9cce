"""The guide list on disk, so a restart or an unreachable search API still has one."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from d3_item_salvager.logging_setup import get_logger
from d3_item_salvager.maxroll.document_cache import write_atomically
from d3_item_salvager.maxroll.models import GuideRecord

_log = get_logger(__name__)


class GuideListCache:
    """One JSON file holding the last guide list fetched and when."""

    FILE_NAME = "guide_list.json"

    def __init__(self, folder: Path) -> None:
        self.path = folder / self.FILE_NAME

    def load(self) -> tuple[list[GuideRecord], float] | None:
        """The cached guides and their fetch time, or None when absent or corrupt."""
        try:
            payload = json.loads(self.path.read_bytes())
            guides = [GuideRecord(**record) for record in payload["guides"]]
            fetched_at = float(payload["fetched_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _log.warning("discarding corrupt guide list cache", extra={"reason": str(exc)})
            with contextlib.suppress(OSError):
                self.path.unlink()
            return None
        return guides, fetched_at

    def save(self, guides: list[GuideRecord], fetched_at: float) -> None:
        """Replace the cached list atomically."""
        payload = {"fetched_at": fetched_at, "guides": [asdict(guide) for guide in guides]}
        write_atomically(self.path, json.dumps(payload).encode())
