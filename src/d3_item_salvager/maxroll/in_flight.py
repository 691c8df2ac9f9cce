"""Concurrent callers of one key share the one call under way; nothing is kept after it.

Two jobs of one runtime asking for the same document at the same moment (on a first start the
sync and the cache refresh both read the whole search and the 2 MB data.json) make one request.
Unlike `services.single_flight.SingleFlight`, which memoises profiles for a whole sync, nothing
outlives the call: the next caller fetches anew (conditionally, from the cache's validators).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Flight(Generic[V]):
    """One call under way, and how it ended (neither finished nor failed: it was cancelled)."""

    done: anyio.Event = field(default_factory=anyio.Event)
    value: V | None = None
    error: Exception | None = None
    finished: bool = False


class InFlight(Generic[K, V]):
    """Shares the call under way for a key among its concurrent callers.

    A call that fails gives its error to every caller that shared it; a later call starts anew.
    A call cancelled (its caller's run timed out, say) gives nothing: a caller that was waiting
    for it makes the call itself.
    """

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def __contains__(self, key: object) -> bool:
        """Whether a call for `key` is under way now."""
        return key in self._flights

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """`call()`'s outcome, or that of the call for `key` already under way."""
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.finished:
                return flight.value  # type: ignore[return-value] # set before finished
        flight = self._flights[key] = _Flight()
        try:
            value = await call()
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.value, flight.finished = value, True
            return value
        finally:
            del self._flights[key]
            flight.done.set()
