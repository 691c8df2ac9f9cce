"""Structured logging: JSON lines to a rotating file, readable lines on the console.

Job and run ids travel in context variables, so every line logged inside a job run carries them
without passing a logger around; every line also carries the process id, since several processes
may share one log folder. Secrets (the bearer token, Authorization headers) are removed from each
formatted line, never from the record: a record is shared by every handler of the host too, and
rewriting it once per handler redacted the redaction marker itself.

Only the `d3_item_salvager` logger is configured. APScheduler's logger belongs to whoever owns the
process: it gets our handlers only when asked (`capture_apscheduler=True`, as the CLI does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from d3_item_salvager.errors import ConfigError

if TYPE_CHECKING:  # the config imports pydantic: CLIs log before (or without) loading it
    from d3_item_salvager.config import AppConfig, LoggingConfig

LOGGER_NAME = "d3_item_salvager"
APSCHEDULER_LOGGER_NAME = "apscheduler"
REDACTED = "[REDACTED]"

_job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
_run_id: ContextVar[str | None] = ContextVar("run_id", default=None)

# Fields of a LogRecord that are not "extra" context given by the caller.
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_AUTH_PATTERN = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+")
# "Bearer" followed by a credential (RFC 6750's b64token), not by a word: a value holding a digit
# or at least 16 characters long. So "the bearer token was refused" stays prose, while a leaked
# token of any kind (not only the configured one, redacted by value) is removed.
_BEARER_PATTERN = re.compile(
    r"(?i)\b(bearer\s+)(?=[A-Za-z0-9._~+/-]*[0-9]|[A-Za-z0-9._~+/-]{16})[A-Za-z0-9._~+/-]+=*"
)
# The password of a URL's userinfo (`scheme://user:PASSWORD@host`), whatever it holds.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s/?#@'\"]+@")
# Marks the handlers configure_logging installed, so a second call replaces only those.
_OURS = "_d3is_handler"


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


# A secret this long is removed wherever it appears; a shorter one only where it stands as a whole
# value (see _whole_value), or a one-letter test token would turn every "SIGINT" into "SIGIN[...]".
SUBSTRING_MIN_LENGTH = 12


def _whole_value(secret: str) -> re.Pattern[str]:
    """The secret as a whole value: after `=`, `:`, a space, a bracket, `,`, `&` or `?` (or at the
    start), optionally in matching quotes, and followed by the end, a space, a quote, a closing
    bracket, `,`, `&`, `;` or `#`: a query value, `key=value`, `'value'` in a dict or JSON.
    Quotes may be escaped (`\\"value\\"`), as a JSON log line holds them."""
    return re.compile(
        r"(?:^|(?<=[\s=:(\[{,&?]))(?P<q>(?:\\?['\"])?)"
        + re.escape(secret)
        + r"(?P=q)(?=$|[\s'\")\]},&;#\\])"
    )


class Redactor:
    """Removes secrets from a finished line of text, in one pass per secret.

    Secrets of at least SUBSTRING_MIN_LENGTH characters are removed wherever they appear;
    shorter ones where they stand as a whole value. Authorization headers and URL passwords are
    removed whatever they hold, and `Bearer` values that look like credentials (never words).
    """

    def __init__(self, secrets: list[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if secret:
                variants.add(secret)
                variants.add(json.dumps(secret, ensure_ascii=False)[1:-1])  # as a JSON line has it
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(variants, key=len, reverse=True)
        self._secrets = [secret for secret in ordered if len(secret) >= SUBSTRING_MIN_LENGTH]
        self._whole_values = [
            _whole_value(secret) for secret in ordered if len(secret) < SUBSTRING_MIN_LENGTH
        ]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in self._whole_values:
            text = pattern.sub(lambda m: m.group("q") + REDACTED + m.group("q"), text)
        text = _AUTH_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)
        text = mask_url_passwords(text)
        return _BEARER_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)


def mask_url_passwords(text: str, mask: str = REDACTED) -> str:
    """`text` with the password of every URL in it (`scheme://user:PASSWORD@host`) replaced."""
    return _URL_PASSWORD.sub(lambda m: m.group(1) + mask + "@", text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Job and run ids (from the record, else the current context), then the caller's extras."""
    fields: dict[str, Any] = {
        "job_id": getattr(record, "job_id", None) or _job_id.get(),
        "run_id": getattr(record, "run_id", None) or _run_id.get(),
    }
    for key, value in vars(record).items():
        if key not in _RESERVED and key not in fields:
            fields[key] = value
    return {key: value for key, value in fields.items() if value is not None}


