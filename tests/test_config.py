"""Configuration: defaults, environment, TOML file, precedence and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from d3_item_salvager.config import load_config
from d3_item_salvager.errors import ConfigError


def test_defaults_match_the_documented_values() -> None:
    """With no file and no environment, every setting has its documented default."""
    config = load_config()
    assert config.database.url == "sqlite+aiosqlite:///cache/d3_items.sqlite"
    assert config.maxroll.search_url == (
        "https://meilisearch-proxy.maxroll.gg/indexes/wp_posts_1/search"
    )
    assert config.maxroll.site_url == "https://maxroll.gg"
    assert config.maxroll.planner_profile_url == (
        "https://planners.maxroll.gg/profiles/load/d3/{planner_id}"
    )
    assert config.maxroll.item_data_url == "https://assets-ng.maxroll.gg/d3planner/data.json"
    assert config.maxroll.bearer_token is None
    assert config.maxroll.max_concurrency == 4
    assert config.cache.dir == Path("cache")
    assert (config.logging.dir, config.logging.level, config.logging.retention_days) == (
        Path("logs"),
        "INFO",
        14,
    )
    scheduler = config.scheduler
    assert scheduler.job_store_path == Path("cache/scheduler.sqlite")
    assert (scheduler.max_workers, scheduler.misfire_grace_seconds) == (5, 300)
    assert (scheduler.timezone, scheduler.shutdown_timeout_seconds) == ("UTC", 30)
    assert scheduler.jobs.by_id() == {}  # each job's defaults are in the job registry


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """D3IS_ variables with `__` reach nested sections, and floats below a minute are allowed."""
    monkeypatch.setenv("D3IS_MAXROLL__BEARER_TOKEN", "tok-123")
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__SCRAPE_GUIDES__INTERVAL_MINUTES", "0.05")
    monkeypatch.setenv("D3IS_LOGGING__LEVEL", "debug")
    monkeypatch.setenv("D3IS_MAXROLL__PLANNER_PROFILE_URL", "http://127.0.0.1:9/p/{planner_id}")
    config = load_config()
    assert config.maxroll.planner_profile_url == "http://127.0.0.1:9/p/{planner_id}"
    assert config.maxroll.require_bearer_token() == "tok-123"
    assert config.scheduler.jobs.by_id()["scrape_guides"].interval_minutes == 0.05
    assert "refresh_cache" not in config.scheduler.jobs.by_id()
    assert config.logging.level == "DEBUG"


def test_toml_file_is_read(tmp_path: Path) -> None:
    """Values in the TOML file replace the defaults; unset values keep them."""
    path = tmp_path / "workers.toml"
    path.write_text(
        "[maxroll]\nmax_concurrency = 8\n[scheduler.jobs.cleanup_logs]\nenabled = false\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.maxroll.max_concurrency == 8
    cleanup = config.scheduler.jobs.by_id()["cleanup_logs"]
    assert (cleanup.enabled, cleanup.interval_minutes) == (False, None)


def test_environment_beats_file_and_file_is_found_through_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D3IS_CONFIG_FILE names the file, and the environment wins over it setting by setting."""
    path = tmp_path / "workers.toml"
    path.write_text("[maxroll]\nmax_concurrency = 8\nsearch_page_size = 50\n", encoding="utf-8")
    monkeypatch.setenv("D3IS_CONFIG_FILE", str(path))
    monkeypatch.setenv("D3IS_MAXROLL__MAX_CONCURRENCY", "2")
    config = load_config()
    assert config.maxroll.max_concurrency == 2
    assert config.maxroll.search_page_size == 50


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "D3IS_SCHEDULER__JOBS__SCRAPE_GUIDES__INTERVAL_MINUTES",
            "-5",
            "scheduler.jobs.scrape_guides.interval_minutes = '-5'",
        ),
        ("D3IS_SCHEDULER__TIMEZONE", "Mars/Olympus", "scheduler.timezone = 'Mars/Olympus'"),
        (
            "D3IS_MAXROLL__PLANNER_PROFILE_URL",
            "https://planners.example/profiles/",
            "{planner_id}",
        ),
        ("D3IS_MAXROLL__SITE_URL", "ftp://maxroll.gg", "maxroll.site_url = 'ftp://maxroll.gg'"),
        ("D3IS_MAXROLL__MAX_CONCURRENCY", "0", "maxroll.max_concurrency = '0'"),
        ("D3IS_LOGGING__LEVEL", "LOUD", "logging.level = 'LOUD'"),
        ("D3IS_DATABASE__URL", "mysql://x/y", "database.url = 'mysql://x/y'"),
    ],
)
def test_bad_values_name_the_setting_and_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """Each invalid value gives a ConfigError that names the setting and what was given."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert expected in str(caught.value)


def test_all_problems_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several bad values are listed together, so an operator fixes them in one go."""
    monkeypatch.setenv("D3IS_SCHEDULER__MAX_WORKERS", "-1")
    monkeypatch.setenv("D3IS_CACHE__ITEM_CATALOG_TTL_MINUTES", "zero")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "scheduler.max_workers" in str(caught.value)
    assert "cache.item_catalog_ttl_minutes" in str(caught.value)


