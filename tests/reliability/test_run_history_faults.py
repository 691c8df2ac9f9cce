"""The job store refusing a run's history row: `run --json` still prints the run and exits 1."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from tests.processes import run_cli
from tests.workers.test_cli import cli_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("statement", "rows_left"),
    [("UPDATE", [("success", None), (None, None)]), ("INSERT", [("success", None)])],
)
async def test_a_history_write_that_fails_is_reported_not_lost(
    tmp_path: Path, fake_maxroll: FakeMaxroll, statement: str, rows_left: list[object]
) -> None:
    """The outcome write (UPDATE) or the start row (INSERT) fails as on a full disk: the command
    prints its one JSON object with the database's own error and exits 1; nothing claims
    success, and no job claim is left behind."""
    config = cli_config(tmp_path, fake_maxroll)
    code, _stdout, stderr = await run_cli(
        "run", "cleanup-logs", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, stderr
    with sqlite3.connect(tmp_path / "jobs.sqlite") as connection:
        connection.execute(
            f"CREATE TRIGGER full_disk BEFORE {statement} ON job_runs "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    code, stdout, stderr = await run_cli(
        "run", "cleanup-logs", "--json", "--config", str(config), cwd=tmp_path
    )
    assert code == 1, stderr
    result = json.loads(stdout)
    assert result["outcome"] == "failed"
    assert "the run history could not be written" in result["error"]
    assert "disk is full" in result["error"]
    assert "Traceback" not in stderr
    # The driver's words, without SQLAlchemy's statement dump and link.
    assert "sqlalche.me" not in stdout + stderr
    assert "[SQL:" not in stdout + stderr
    with sqlite3.connect(tmp_path / "jobs.sqlite") as connection:
        rows = connection.execute("SELECT outcome, error FROM job_runs ORDER BY started_at")
        assert [tuple(row) for row in rows] == rows_left
        # Given back (after the outcome could not be written), or never taken (the start).
        assert connection.execute("SELECT * FROM job_claims").fetchall() == []
    if statement == "UPDATE":  # the open row is not left silently
        assert "stays open until a scheduler marks it abandoned" in stderr
