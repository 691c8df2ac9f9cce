"""Fake services for task tests, injected through container overrides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from d3_item_salvager.services.build_guides import GuideFailure, SyncSummary

Behaviour = Callable[[int], Any]


class FakeSyncService:
    """Stands in for BuildGuideService: each call runs the next behaviour in the list.

    A behaviour is an exception to raise, "block" to wait until cancelled, or a SyncSummary.
    """

    def __init__(self, *behaviours: Any) -> None:
        self.behaviours = list(behaviours)
        self.calls: list[bool] = []
        self.started = asyncio.Event()

    async def prepare_database(
        self, force_refresh: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> SyncSummary:
        self.calls.append(force_refresh)
        self.started.set()
        behaviour = self.behaviours.pop(0) if self.behaviours else SyncSummary()
        if progress is not None:
            progress(1, 1)
        if behaviour == "block":
            await asyncio.Event().wait()
        if isinstance(behaviour, BaseException):
            raise behaviour
        assert isinstance(behaviour, SyncSummary)
        return behaviour


def summary_with_failure(transient: bool) -> SyncSummary:
    # The only guide attempted failed: more than half, so the run fails (outcome policy).
    summary = SyncSummary(guides_seen=1, guides_failed=1)
    summary.failures.append(GuideFailure("https://maxroll.gg/d3/guides/x", "boom", transient))
    return summary
