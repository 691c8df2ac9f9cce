"""Logging: JSON lines with context, readable console lines, and secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path

import pytest

from d3_item_salvager.config import LoggingConfig
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import (
    LOGGER_NAME,
    LogFileHandler,
    configure_logging,
    get_logger,
    log_context,
)

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


def test_every_line_carries_the_process_id(tmp_path: Path) -> None:
    """JSON lines have a pid field and console lines show it after the time."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), console=console)
    get_logger("test").info("hello")
    assert _read_lines(tmp_path / "workers.log")[0]["pid"] == os.getpid()
    assert re.match(rf"\d\d:\d\d:\d\d {os.getpid()} INFO +hello$", console.getvalue().strip())


def test_a_short_token_is_redacted_once_per_output_and_the_record_is_left_alone(
    tmp_path: Path,
) -> None:
    """Each handler redacts its own text: no `[REDAC[REDACTED]ED]`, and the record is unchanged."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), secrets=["T"], console=console)
    seen: list[tuple[object, object]] = []

    class HostHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.msg, record.args))

    host = HostHandler()
    logging.getLogger(LOGGER_NAME).addHandler(host)
    try:
        get_logger("test").warning("got %s token=%s", "SIGINT", "T")
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(host)
    assert console.getvalue().rstrip().endswith(" got SIGINT token=[REDACTED]")
    assert _read_lines(tmp_path / "workers.log")[0]["message"] == "got SIGINT token=[REDACTED]"
    assert seen == [("got %s token=%s", ("SIGINT", "T"))]


@pytest.mark.parametrize("token", ["x", "T", "test", "ab.cd-ef_99"])
def test_a_short_token_never_mangles_other_text_and_never_shows_as_a_value(
    tmp_path: Path, token: str
) -> None:
    """A token shorter than 12 characters is redacted only where it stands as a whole value
    (Bearer, Authorization, a query value, key=value, a quoted string), never inside words."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), secrets=[token], console=console)
    log = get_logger("test")
    plain = f"got SIGINT; next retest at 6 exit {token}s {token}{token} x{token}y"
    log.warning(plain)
    shown = [
        f"Bearer {token}",
        f"Authorization: {token}",
        f"https://maxroll.gg/search?q=a&token={token}&page=2",
        f"https://maxroll.gg/search?token={token}",
        f"token={token} next",
        f"{{'authorization': 'Bearer {token}', 'token': '{token}'}}",
        f'{{"bearer_token": "{token}"}}',
        f"({token})",
        token,
    ]
    for line in shown:
        log.warning(line)
    console_lines = [
        line.split(" WARNING ", 1)[1].strip() for line in console.getvalue().splitlines()
    ]
    file_lines = [str(line["message"]) for line in _read_lines(tmp_path / "workers.log")]
    for lines in (console_lines, file_lines):
        assert lines[0] == plain  # nothing in it stands alone as a value
        for logged, original in zip(lines[1:], shown, strict=True):
            assert "[REDACTED]" in logged, logged
            leftover = logged.replace("[REDACTED]", " ")
            for piece in re.split(r"[\s=:'\"(){},&?/]+", leftover):
                assert piece != token, (original, logged)


def test_exception_keeps_its_traceback_for_every_handler(tmp_path: Path) -> None:
    """The file and the console both get the (redacted) traceback of one record."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), secrets=[TOKEN], console=console)
    try:
        raise RuntimeError(f"bad {TOKEN}")
    except RuntimeError:
        get_logger("test").exception("boom")
    record = _read_lines(tmp_path / "workers.log")[0]
    assert "RuntimeError: bad [REDACTED]" in str(record["exception"])
    assert "RuntimeError: bad [REDACTED]" in console.getvalue()


def test_host_and_apscheduler_loggers_are_left_alone_unless_asked(tmp_path: Path) -> None:
    """By default only our logger changes; capture_apscheduler routes APScheduler's warnings."""
    root, scheduler_logger = logging.getLogger(), logging.getLogger("apscheduler")
    host_handler = logging.NullHandler()
    scheduler_logger.addHandler(host_handler)
    scheduler_logger.setLevel(logging.DEBUG)
    before = (list(root.handlers), root.level, scheduler_logger.propagate)
    try:
        configure_logging(LoggingConfig(dir=tmp_path), console=io.StringIO())
        assert (list(root.handlers), root.level, scheduler_logger.propagate) == before
        assert scheduler_logger.handlers == [host_handler]
        assert scheduler_logger.level == logging.DEBUG

        console = io.StringIO()
        configure_logging(LoggingConfig(dir=tmp_path), console=console, capture_apscheduler=True)
        scheduler_logger.warning("run of job missed")
        assert "run of job missed" in console.getvalue()
        assert host_handler in scheduler_logger.handlers  # the host's own handler stays
        assert len(scheduler_logger.handlers) == 3
        assert scheduler_logger.level == logging.WARNING
    finally:
        scheduler_logger.removeHandler(host_handler)
        scheduler_logger.setLevel(logging.NOTSET)


