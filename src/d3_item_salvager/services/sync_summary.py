"""What one sync did, and the outcome policy that turns it into success or failure.

The `--json` keys of `SyncSummary.to_dict()` are stable (listed in the README): tools read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from d3_item_salvager.logging_setup import get_logger

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GuideFailure:
    """A guide that did not sync, and why."""

    url: str
    error: str
    transient: bool


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that went wrong without stopping the run (a document, the listing, the cache)."""

    where: str
    error: str
    transient: bool = False


@dataclass(slots=True)
class SyncSummary:
    """What one sync did. Every count is a real change in the index."""

    guides_seen: int = 0
    guides_processed: int = 0
    guides_revalidated: int = 0
    guides_skipped: int = 0
    guides_failed: int = 0
    guides_removed: int = 0
    builds_created: int = 0
    builds_updated: int = 0
    builds_removed: int = 0
    items_upserted: int = 0
    unknown_items: int = 0
    usages_created: int = 0
    usages_removed: int = 0
    requests: int = 0
    not_modified: int = 0
    bytes_received: int = 0
    guide_list_source: str = "api"  # "api" or "cache" (search unreachable)
    guide_list_complete: bool = True
    hits_refused: int = 0
    documents_pruned: int = 0
    problems: int = 0  # len(failures) + len(warnings)
    duration_seconds: float = 0.0
    failures: list[GuideFailure] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def fail_guide(self, url: str, error: str, *, transient: bool) -> None:
        self.guides_failed += 1
        self.failures.append(GuideFailure(url, error, transient))
        self.problems += 1
        _log.warning("guide failed", extra={"guide": url, "error": error})

    def warn(self, where: str, error: str, *, transient: bool = False) -> None:
        self.warnings.append(Problem(where, error, transient))
        self.problems += 1
        _log.warning("sync problem: %s: %s", where, error, extra={"where": where, "error": error})

    @property
    def has_transient_failures(self) -> bool:
        return any(f.transient for f in self.failures) or any(w.transient for w in self.warnings)

    def failure_reason(self) -> str | None:
        """Why the run failed, or None when it did its job (problems or not).

        More than half of the guides it attempted failing means something systematic (Maxroll's
        format changed, the index is unwritable): the run failed. Fewer is a success whose
        problems are listed.
        """
        attempted = self.guides_processed + self.guides_failed
        if not attempted or self.guides_failed * 2 <= attempted:
            return None
        first = self.failures[0]
        return (
            f"{self.guides_failed} of {attempted} guides failed (more than half); "
            f"first: {first.url}: {first.error}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
