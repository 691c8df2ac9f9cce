"""Each package's `__all__` is sorted and complete, as httpx checks its own."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "d3_item_salvager.data",
    "d3_item_salvager.maxroll",
    "d3_item_salvager.services",
    "d3_item_salvager.testing",
    "d3_item_salvager.workers",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    """Every name in __all__ exists, and the list is sorted (upper-case names first)."""
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for exported in module.__all__:
        assert getattr(module, exported) is not None


@pytest.mark.parametrize("name", PACKAGES[:4])
def test_all_lists_every_public_import(name: str) -> None:
    """No public class or function is imported into the package without being exported."""
    module = importlib.import_module(name)
    public = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and getattr(value, "__module__", "").startswith("d3_item_salvager")
    }
    assert public == set(module.__all__)