class _RedactingFormatter(logging.Formatter):
    """Renders a record without touching it, then redacts the text."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or Redactor([])

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def exception_text(self, record: logging.LogRecord) -> str | None:
        # Not record.exc_text: the base class caches it on the shared record.
        if record.exc_info and record.exc_info[1] is not None:
            return self.formatException(record.exc_info)
        return record.exc_text or None


class JsonLinesFormatter(_RedactingFormatter):
    """One JSON object per line: time, level, pid, logger, message, context and extra fields."""

    def render(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        exception = self.exception_text(record)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(_RedactingFormatter):
    """`time pid level [job/run] message key=value ...` for people reading a terminal."""

    def render(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        context = "/".join(str(fields.pop(key)) for key in ("job_id", "run_id") if key in fields)
        when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        line = f"{when} {record.process} {record.levelname:<7} "
        if context:
            line += f"[{context}] "
        line += record.getMessage()
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        exception = self.exception_text(record)
        if exception:
            line += "\n" + exception
        return line


# A log file that cannot be written (a full disk) is reported at most this often.
LOG_FILE_WARNING_INTERVAL_SECONDS = 60.0


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """Our rotating JSON-lines file, which survives a disk that fills up.

    The standard handler prints a "--- Logging error ---" traceback to stderr for every line it
    cannot write: thousands of lines a minute on a full disk. This one drops the lines instead,
    says so on the console at most once a minute, and reopens the file for the next line, so
    logging resumes by itself once there is space again (and says how many lines were lost).
    Errors other than OSError (a bug in formatting, say) are reported as usual.

    Args:
        console: the handler warnings go to (not our logger: that would recurse).
        clock: seconds, for the once-a-minute limit (monotonic by default; tests pass their own).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backup_count: int,
        console: logging.Handler,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Opened with the first line, so a process that stops at start-up (a job store that
        # cannot be reached) leaves no log file, nor folder, behind.
        super().__init__(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
        self.console = console
        self.clock = clock
        self.lost = 0  # lines not written since the last one that was
        self._warned_at: float | None = None
        self._failed = False  # set by handleError while a line is being written

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        if self.stream is None:  # the first line, or the next after a failed one
            try:
                os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
                if self.lost:
                    self._end_partial_line()
            except OSError:
                self.handleError(record)
                return
        super().emit(record)  # a failure calls handleError instead of raising
        if self.lost and not self._failed:
            lost, self.lost, self._warned_at = self.lost, 0, None
            notice = f"log file {self.baseFilename} written again, after {lost} line(s) were lost"
            self._tell(notice, record)
            super().emit(self._record(notice, record))

    def _end_partial_line(self) -> None:
        """End the line a full disk cut short, so the next one is a JSON line of its own."""
        with open(self.baseFilename, "ab+") as log_file:
            if log_file.seek(0, os.SEEK_END) == 0:
                return
            log_file.seek(-1, os.SEEK_END)
            if log_file.read(1) != b"\n":
                log_file.write(b"\n")  # appended: the file is open for appending

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self._failed = True
        self.lost += 1
        # Reopen for the next line: data buffered for a full disk is not written after the next.
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()  # closes the file even when flushing what is left fails
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= LOG_FILE_WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            reason = error.strerror or str(error)
            self._tell(
                f"cannot write the log file {self.baseFilename} ({reason}); its lines are lost "
                "until it can be written again (this warning repeats at most once a minute)",
                record,
            )

    def _record(self, message: str, cause: logging.LogRecord) -> logging.LogRecord:
        return logging.makeLogRecord(
            {"name": cause.name, "levelno": logging.WARNING, "levelname": "WARNING", "msg": message}
        )

    def _tell(self, message: str, cause: logging.LogRecord) -> None:
        self.console.handle(self._record(message, cause))


def _replace_our_handlers(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _OURS, False):
            logger.removeHandler(handler)
            handler.close()
    for handler in handlers:
        logger.addHandler(handler)


def _unwritable(log_dir: Path, file_name: str) -> str | None:
    """Why no log file could be written in log_dir, found without creating anything; or None.

    The folder (and its missing parents) and the file are created with the first line logged.
    """
    existing = log_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "not a folder" if existing == log_dir else f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing}: permission denied"
    log_file = log_dir / file_name
    if log_file.exists() and not os.access(log_file, os.W_OK):
        return f"{log_file}: permission denied"
    return None


def configure_logging(
    config: LoggingConfig,
    *,
    secrets: list[str] | None = None,
    console: TextIO | None = None,
    capture_apscheduler: bool = False,
) -> logging.Logger:
    """Send the application's logs to `config.dir/config.file_name` (JSON) and the console.

    Calling it again replaces the handlers it installed before, and only those. Other loggers
    (the root logger, APScheduler's) are left as the host set them, unless `capture_apscheduler`:
    then APScheduler's warnings go to the same outputs and no longer propagate (for a process of
    our own, like the CLI).

    Creates nothing: the log folder and file are created with the first line written.

    Raises:
        ConfigError: when the log folder could not be created or written.
    """
    log_dir = Path(config.dir)
    problem = _unwritable(log_dir, config.file_name)
    if problem is not None:
        raise ConfigError(
            f"logging.dir = {str(log_dir)!r}: cannot write log files there ({problem})"
        )
    redactor = Redactor(secrets or [])
    console_handler = logging.StreamHandler(console if console is not None else sys.stderr)
    console_handler.setFormatter(ConsoleFormatter(redactor))
    file_handler = LogFileHandler(
        log_dir / config.file_name,
        max_bytes=config.max_bytes,
        backup_count=config.backup_count,
        console=console_handler,
    )
    file_handler.setFormatter(JsonLinesFormatter(redactor))
    handlers: list[logging.Handler] = [file_handler, console_handler]
    for handler in handlers:
        setattr(handler, _OURS, True)

    logger = logging.getLogger(LOGGER_NAME)
    _replace_our_handlers(logger, handlers)
    logger.setLevel(config.level)
    logger.propagate = False  # our records go to our outputs once, not again via the root
    if capture_apscheduler:
        scheduler_logger = logging.getLogger(APSCHEDULER_LOGGER_NAME)
        _replace_our_handlers(scheduler_logger, handlers)
        scheduler_logger.setLevel(logging.WARNING)  # misfires and job errors, not every run
        scheduler_logger.propagate = False
    return logger


def configure_app_logging(
    config: AppConfig, *, console: TextIO | None = None, capture_apscheduler: bool = False
) -> logging.Logger:
    """`configure_logging` for the whole app config: the bearer token is redacted by value."""
    token = config.maxroll.bearer_token
    secrets = [token.get_secret_value()] if token is not None else []
    return configure_logging(
        config.logging, secrets=secrets, console=console, capture_apscheduler=capture_apscheduler
    )


@contextlib.contextmanager
def app_logging(config: AppConfig, *, console: TextIO | None = None) -> Iterator[logging.Logger]:
    """`configure_app_logging` for a block (a host app's lifespan): on the way out our handlers
    are closed and removed, and our logger's level and propagation are as they were."""
    logger = logging.getLogger(LOGGER_NAME)
    level, propagate = logger.level, logger.propagate
    try:
        yield configure_app_logging(config, console=console)
    finally:
        _replace_our_handlers(logger, [])
        logger.setLevel(level)
        logger.propagate = propagate
