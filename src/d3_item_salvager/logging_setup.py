"""Structured logging: JSON lines to a rotating file, readable lines on the console.

Job and run ids travel in context variables, so every line logged inside a job run carries them
without passing a logger around. A redaction filter removes the bearer token and any Authorization
header from every record before it is formatted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from d3_item_salvager.config import AppConfig, LoggingConfig
from d3_item_salvager.errors import ConfigError

LOGGER_NAME = "d3_item_salvager"
REDACTED = "[REDACTED]"

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
_run_id: ContextVar[str | None] = ContextVar("run_id", default=None)

# Fields of a LogRecord that are not "extra" context given by the caller.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_AUTH_PATTERN = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+")
_BEARER_PATTERN = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def get_logger(name: str) -> logging.Logger:
    """A child of the application logger, e.g. `get_logger(__name__)`."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


@contextlib.contextmanager
def log_context(*, job_id: str | None = None, run_id: str | None = None) -> Iterator[None]:
    """Attach job and run ids to every record logged inside the block (this task only)."""
    job_token = _job_id.set(job_id)
    run_token = _run_id.set(run_id)
    try:
        yield
    finally:
        _run_id.reset(run_token)
        _job_id.reset(job_token)


class RedactingFilter(logging.Filter):
    """Replaces secrets in the message, its arguments and extra fields of each record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _AUTH_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)
        return _BEARER_PATTERN.sub("Bearer " + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class ContextFilter(logging.Filter):
    """Copies the current job and run ids onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        if not hasattr(record, "run_id"):
            record.run_id = _run_id.get()
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RESERVED and value is not None
    }


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """`time level [job/run] message key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _extra_fields(record)
        context = "/".join(str(fields.pop(key)) for key in ("job_id", "run_id") if key in fields)
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        line = f"{when} {record.levelname:<7} "
        if context:
            line += f"[{context}] "
        line += record.getMessage()
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure_logging(
    config: LoggingConfig,
    *,
    secrets: list[str] | None = None,
    console: TextIO | None = None,
) -> logging.Logger:
    """Send the application's logs to `config.dir/config.file_name` (JSON) and the console.

    Calling it again replaces the handlers it installed before.

    Raises:
        ConfigError: when the log folder cannot be created or written.
    """
    logger = logging.getLogger(LOGGER_NAME)
    # APScheduler reports misfires and job errors on its own logger; keep its warnings.
    scheduler_logger = logging.getLogger("apscheduler")
    for target in (logger, scheduler_logger):
        for handler in list(target.handlers):
            target.removeHandler(handler)
            handler.close()
        target.propagate = False
    logger.setLevel(config.level)
    scheduler_logger.setLevel(logging.WARNING)

    log_dir = Path(config.dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_dir / config.file_name,
            maxBytes=config.max_bytes,
            backupCount=config.backup_count,
            encoding="utf-8",
        )
    except OSError as exc:
        raise ConfigError(
            f"logging.dir = {str(log_dir)!r}: cannot write log files there ({exc.strerror})"
        ) from None
    file_handler.setFormatter(JsonLinesFormatter())
    console_handler = logging.StreamHandler(console if console is not None else sys.stderr)
    console_handler.setFormatter(ConsoleFormatter())

    redactor = RedactingFilter(secrets or [])
    for handler in (file_handler, console_handler):
        handler.addFilter(ContextFilter())
        handler.addFilter(redactor)
        logger.addHandler(handler)
        scheduler_logger.addHandler(handler)
    return logger


def configure_app_logging(config: AppConfig, *, console: TextIO | None = None) -> logging.Logger:
    """`configure_logging` for the whole app config: the bearer token is redacted by value."""
    token = config.maxroll.bearer_token
    secrets = [token.get_secret_value()] if token is not None else []
    return configure_logging(config.logging, secrets=secrets, console=console)
