"""SingleFlight: one load per key, values held while in use, forgotten and restored after."""

from __future__ import annotations

import anyio
import pytest

from d3_item_salvager.services.single_flight import SingleFlight


class Source:
    """A lookup that counts its loads and restores; values are `key-<load number>`."""

    def __init__(self, restorable: bool = True) -> None:
        self.loads: list[str] = []
        self.restores: list[tuple[str, str]] = []
        self.restorable = restorable
        self.gate = anyio.Event()

    async def load(self, key: str) -> str:
        self.loads.append(key)
        await self.gate.wait()
        if key == "broken":
            raise ValueError("broken document")
        return f"{key}-{len(self.loads)}"

    async def restore(self, key: str, stand_in: str) -> str | None:
        self.restores.append((key, stand_in))
        return stand_in if self.restorable else None


def flight(source: Source, *, forgettable: bool = True) -> SingleFlight[str, str, str]:
    return SingleFlight(
        source.load,
        forget=lambda value: value if forgettable else None,
        restore=source.restore,
    )


async def test_concurrent_callers_share_one_load() -> None:
    source = Source()
    values = SingleFlight[str, str, str](source.load)
    results: list[str] = []

    async def ask() -> None:
        results.append(await values.get("a"))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        source.gate.set()
    assert (results, source.loads) == (["a-1"] * 3, ["a"])


async def test_a_value_is_held_until_its_last_holder_releases_it() -> None:
    source = Source()
    source.gate.set()
    values = flight(source)
    await values.get("a")
    await values.get("a")
    values.release("a")
    assert values.held == 1
    values.release("a")
    assert values.held == 0
    assert await values.get("a") == "a-1"  # restored from its stand-in, not loaded again
    assert (source.loads, source.restores) == (["a"], [("a", "a-1")])
    assert values.held == 1


async def test_a_value_that_cannot_be_restored_is_loaded_again() -> None:
    source = Source(restorable=False)
    source.gate.set()
    values = flight(source)
    await values.get("a")
    values.release("a")
    assert await values.get("a") == "a-2"
    assert source.loads == ["a", "a"]


async def test_a_value_without_a_stand_in_is_kept_whole() -> None:
    source = Source()
    source.gate.set()
    values = flight(source, forgettable=False)
    await values.get("a")
    values.release("a")
    assert values.held == 1
    assert await values.get("a") == "a-1"
    assert (source.loads, source.restores) == (["a"], [])


async def test_an_error_is_kept_for_every_later_caller() -> None:
    source = Source()
    source.gate.set()
    values = flight(source)
    for _ in range(2):
        with pytest.raises(ValueError, match="broken document"):
            await values.get("broken")
        values.release("broken")
    assert source.loads == ["broken"]