def test_calling_again_replaces_only_our_handlers(tmp_path: Path) -> None:
    """A second configure_logging does not duplicate lines nor drop a handler the host added."""
    logger = logging.getLogger(LOGGER_NAME)
    host_handler = logging.NullHandler()
    logger.addHandler(host_handler)
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), console=io.StringIO())
    configure_logging(LoggingConfig(dir=tmp_path), console=console)
    get_logger("test").info("once")
    assert console.getvalue().count("once") == 1
    assert host_handler in logger.handlers
    assert len(logger.handlers) == 3


def test_redaction_removes_values_never_words(tmp_path: Path) -> None:
    """Prose about a bearer token is logged as written; a Bearer credential, any token, is not."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), secrets=[TOKEN], console=console)
    log = get_logger("test")
    prose = [
        "HTTP 401: the bearer token was refused (check maxroll.bearer_token)",
        "Bearer authentication failed; bearer tokens expire",
    ]
    for line in prose:
        log.warning(line)
    log.warning("sent Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln== to the search")
    log.warning("sent bearer abcdefghijklmnopqrstuvwxyz")
    messages = [str(line["message"]) for line in _read_lines(tmp_path / "workers.log")]
    assert messages[:2] == prose
    assert messages[2:] == ["sent Bearer [REDACTED] to the search", "sent bearer [REDACTED]"]
    assert console.getvalue().count("[REDACTED]") == 2


def test_a_password_in_a_url_userinfo_is_redacted(tmp_path: Path) -> None:
    """`scheme://user:PASSWORD@host` keeps its user and host; the password, any value, goes."""
    console = io.StringIO()
    configure_logging(LoggingConfig(dir=tmp_path), console=console)
    log = get_logger("test")
    log.warning("fetching https://user:Zq7-unknown-token@maxroll.example/d3/data.json failed")
    log.warning("job store", extra={"url": "postgresql+psycopg://app:p%40ss@db:5432/jobs"})
    [first, second] = _read_lines(tmp_path / "workers.log")
    assert first["message"] == (
        "fetching https://user:[REDACTED]@maxroll.example/d3/data.json failed"
    )
    assert second["url"] == "postgresql+psycopg://app:[REDACTED]@db:5432/jobs"
    written = console.getvalue() + (tmp_path / "workers.log").read_text(encoding="utf-8")
    assert "Zq7-unknown-token" not in written
    assert "p%40ss" not in written


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_costs_one_warning_a_minute_and_logging_resumes_with_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the log file on /dev/full (the kernel's real ENOSPC), lines are dropped with one
    console warning a minute, no traceback; once the file can be written, logging resumes."""
    log_file = tmp_path / "workers.log"
    log_file.symlink_to("/dev/full")  # the disk is full
    console = io.StringIO()
    logger = configure_logging(LoggingConfig(dir=tmp_path), console=console)
    [handler] = [h for h in logger.handlers if isinstance(h, LogFileHandler)]
    clock = handler.clock = FakeClock()
    log = get_logger("test")

    for number in range(100):
        log.info("line %d", number)
    clock.now += 59
    log.info("a minute not yet over")
    warnings = [line for line in console.getvalue().splitlines() if "cannot write" in line]
    assert len(warnings) == 1
    assert f"cannot write the log file {log_file} (No space left on device)" in warnings[0]
    clock.now += 1
    log.info("a minute later")
    warnings = [line for line in console.getvalue().splitlines() if "cannot write" in line]
    assert len(warnings) == 2
    assert handler.lost == 102
    assert console.getvalue().count(" INFO ") == 102  # the console kept every line

    log_file.unlink()  # space again: the next line reopens the file and is written
    cut_short = '{"time": "2026-01-01T00:00:00", "message": "cut sh'  # all a full disk took
    log_file.write_text(cut_short, encoding="utf-8")
    log.info("back")
    [first, *rest] = log_file.read_text(encoding="utf-8").splitlines()
    assert first == cut_short  # ended, so every later line is a JSON line of its own
    notice = f"log file {log_file} written again, after 102 line(s) were lost"
    assert [json.loads(line)["message"] for line in rest] == ["back", notice]
    assert notice in console.getvalue()
    assert handler.lost == 0
    captured = capsys.readouterr()
    assert "Logging error" not in captured.err + console.getvalue()
    assert "Traceback" not in captured.err + console.getvalue()


def test_a_formatting_bug_is_still_reported_as_logging_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only OSError is quietened: a line that cannot be formatted keeps logging's own report."""
    configure_logging(LoggingConfig(dir=tmp_path), console=io.StringIO())
    get_logger("test").info("two values %s %s", "only one")
    assert "--- Logging error ---" in capsys.readouterr().err
