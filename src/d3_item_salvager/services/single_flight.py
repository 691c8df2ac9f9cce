"""Run an async lookup at most once per key, sharing the result (or error) with every caller.

A sync reads thousands of planner profiles, nearly all used by one guide. Keeping every parsed
value until the sync ends made memory grow with the site, so a value is held only while some
caller holds it (`get` ... `release`). Once none does, `forget` may swap it for a small stand-in
(say, a fingerprint), and a later `get` asks `restore` for the very same value from that stand-in
(say, from a local copy) instead of loading it again; only when `restore` cannot give it back
does `load` run a second time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class SingleFlight(Generic[K, V, T]):
    """Memoises `load(key)`: concurrent callers of one key wait for the first call's outcome.

    Args:
        load: the lookup.
        forget: the small stand-in to keep for a value no caller holds any more, or None to keep
            the value itself. Without it every value is kept.
        restore: the value again from its stand-in, or None when it cannot be had that way.
    """

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        *,
        forget: Callable[[V], T | None] | None = None,
        restore: Callable[[K, T], Awaitable[V | None]] | None = None,
    ) -> None:
        self._load = load
        self._forget = forget
        self._restore = restore
        self._done: dict[K, V | Exception] = {}
        self._holders: dict[K, int] = {}
        self._forgotten: dict[K, T] = {}
        self._pending: dict[K, anyio.Event] = {}

    async def get(self, key: K) -> V:
        """The outcome for `key`; the caller holds it until `release(key)` (errors too)."""
        while key not in self._done:
            pending = self._pending.get(key)
            if pending is not None:
                await pending.wait()
                continue
            event = self._pending[key] = anyio.Event()
            try:
                self._done[key] = await self._obtain(key)
            except Exception as exc:  # noqa: BLE001 - stored, then raised to every caller
                self._done[key] = exc
            finally:
                # On cancellation nothing is stored: a waiter retries the load itself.
                del self._pending[key]
                event.set()
        # No await between the check above and here: the outcome cannot be forgotten meanwhile.
        self._holders[key] = self._holders.get(key, 0) + 1
        outcome = self._done[key]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def release(self, key: K) -> None:
        """One holder of `key` is done with it; the last one lets `forget` swap the value out."""
        holders = self._holders.pop(key) - 1
        if holders:
            self._holders[key] = holders
            return
        outcome = self._done[key]
        if self._forget is None or isinstance(outcome, Exception):
            return  # errors are small, and every later caller must get the same one
        stand_in = self._forget(outcome)
        if stand_in is not None:
            del self._done[key]
            self._forgotten[key] = stand_in

    @property
    def held(self) -> int:
        """How many values are kept whole (held, or not forgettable)."""
        return sum(not isinstance(outcome, Exception) for outcome in self._done.values())

    async def _obtain(self, key: K) -> V:
        stand_in = self._forgotten.get(key)
        if stand_in is not None and self._restore is not None:
            value = await self._restore(key, stand_in)
            if value is not None:
                del self._forgotten[key]
                return value
        value = await self._load(key)
        self._forgotten.pop(key, None)
        return value
