"""CLI conventions: --version, shell completion, and the console script naming itself."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.processes import child_env

SCRIPT = "d3-item-salvager-workers"


def console_script() -> str:
    """The installed console script next to this interpreter."""
    found = shutil.which(SCRIPT, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{SCRIPT} is not installed next to {sys.executable}; pip install -e .")
    return found


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("how", ["script", "module"])
def test_version_prints_the_installed_version(tmp_path: Path, how: str) -> None:
    """`--version` prints the distribution's version and exits 0, before any config is read."""
    prefix = (
        [console_script()]
        if how == "script"
        else [sys.executable, "-m", "d3_item_salvager.workers"]
    )
    result = run(*prefix, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{SCRIPT} {version('d3-item-salvager')}"


def test_console_script_help_names_itself_and_offers_completion(tmp_path: Path) -> None:
    """The script's help says `Usage: d3-item-salvager-workers` and lists completion options."""
    result = run(console_script(), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Usage: {SCRIPT} " in result.stdout
    assert "--install-completion" in result.stdout
    module = run(sys.executable, "-m", "d3_item_salvager.workers", "--help", cwd=tmp_path)
    assert "Usage: python -m d3_item_salvager.workers " in module.stdout


def test_show_completion_prints_a_script_for_the_command(tmp_path: Path) -> None:
    """`--show-completion` prints the completion code of the shell it runs under, bound to the
    console script. Typer detects the shell from the process's ancestors, so the command runs
    under bash (a second command keeps bash from exec-ing it in its own place)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    script = shlex.quote(str(console_script()))
    result = run("bash", "-c", f"{script} --show-completion; exit $?", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_D3_ITEM_SALVAGER_WORKERS_COMPLETE" in result.stdout
    assert SCRIPT in result.stdout


@pytest.mark.parametrize(
    "prefix",
    [
        [sys.executable, "-m", "d3_item_salvager", "workers"],
        ["d3-item-salvager", "workers"],
        [sys.executable, "-m", "d3_item_salvager.workers"],
    ],
    ids=["module-group", "script-group", "workers-module"],
)
def test_the_workers_commands_run_from_the_one_application(
    tmp_path: Path, prefix: list[str]
) -> None:
    """`python -m d3_item_salvager workers ...` and `d3-item-salvager workers ...` are the
    workers' CLI, as `python -m d3_item_salvager.workers` is: a job runs, and help is plain."""
    if prefix[0] == "d3-item-salvager":
        found = shutil.which(prefix[0], path=str(Path(sys.executable).parent))
        assert found is not None, "pip install -e . installs the d3-item-salvager script"
        prefix = [found, *prefix[1:]]
    config = tmp_path / "workers.toml"
    config.write_text(
        f'[logging]\ndir = "{tmp_path / "logs"}"\n[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "index.sqlite"}"\n'
        f'[scheduler]\njob_store_path = "{tmp_path / "jobs.sqlite"}"\n',
        encoding="utf-8",
    )
    ran = run(*prefix, "run", "cleanup-logs", "--config", str(config), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("cleanup-logs: success in ")
    helped = run(*prefix, "--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "run-scheduler" in helped.stdout
    root = run(sys.executable, "-m", "d3_item_salvager", "--help", cwd=tmp_path).stdout
    assert "workers" in root
    for text in (helped.stdout, root):
        assert "╭" not in text  # one help style: plain, no Rich boxes
