"""Run an async lookup at most once per key, sharing the result (or error) with every caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Memoises `load(key)`: concurrent callers of one key wait for the first call's outcome."""

    def __init__(self, load: Callable[[K], Awaitable[V]]) -> None:
        self._load = load
        self._done: dict[K, V | Exception] = {}
        self._pending: dict[K, anyio.Event] = {}

    async def get(self, key: K) -> V:
        while key not in self._done:
            pending = self._pending.get(key)
            if pending is not None:
                await pending.wait()
                continue
            event = self._pending[key] = anyio.Event()
            try:
                self._done[key] = await self._load(key)
            except Exception as exc:  # noqa: BLE001 - stored, then raised to every caller
                self._done[key] = exc
            finally:
                # On cancellation nothing is stored: a waiter retries the load itself.
                del self._pending[key]
                event.set()
        outcome = self._done[key]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
