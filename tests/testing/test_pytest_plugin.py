"""The pytest plugin, seen from a host app's suite: a pytest subprocess on a downstream test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOWNSTREAM_TEST = """
import sqlite3

import pytest


{marker}
async def test_due_jobs_fill_the_index(salvager_runtime, salvager_config, fake_maxroll):
    results = await salvager_runtime.run_due_jobs()
    assert {{run.job_id: run.outcome for run in results}}["scrape_guides"] == "success"
    with sqlite3.connect(salvager_config.database.sqlite_path) as index:
        (guides,) = index.execute("SELECT count(*) FROM guides").fetchone()
    assert guides == len(fake_maxroll.site.guides) > 0
    assert await salvager_runtime.run_due_jobs() == []  # each job moved to its next run time


def test_the_config_lives_under_tmp_path(salvager_config, fake_maxroll, tmp_path):
    assert salvager_config.maxroll.site_url == fake_maxroll.base_url
    assert salvager_config.cache.dir.is_relative_to(tmp_path)
    assert salvager_config.database.sqlite_path.is_relative_to(tmp_path)
"""

PYTEST_INI = """[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def run_downstream_suite(
    folder: Path, *options: str, autoload: bool = True
) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh process, from a folder that knows nothing of this project's conftest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("D3IS_", "PYTEST_"))}
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "marker"), [("strict", "@pytest.mark.asyncio"), ("auto", "")], ids=["strict", "auto"]
)
def test_fixtures_work_in_pytest_asyncio_modes(tmp_path: Path, mode: str, marker: str) -> None:
    """The entry point loads the plugin; its fixtures run a runtime in strict and auto mode."""
    (tmp_path / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    (tmp_path / "test_host_app.py").write_text(
        DOWNSTREAM_TEST.format(marker=marker), encoding="utf-8"
    )
    result = run_downstream_suite(tmp_path, "-o", f"asyncio_mode={mode}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_plugin_can_be_disabled(tmp_path: Path) -> None:
    """`-p no:d3_item_salvager` removes the fixtures, so the plugin is the one providing them."""
    (tmp_path / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    (tmp_path / "test_host_app.py").write_text(
        "def test_config(salvager_config):\n    pass\n", encoding="utf-8"
    )
    assert run_downstream_suite(tmp_path).returncode == 0
    disabled = run_downstream_suite(tmp_path, "-p", "no:d3_item_salvager")
    assert "fixture 'salvager_config' not found" in disabled.stdout


@pytest.mark.slow
def test_fixtures_load_with_p_when_autoloading_is_off(tmp_path: Path) -> None:
    """With PYTEST_DISABLE_PLUGIN_AUTOLOAD, `-p d3_item_salvager.testing.pytest_plugin` loads it."""
    (tmp_path / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    (tmp_path / "test_host_app.py").write_text(
        DOWNSTREAM_TEST.format(marker="@pytest.mark.asyncio"), encoding="utf-8"
    )
    result = run_downstream_suite(
        tmp_path,
        *("-p", "pytest_asyncio.plugin", "-p", "d3_item_salvager.testing.pytest_plugin"),
        *("-o", "asyncio_mode=strict"),
        autoload=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
