"""Imports flow one way: workers -> container -> services -> maxroll/data -> config/errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "d3_item_salvager"

# Each layer may import only from the layers after it (and itself).
LAYERS = [
    ("workers", "testing"),
    ("container",),
    ("services",),
    ("maxroll", "data"),
    ("config", "crontab", "errors", "logging_setup", "_config_home"),
]


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    return None


def _imports(path: Path) -> set[str]:
    """d3_item_salvager modules imported by a file, at run time or for type checking alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("d3_item_salvager."):
                found.add(name.removeprefix("d3_item_salvager."))
    return found


SOURCES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if _layer(path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")) is not None
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
    own = _layer(module)
    assert own is not None
    upward = sorted(
        name for name in _imports(path) if (layer := _layer(name)) is not None and layer < own
    )
    assert upward == [], f"{module} imports from a layer above it: {upward}"


def test_runner_and_metrics_do_not_import_each_other() -> None:
    """The runner publishes run events; metrics subscribe: neither knows the other."""
    workers = PACKAGE / "workers"
    assert "workers.metrics" not in _imports(workers / "job_runner.py")
    assert "workers.job_runner" not in _imports(workers / "metrics.py")


# Namedtuples' own public methods carry an underscore so as not to clash with field names.
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def test_src_uses_no_private_name_of_another_object() -> None:
    """No `x._name` in src/ but on `self`, `cls` or `super()`: never a private name of a library
    (APScheduler's job store, executor or jobs; SQLAlchemy's rows) that a release may change."""
    source = Path(__file__).resolve().parent.parent / "src" / "d3_item_salvager"
    found = []
    for path in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr in NAMEDTUPLE_API:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
                continue
            found.append(f"{path.relative_to(source)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
