"""InFlight: concurrent callers of one key share the call under way, and only while it is."""

from __future__ import annotations

import anyio
import pytest

from d3_item_salvager.maxroll.in_flight import InFlight


class Calls:
    """A call that waits for the test to let it finish, counting how often it was made."""

    def __init__(self) -> None:
        self.count = 0
        self.started = anyio.Event()
        self.finish = anyio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.count += 1
        self.started.set()
        await self.finish.wait()
        if self.error is not None:
            raise self.error
        return f"value {self.count}"


async def test_concurrent_callers_share_one_call_and_a_later_caller_calls_again() -> None:
    """Three callers during one call get its value; once it ended, the next one calls anew."""
    in_flight: InFlight[str, str] = InFlight()
    calls = Calls()
    values: list[str] = []

    async def ask() -> None:
        values.append(await in_flight.run("doc", calls))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(ask)
            await calls.started.wait()
            assert "doc" in in_flight
            calls.finish.set()
    assert values == ["value 1"] * 3
    assert "doc" not in in_flight
    assert await in_flight.run("doc", calls) == "value 2"


async def test_an_error_goes_to_every_caller_that_shared_the_call() -> None:
    """A failed call raises its error in each concurrent caller; nothing of it is kept."""
    in_flight: InFlight[str, str] = InFlight()
    calls = Calls()
    calls.error = RuntimeError("unreachable")
    errors: list[str] = []

    async def ask() -> None:
        with pytest.raises(RuntimeError) as caught:
            await in_flight.run("doc", calls)
        errors.append(str(caught.value))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            group.start_soon(ask)
            await calls.started.wait()
            calls.finish.set()
    assert (errors, calls.count) == (["unreachable"] * 2, 1)
    calls.error = None
    assert await in_flight.run("doc", calls) == "value 2"


async def test_a_waiter_makes_the_call_itself_when_the_caller_making_it_is_cancelled() -> None:
    """The first caller's cancellation (its run timed out) leaves the waiter to call again."""
    in_flight: InFlight[str, str] = InFlight()
    calls = Calls()
    got: list[str] = []

    async def wait_for_it() -> None:
        got.append(await in_flight.run("doc", calls))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as first:
                group.start_soon(wait_for_it)  # starts after the first caller below
                await in_flight.run("doc", _cancel_then(first, calls))
            calls.finish.set()
    assert got == ["value 2"]
    assert calls.count == 2


def _cancel_then(scope: anyio.CancelScope, calls: Calls) -> Calls:
    """`calls`, whose first call is cancelled as soon as it started."""

    class CancelledFirst(Calls):
        async def __call__(self) -> str:
            calls.count += 1
            scope.cancel()
            await anyio.sleep_forever()
            raise AssertionError("cancelled")

    return CancelledFirst()
