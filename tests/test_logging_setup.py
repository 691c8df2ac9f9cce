"""Logging: JSON lines with context, readable console lines, and secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from d3_item_salvager.config import LoggingConfig
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import configure_logging, get_logger, log_context

TOKEN = "tok-SECRET-4711"


def _read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_file_and_console_carry_job_and_run_context(tmp_path: Path) -> None:
    """Inside log_context, both outputs show the job and run ids and extra fields."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), console=console)
    with log_context(job_id="scrape_guides", run_id="r1"):
        get_logger("test").info("sync done", extra={"guides": 3})
    get_logger("test").info("outside")
    records = _read_lines(tmp_path / "workers.log")
    assert records[0]["message"] == "sync done"
    assert (records[0]["job_id"], records[0]["run_id"], records[0]["guides"]) == (
        "scrape_guides",
        "r1",
        3,
    )
    assert "job_id" not in records[1]
    assert "[scrape_guides/r1] sync done guides=3" in console.getvalue()


def test_token_and_authorization_headers_are_redacted(tmp_path: Path) -> None:
    """The configured token, Bearer values and Authorization headers never reach an output."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), secrets=[TOKEN], console=console)
    log = get_logger("test")
    log.warning("token %s leaked", TOKEN)
    log.warning("headers", extra={"headers": f"{{'authorization': 'Bearer {TOKEN}'}}"})
    log.warning("raw Authorization: Bearer other-token-99")
    try:
        raise RuntimeError(f"request failed with token {TOKEN}")
    except RuntimeError:
        log.exception("boom")
    written = (tmp_path / "workers.log").read_text(encoding="utf-8") + console.getvalue()
    assert TOKEN not in written
    assert "other-token-99" not in written
    assert written.count("[REDACTED]") >= 8


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_log_folder_is_a_config_error(tmp_path: Path) -> None:
    """A log folder that cannot be created gives a ConfigError naming logging.dir."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="logging.dir"):
        configure_logging(LoggingConfig(dir=locked / "logs"))


def test_log_folder_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    """A log folder path that is a regular file gives a ConfigError naming logging.dir."""
    blocker = tmp_path / "logs"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(ConfigError, match="logging.dir"):
        configure_logging(LoggingConfig(dir=blocker))
