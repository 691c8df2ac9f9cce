"""Application configuration: one `AppConfig`, validated once at start-up.

Sources, strongest first: values passed to `load_config` (or to `AppConfig(...)`), then environment
variables (`D3IS_` prefix, sections nested with `__`; skipped with `environment=False`), then an
optional TOML file (`--config FILE` or `D3IS_CONFIG_FILE`), then the defaults below. Sources merge
setting by setting. When `home` is set, every relative path (index, job store, caches, logs) is
taken under it. This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from d3_item_salvager._config_home import rooted_at_home
from d3_item_salvager.crontab import cron_trigger
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import mask_url_passwords

ENV_PREFIX = "D3IS_"
CONFIG_FILE_ENV = "D3IS_CONFIG_FILE"

_SQLITE_PREFIX = "sqlite+aiosqlite://"
_POSTGRES_ASYNC_PREFIX = "postgresql+asyncpg://"
_JOB_STORE_PREFIXES = ("sqlite:///", "postgresql+psycopg://")

# Variables with the prefix that are not settings themselves.
_OTHER_ENV_VARIABLES = frozenset({CONFIG_FILE_ENV, f"{ENV_PREFIX}HOME"})

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]

# A job's interval: at least a second (the scheduler cannot honour less, and a typo such as 0.0001
# would run a job thousands of times an hour), at most a year (a larger one is surely a typo).
MIN_INTERVAL_MINUTES = 1 / 60
MAX_INTERVAL_MINUTES = 365 * 24 * 60


# The error type of a value that cannot go into a request (or a driver's connection string). Its
# message never shows the value: it may be a secret, or bytes the terminal cannot print.
_UNUSABLE = "unusable_text"


def _require_usable_text(value: str) -> str:
    """Refuse text no request or database driver can carry: bytes that were not UTF-8 (Python
    keeps an undecodable environment variable as lone surrogates) or control characters."""
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise PydanticCustomError(
            _UNUSABLE, "holds bytes that are not UTF-8 text (the value is not shown)"
        )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise PydanticCustomError(
            _UNUSABLE, "holds a control character such as a line break (the value is not shown)"
        )
    return value


def _require_sendable_url(value: str) -> str:
    """Refuse a URL httpx cannot send. Plain ASCII always can (httpx percent-encodes spaces);
    other text needs a valid international host name, so httpx (imported only then) checks it."""
    _require_usable_text(value)
    if value.isascii():
        return value
    import httpx  # rare: keeps httpx out of every CLI start

    try:
        httpx.URL(value)
    except (httpx.InvalidURL, UnicodeError):
        raise PydanticCustomError(
            _UNUSABLE, "cannot be sent: its host name is not valid (the value is not shown)"
        ) from None
    return value


def _require_http_url(value: str) -> str:
    _require_sendable_url(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    """The index database."""

    url: str = "sqlite+aiosqlite:///cache/d3_items.sqlite"
    busy_timeout_seconds: PositiveFloat = 30.0

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        # Checked by hand rather than with SQLAlchemy's make_url: importing SQLAlchemy here would
        # add a quarter of a second to every CLI start, `--help` included.
        if not value.startswith((_SQLITE_PREFIX, _POSTGRES_ASYNC_PREFIX)):
            raise ValueError(
                f"must be {_SQLITE_PREFIX}/PATH or {_POSTGRES_ASYNC_PREFIX}USER@HOST/DATABASE"
            )
        return _require_usable_text(value)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file; None for PostgreSQL or an in-memory database."""
        if not self.url.startswith(_SQLITE_PREFIX):
            return None
        database = self.url.removeprefix(_SQLITE_PREFIX).removeprefix("/").split("?", 1)[0]
        if not database or database == ":memory:":
            return None
        return Path(database)


