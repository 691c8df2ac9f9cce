"""A refused bearer token, as an operator meets it: `run scrape-guides` fails with exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from d3_item_salvager.testing.fake_maxroll import SEARCH_PATH, FakeMaxroll, Fault
from tests.processes import run_cli
from tests.workers.test_cli import cli_config

pytestmark = pytest.mark.slow


async def test_refused_token_fails_the_run_with_exit_1_and_says_so(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    config = cli_config(tmp_path, fake_maxroll)
    fake_maxroll.fail(SEARCH_PATH, Fault(status=401))
    code, stdout, _stderr = await run_cli(
        "run", "scrape-guides", "--json", "--config", str(config), cwd=tmp_path
    )
    result = json.loads(stdout)
    assert code == 1
    assert result["outcome"] == "failed"
    assert "bearer token was refused" in result["error"]
