"""A MaxrollGateway that records each worker-thread hand-off, by the function handed off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from d3_item_salvager.maxroll.gateway import MaxrollGateway

T = TypeVar("T")

# What a conditional read hands off after its request: one of these per document.
PER_DOCUMENT = ("_parse_and_store", "_confirm_and_parse")


class CountingGateway(MaxrollGateway):
    """Every call the gateway (and its conditional reads) runs in a worker thread, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.hand_offs: list[str] = []
        super().__init__(*args, **kwargs)

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        self.hand_offs.append(function.__name__)
        return await super()._in_thread(function, *args)

    def per_document(self) -> int:
        return sum(1 for name in self.hand_offs if name in PER_DOCUMENT)