class MaxrollConfig(_Section):
    """Where and how to reach Maxroll."""

    search_url: str = "https://meilisearch-proxy.maxroll.gg/indexes/wp_posts_1/search"
    site_url: str = "https://maxroll.gg"
    planner_profile_url: str = "https://planners.maxroll.gg/profiles/load/d3/{planner_id}"
    item_data_url: str = "https://assets-ng.maxroll.gg/d3planner/data.json"
    bearer_token: SecretStr | None = None
    max_concurrency: PositiveInt = 4
    request_timeout_seconds: PositiveFloat = 30.0
    connect_timeout_seconds: PositiveFloat = 10.0
    retry_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    retry_initial_backoff_seconds: Annotated[float, Field(ge=0)] = 1.0
    retry_max_backoff_seconds: Annotated[float, Field(ge=0)] = 60.0
    search_page_size: Annotated[int, Field(ge=1, le=1000)] = 21
    search_max_pages: PositiveInt = 100
    max_response_bytes: PositiveInt = 32 * 1024 * 1024

    @field_validator("search_url", "site_url", "item_data_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _require_http_url(value)

    @field_validator("planner_profile_url")
    @classmethod
    def _planner_template(cls, value: str) -> str:
        if value.count("{planner_id}") != 1:
            raise ValueError("must contain the placeholder {planner_id} exactly once")
        _require_http_url(value.replace("{planner_id}", "1"))
        return value

    @field_validator("bearer_token")
    @classmethod
    def _blank_is_missing(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        if value is not None:
            token = value.get_secret_value()
            _require_usable_text(token)
            # An HTTP header carries ASCII only: httpx would fail on every request.
            if not all("!" <= char <= "~" for char in token):
                raise PydanticCustomError(
                    _UNUSABLE,
                    "must be printable ASCII without spaces: an HTTP header cannot carry it "
                    "(the value is not shown)",
                )
        return value

    def require_bearer_token(self) -> str:
        """The token, or a ConfigError saying how to set it."""
        if self.bearer_token is None:
            raise ConfigError(
                "maxroll.bearer_token is not set: the guide search needs it. "
                f"Set {ENV_PREFIX}MAXROLL__BEARER_TOKEN or [maxroll] bearer_token in the config file."
            )
        return self.bearer_token.get_secret_value()


class CacheConfig(_Section):
    """On-disk caches of Maxroll documents."""

    dir: Path = Path("cache")
    item_catalog_ttl_minutes: PositiveFloat = 1440.0
    # A stored guide whose documents were last checked longer ago than this is rechecked with
    # conditional requests even when its modified time is unchanged; 0 rechecks on every sync.
    revalidate_after_minutes: Annotated[float, Field(ge=0)] = 1440.0


class LoggingConfig(_Section):
    """Console and JSON-lines file logging."""

    dir: Path = Path("logs")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    retention_days: PositiveFloat = 14
    file_name: str = "workers.log"
    max_bytes: PositiveInt = 10 * 1024 * 1024
    backup_count: Annotated[int, Field(ge=0)] = 5

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("file_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or Path(value).name != value or value in (".", ".."):
            raise ValueError("must be a plain file name, without folders")
        return value


class JobConfig(_Section):
    """One job's `[scheduler.jobs.<id>]` section; unset interval and timeout take the job's own
    defaults from the workers' job registry (`d3_item_salvager.workers.jobs`). A job runs every
    `interval_minutes` or when its `cron` expression matches, never both."""

    enabled: bool = True
    interval_minutes: PositiveFloat | None = None
    timeout_minutes: PositiveFloat | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 60.0
    # After interval_minutes: its validator reads that value.
    cron: str | None = None
    jitter_seconds: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("interval_minutes")
    @classmethod
    def _bounded_interval(cls, value: float | None) -> float | None:
        if value is not None and not MIN_INTERVAL_MINUTES <= value <= MAX_INTERVAL_MINUTES:
            raise ValueError(
                f"must be at least 1 second ({MIN_INTERVAL_MINUTES:.4f} minutes) and at most "
                f"a year ({MAX_INTERVAL_MINUTES} minutes)"
            )
        return value

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        interval = info.data.get("interval_minutes")
        if interval is not None:
            raise ValueError(
                f"a job has interval_minutes or cron, not both (interval_minutes = {interval:g} "
                "is set in the same section)"
            )
        cron_trigger(value)  # the timezone does not change what is valid
        return value


class JobsConfig(_Section):
    """Settings keyed by job id. Which ids exist is the job registry's to say: the workers check
    every section against it at start, so a misspelt job id is still an error."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, JobConfig] = Field(init=False)

    def by_id(self) -> dict[str, JobConfig]:
        """The job sections the configuration sets, keyed by job id."""
        return dict(self.__pydantic_extra__ or {})

    def __getattr__(self, job_id: str) -> JobConfig:
        """`config.scheduler.jobs.scrape_guides`: the job's section as set, or an empty one (all
        defaults; unset interval and timeout are the job's own, `JobSpec.settings` fills them)."""
        if job_id.startswith("_"):  # pydantic's own attributes, copy and pickle protocols
            return super().__getattr__(job_id)  # type: ignore[misc, no-any-return]
        section = (self.__pydantic_extra__ or {}).get(job_id)
        return section if section is not None else JobConfig()


class SchedulerConfig(_Section):
    """The APScheduler instance and its SQLite job store."""

    job_store_path: Path = Path("cache/scheduler.sqlite")
    job_store_url: str | None = None
    max_workers: PositiveInt = 5
    misfire_grace_seconds: PositiveInt = 300
    timezone: str = "UTC"
    shutdown_timeout_seconds: Annotated[float, Field(ge=0)] = 30.0
    lease_seconds: PositiveFloat = 30.0
    run_new_jobs_at_once: bool = True
    run_history_retention_days: PositiveFloat = 90
    jobs: JobsConfig = JobsConfig()

    @field_validator("job_store_url")
    @classmethod
    def _sync_driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_JOB_STORE_PREFIXES):
            raise ValueError("must be a sqlite:///PATH or postgresql+psycopg://... URL")
        return value if value is None else _require_usable_text(value)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known IANA timezone") from None
        return value


class MetricsConfig(_Section):
    """Prometheus metrics over HTTP; off unless a port is set."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    host: str = "127.0.0.1"


class HealthConfig(_Section):
    """What `status --check` counts as healthy."""

    overdue_margin_minutes: PositiveFloat = 15.0


class AppConfig(BaseSettings):
    """Every setting of the application; see the README for each one."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path | None = None
    database: DatabaseConfig = DatabaseConfig()
    maxroll: MaxrollConfig = MaxrollConfig()
    cache: CacheConfig = CacheConfig()
    logging: LoggingConfig = LoggingConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    metrics: MetricsConfig = MetricsConfig()
    health: HealthConfig = HealthConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values beat the environment, which beats the TOML file (see load_config).
        file_settings = InitSettingsSource(settings_cls, init_kwargs=dict(_FILE_VALUES.get()))
        if not _READ_ENVIRONMENT.get():
            return (init_settings, file_settings)
        return (init_settings, env_settings, file_settings)

    @model_validator(mode="before")
    @classmethod
    def _root_paths_at_home(cls, data: Any) -> Any:
        # Before validation, so the defaults of the sections are rooted too.
        if not isinstance(data, dict) or not data.get("home"):
            return data
        if not isinstance(data["home"], str | os.PathLike):
            return data  # the field's own validation reports it
        home = Path(data["home"]).expanduser().absolute()
        return rooted_at_home(data, home, _relative_path_defaults())


def _relative_path_defaults() -> dict[str, dict[str, Any]]:
    return {
        "database": {"url": DatabaseConfig.model_fields["url"].default},
        "cache": {"dir": CacheConfig.model_fields["dir"].default},
        "logging": {"dir": LoggingConfig.model_fields["dir"].default},
        "scheduler": {"job_store_path": SchedulerConfig.model_fields["job_store_path"].default},
    }


# The TOML file's values and whether to read the environment, for `settings_customise_sources`:
# pydantic-settings builds its sources inside the constructor, so `load_config` hands them over
# through context variables (safe across threads and tasks).
_FILE_VALUES: ContextVar[Mapping[str, Any]] = ContextVar(
    "_FILE_VALUES", default=MappingProxyType({})
)
_READ_ENVIRONMENT: ContextVar[bool] = ContextVar("_READ_ENVIRONMENT", default=True)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {_where(data, exc)}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _where(data: bytes, error: UnicodeDecodeError) -> str:
    """The first undecodable byte and its line and column (both from 1), as an editor shows."""
    line_start = data.rfind(b"\n", 0, error.start) + 1
    line = data.count(b"\n", 0, error.start) + 1
    column = len(data[line_start : error.start].decode("utf-8", "replace")) + 1
    return f"byte 0x{data[error.start]:02x} at line {line}, column {column} (save it as UTF-8)"


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown setting"
    if "bearer_token" in where or error["type"] == _UNUSABLE:
        return f"{where}: {message}"  # never echo a secret
    shown = repr(error["input"])
    if where.endswith("url"):
        shown = mask_url_passwords(shown, "***")  # a database password stays out of errors
    return f"{where} = {shown}: {message}"


def _check_environment() -> None:
    """Refuse a `D3IS_` variable that names no setting (a nested typo is refused by pydantic).

    pydantic-settings silently ignores an unknown top-level variable such as `D3IS_DATABASE_URL`
    (meant: `D3IS_DATABASE__URL`), which would leave the default in force without a word.
    """
    sections = set(AppConfig.model_fields)
    unknown = []
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in _OTHER_ENV_VARIABLES:
            continue
        section = upper.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()
        if section not in sections:
            unknown.append(name)
    if unknown:
        named = ", ".join(unknown)
        raise ConfigError(
            f"environment variable {named} names no setting: settings are "
            f"{ENV_PREFIX}SECTION__NAME with a section among {', '.join(sorted(sections))} "
            f"(e.g. {ENV_PREFIX}DATABASE__URL)"
        )


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """base updated by extra, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@contextmanager
def _sources(file_values: Mapping[str, Any], environment: bool) -> Iterator[None]:
    file_token = _FILE_VALUES.set(file_values)
    env_token = _READ_ENVIRONMENT.set(environment)
    try:
        yield
    finally:
        _READ_ENVIRONMENT.reset(env_token)
        _FILE_VALUES.reset(file_token)


def load_config(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environment: bool = True,
    **sections: Any,
) -> AppConfig:
    """Build the configuration from defaults, the optional TOML file, the environment and overrides.

    Precedence, strongest first: keyword `sections`, then `overrides`, then `D3IS_` environment
    variables, then the TOML file, then the defaults; they merge setting by setting.

        load_config(overrides={"maxroll": {"bearer_token": "t"}})
        load_config(home=tmp_path, maxroll={"bearer_token": "t"}, environment=False)

    Args:
        config_file: a TOML file; by default `$D3IS_CONFIG_FILE` when the environment is read.
        overrides: nested settings, e.g. `{"scheduler": {"jobs": {"cleanup_logs": {...}}}}`.
        environment: False ignores every `D3IS_` variable, `D3IS_CONFIG_FILE` included.
        sections: top-level settings by name (`maxroll={...}`, `home=PATH`), merged onto overrides.

    Raises:
        ConfigError: naming every invalid setting and its value.
    """
    if environment:
        _check_environment()
    if config_file is None and environment and os.environ.get(CONFIG_FILE_ENV):
        config_file = Path(os.environ[CONFIG_FILE_ENV])
    file_values = _read_toml(config_file) if config_file is not None else {}
    explicit = _merged(overrides or {}, sections)
    try:
        with _sources(file_values, environment):
            return AppConfig(**explicit)
    except ValidationError as exc:
        source = f" (config file {config_file})" if config_file else ""
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