def test_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    path = tmp_path / "bad.toml"
    path.write_text("[maxroll\nmax_concurrency = ", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(path)


def test_missing_file_and_unknown_setting(tmp_path: Path) -> None:
    """A missing file and a misspelt key are both reported, not ignored."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    path = tmp_path / "typo.toml"
    path.write_text("[maxroll]\nmax_concurency = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"maxroll\.max_concurency: unknown setting"):
        load_config(path)


def test_missing_token_is_a_clear_error_and_token_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a token the scrape refuses with a hint; a bad token value is never printed."""
    with pytest.raises(ConfigError, match="D3IS_MAXROLL__BEARER_TOKEN"):
        load_config().maxroll.require_bearer_token()
    monkeypatch.setenv("D3IS_MAXROLL__BEARER_TOKEN", "   ")
    with pytest.raises(ConfigError):
        load_config().maxroll.require_bearer_token()
    monkeypatch.setenv("D3IS_MAXROLL__BEARER_TOKEN", "s3cret-value")
    assert "s3cret-value" not in repr(load_config())


def test_database_password_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad database URL is shown with its password masked."""
    monkeypatch.setenv("D3IS_DATABASE__URL", "postgresql://app:hunter2@db/idx")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "hunter2" not in str(caught.value)
    assert "postgresql://app:***@db/idx" in str(caught.value)


@pytest.mark.parametrize(
    "variable",
    ["D3IS_DATABASE_URL", "D3IS_SCHEDULR__LEASE_SECONDS", "d3is_maxrol__bearer_token", "D3IS_"],
)
def test_environment_variable_naming_no_setting_is_an_error(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A D3IS_ variable whose section is not a setting is refused by name, not ignored."""
    monkeypatch.setenv(variable, "5")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert f"environment variable {variable} names no setting" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_config_file_and_home_variables_are_not_settings_but_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """D3IS_CONFIG_FILE and D3IS_HOME are known variables, not typos."""
    path = tmp_path / "workers.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv("D3IS_CONFIG_FILE", str(path))
    monkeypatch.setenv("D3IS_HOME", str(tmp_path))
    assert load_config().maxroll.max_concurrency == 4


@pytest.mark.parametrize("minutes", ["0.001", "0.0166", "525601", "1e9"])
def test_interval_outside_one_second_to_a_year_is_refused(
    monkeypatch: pytest.MonkeyPatch, minutes: str
) -> None:
    """Intervals under a second or over a year name the setting and the bounds."""
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__REFRESH_CACHE__INTERVAL_MINUTES", minutes)
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert f"scheduler.jobs.refresh_cache.interval_minutes = '{minutes}'" in message
    assert "at least 1 second" in message


@pytest.mark.parametrize("minutes", [1 / 60, 525600])
def test_interval_bounds_are_inclusive(monkeypatch: pytest.MonkeyPatch, minutes: float) -> None:
    """Exactly one second and exactly a year are accepted."""
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__REFRESH_CACHE__INTERVAL_MINUTES", repr(minutes))
    assert load_config().scheduler.jobs.by_id()["refresh_cache"].interval_minutes == minutes


def test_a_file_that_is_not_utf8_names_the_file_and_the_position(tmp_path: Path) -> None:
    """A Latin-1 file is one ConfigError naming the file, the byte, its line and its column."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[maxroll]\nsite_url = "https://café.example"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environment=False)
    message = str(caught.value)
    assert message == (
        f"config file {path} is not UTF-8 text: byte 0xe9 at line 2, column 24 (save it as UTF-8)"
    )


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("D3IS_MAXROLL__BEARER_TOKEN", "tökén-1234", "maxroll.bearer_token"),
        ("D3IS_MAXROLL__BEARER_TOKEN", "tok\udcffen-1234", "maxroll.bearer_token"),
        ("D3IS_MAXROLL__BEARER_TOKEN", "tok en-1234", "maxroll.bearer_token"),
        ("D3IS_MAXROLL__SEARCH_URL", "https://search.example/\udcffidx", "maxroll.search_url"),
        ("D3IS_MAXROLL__SITE_URL", "https://\u2603\u2603.example/a\nb", "maxroll.site_url"),
        ("D3IS_MAXROLL__ITEM_DATA_URL", "https://bad_☃.example/data.json", "maxroll.item_data_url"),
        (
            "D3IS_MAXROLL__PLANNER_PROFILE_URL",
            "https://planners.example/\udcff/{planner_id}",
            "maxroll.planner_profile_url",
        ),
        ("D3IS_DATABASE__URL", "sqlite+aiosqlite:///index\udcff.sqlite", "database.url"),
        ("D3IS_SCHEDULER__JOB_STORE_URL", "sqlite:///jobs\udcff.sqlite", "scheduler.job_store_url"),
    ],
)
def test_a_value_no_request_can_carry_is_refused_unshown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str
) -> None:
    """Non-ASCII token text, undecodable environment bytes (kept by Python as lone surrogates),
    control characters or an invalid international host are refused, naming the setting only."""
    monkeypatch.setenv(variable, value)  # os.environ stores lone surrogates as the raw bytes
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert message.startswith(f"invalid configuration: {setting}: ")
    assert "not shown" in message
    for part in ("tök", "tok", "\udcff", "idx", "☃", "index", "jobs"):
        assert part not in message.removeprefix(f"invalid configuration: {setting}: ")


def test_international_urls_that_httpx_can_send_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL with an international host and path is accepted (httpx encodes it when sending)."""
    monkeypatch.setenv("D3IS_MAXROLL__SITE_URL", "https://exämple.example/führer")
    assert load_config().maxroll.site_url == "https://exämple.example/führer"


def test_job_sections_read_as_attributes() -> None:
    """`config.scheduler.jobs.<id>.<setting>`: a set section as set, an unset one all defaults
    (the job's own interval and timeout come from its spec)."""
    config = load_config(
        environment=False, scheduler={"jobs": {"scrape_guides": {"interval_minutes": 30}}}
    )
    assert config.scheduler.jobs.scrape_guides.interval_minutes == 30
    assert config.scheduler.jobs.cleanup_logs.enabled is True
    assert config.scheduler.jobs.cleanup_logs.interval_minutes is None
    assert config.scheduler.jobs.by_id() == {"scrape_guides": config.scheduler.jobs.scrape_guides}
