"""Configuration no program can use, met from both CLIs: one line, exit 2, nothing sent."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from tests.processes import run_cli
from tests.test_index_cli import player_cli
from tests.workers.test_cli import cli_config

pytestmark = pytest.mark.slow


def latin1_config(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[maxroll]\nsite_url = "https://café.example"\n'.encode("latin-1"))
    return path


@pytest.mark.parametrize(
    ("player", "args"),
    [(False, ["status"]), (False, ["run", "cleanup-logs"]), (True, ["items"])],
)
async def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, player: bool, args: list[str]
) -> None:
    """Both CLIs answer a Latin-1 config file with one line naming the file and the position."""
    path = latin1_config(tmp_path)
    command = player_cli if player else run_cli
    code, stdout, stderr = await command(*args, "--config", str(path), cwd=tmp_path)
    assert (code, stdout) == (2, "")
    [line] = stderr.strip().splitlines()
    assert f"config file {path} is not UTF-8 text: byte 0xe9 at line 2, column 24" in line
    created = [entry.name async for entry in anyio.Path(tmp_path).iterdir()]
    assert created == ["latin1.toml"]  # nothing created


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("D3IS_MAXROLL__BEARER_TOKEN", "tökén", "maxroll.bearer_token"),
        # Bytes that are not UTF-8 reach Python as lone surrogates, and the child as the raw byte.
        ("D3IS_MAXROLL__BEARER_TOKEN", "tok\udcffen", "maxroll.bearer_token"),
        ("D3IS_MAXROLL__SEARCH_URL", "http://127.0.0.1:9/\udcffsearch", "maxroll.search_url"),
    ],
)
async def test_a_token_or_url_that_cannot_be_sent_is_refused_before_any_request(
    tmp_path: Path, fake_maxroll: FakeMaxroll, variable: str, value: str, setting: str
) -> None:
    """`run scrape-guides` exits 2 naming the setting, never shows the value, sends nothing."""
    config = cli_config(tmp_path, fake_maxroll)
    code, stdout, stderr = await run_cli(
        "run", "scrape-guides", "--config", str(config), cwd=tmp_path, env={variable: value}
    )
    assert (code, stdout) == (2, "")
    [line] = stderr.strip().splitlines()
    assert f"{setting}: " in line
    assert "tök" not in line
    assert "tok" not in line.split(setting, 1)[1]
    assert "search" not in line.split(setting, 1)[1]
    assert fake_maxroll.requests == []
