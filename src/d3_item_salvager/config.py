"""Application configuration: one `AppConfig`, validated once at start-up.

Sources, strongest first: environment variables (`D3IS_` prefix, sections nested with `__`), then an
optional TOML file (`--config FILE` or `D3IS_CONFIG_FILE`), then the defaults below. This is the only
module that reads `os.environ`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from d3_item_salvager.errors import ConfigError

ENV_PREFIX = "D3IS_"
CONFIG_FILE_ENV = "D3IS_CONFIG_FILE"

_SQLITE_PREFIX = "sqlite+aiosqlite://"
_POSTGRES_ASYNC_PREFIX = "postgresql+asyncpg://"
_JOB_STORE_PREFIXES = ("sqlite:///", "postgresql+psycopg://")

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def _require_http_url(value: str) -> str:
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
        return value

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
    guide_list_ttl_minutes: PositiveFloat = 60.0
    item_catalog_ttl_minutes: PositiveFloat = 1440.0


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
    defaults from the workers' job registry (`d3_item_salvager.workers.jobs`)."""

    enabled: bool = True
    interval_minutes: PositiveFloat | None = None
    timeout_minutes: PositiveFloat | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 60.0


class JobsConfig(_Section):
    """Settings keyed by job id. Which ids exist is the job registry's to say: the workers check
    every section against it at start, so a misspelt job id is still an error."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, JobConfig] = Field(init=False)

    def by_id(self) -> dict[str, JobConfig]:
        """The job sections the configuration sets, keyed by job id."""
        return dict(self.__pydantic_extra__ or {})


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
        return value

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
        # The TOML file arrives as init kwargs (see load_config); the environment overrides it.
        return (env_settings, init_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


_URL_PASSWORD = re.compile(r"(://[^/:@]*:)[^/@]*@")


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown setting"
    if "bearer_token" in where:
        return f"{where}: {message}"  # never echo a secret
    shown = repr(error["input"])
    if where.endswith("url"):
        shown = _URL_PASSWORD.sub(r"\1***@", shown)  # a database password stays out of errors
    return f"{where} = {shown}: {message}"


def load_config(config_file: Path | None = None) -> AppConfig:
    """Build the configuration from defaults, the optional TOML file and the environment.

    Raises:
        ConfigError: naming every invalid setting and its value.
    """
    if config_file is None and os.environ.get(CONFIG_FILE_ENV):
        config_file = Path(os.environ[CONFIG_FILE_ENV])
    file_values = _read_toml(config_file) if config_file is not None else {}
    try:
        return AppConfig(**file_values)
    except ValidationError as exc:
        source = f" (config file {config_file})" if config_file else ""
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
