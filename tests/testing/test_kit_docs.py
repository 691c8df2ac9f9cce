"""docs/testing.md names the kit's whole API, and every name it writes exists."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import d3_item_salvager.testing
from d3_item_salvager.data import IndexQueries
from d3_item_salvager.testing import (
    FakeMaxroll,
    Fault,
    RandomTransientFaults,
    RecordedRequest,
    build_site,
    pytest_plugin,
)
from d3_item_salvager.workers.runs import RunEvents, RunTracker
from d3_item_salvager.workers.runtime import WorkerRuntime

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
KIT = ROOT / "src" / "d3_item_salvager" / "testing"


@pytest.fixture
def owners() -> Iterator[dict[str, Any]]:
    """What each `Owner.` prefix of the doc stands for (instances, so fields count too)."""
    site = build_site(1)
    tracker = RunTracker(RunEvents())
    yield {
        "testing": d3_item_salvager.testing,
        "pytest_plugin": pytest_plugin,
        "FakeMaxroll": FakeMaxroll(site=site),
        "Site": site,
        "Guide": site.guides[0],
        "Planner": next(iter(site.planners.values())),
        "Fault": Fault(),
        "RecordedRequest": RecordedRequest("GET", "/", {}, 200),
        "RandomTransientFaults": RandomTransientFaults(0.1),
        "RunTracker": tracker,
        "WorkerRuntime": WorkerRuntime,
        "IndexQueries": IndexQueries,
    }
    tracker.close()


def documented(owners: dict[str, Any]) -> set[tuple[str, str]]:
    pattern = r"`(" + "|".join(owners) + r")\.([a-z_][a-z0-9_]*)"
    return set(re.findall(pattern, DOC.read_text(encoding="utf-8"), flags=re.IGNORECASE))


def public_names(obj: Any) -> set[str]:
    """Public fields, methods and properties of a class's instance."""
    names = {name for name in dir(type(obj)) if not name.startswith("_")}
    if is_dataclass(obj):
        names |= {field.name for field in fields(obj) if not field.name.startswith("_")}
    return names


def test_every_documented_name_exists(owners: dict[str, Any]) -> None:
    """Each `Owner.name` in docs/testing.md is an attribute of what it names."""
    names = documented(owners)
    assert len(names) > 60
    missing = sorted(f"{owner}.{name}" for owner, name in names if not hasattr(owners[owner], name))
    assert missing == []


@pytest.mark.parametrize("owner", ["FakeMaxroll", "Guide", "Planner", "Fault", "Site"])
def test_the_whole_api_is_documented(owners: dict[str, Any], owner: str) -> None:
    """Every public field and method of the fake and its site is in docs/testing.md."""
    written = {name for named, name in documented(owners) if named == owner}
    assert sorted(public_names(owners[owner]) - written) == []


def test_the_readme_links_the_kit_docs_and_names_the_extra() -> None:
    """README "Testing your app" links docs/testing.md and says to install the [testing] extra."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Testing your app", 1)[1].split("\n## ", 1)[0]
    assert "(docs/testing.md)" in section
    assert 'pip install "d3-item-salvager[testing]"' in section


def kit_imports() -> set[str]:
    """Top-level modules the kit imports, stdlib and the package itself left out."""
    found: set[str] = set()
    for path in KIT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"d3_item_salvager", "__future__"}


def test_the_testing_extra_brings_just_what_the_kit_imports() -> None:
    """[testing] lists the kit's imports that the package does not already depend on, no more."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {Requirement(r).name.lower() for r in requirements}

    core = names(project["dependencies"])
    extra = names(project["optional-dependencies"]["testing"])
    distributions = packages_distributions()
    needed = {distributions[module][0].lower() for module in kit_imports()}
    assert extra == needed - core
    assert extra == {"pytest", "pytest-asyncio"}
    assert "d3-item-salvager[postgres,testing]" in project["optional-dependencies"]["test"]
