"""Configuration for embedders: explicit overrides, skipping the environment, and `home`."""

from __future__ import annotations

from pathlib import Path

import pytest

from d3_item_salvager.config import AppConfig, DatabaseConfig, load_config
from d3_item_salvager.errors import ConfigError
from d3_item_salvager.logging_setup import configure_app_logging
from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS
from d3_item_salvager.workers.runtime import WorkerRuntime


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_explicit_values_beat_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyword sections beat `overrides`, which beat D3IS_ variables, which beat the file."""
    path = _toml(
        tmp_path, "[maxroll]\nmax_concurrency = 8\nsearch_page_size = 50\nretry_attempts = 7\n"
    )
    monkeypatch.setenv("D3IS_MAXROLL__MAX_CONCURRENCY", "2")
    monkeypatch.setenv("D3IS_MAXROLL__SEARCH_PAGE_SIZE", "30")
    monkeypatch.setenv("D3IS_LOGGING__LEVEL", "debug")
    config = load_config(
        path,
        overrides={"maxroll": {"max_concurrency": 3, "retry_attempts": 9}},
        maxroll={"retry_attempts": 11},
    )
    assert config.maxroll.max_concurrency == 3  # override beats environment and file
    assert config.maxroll.retry_attempts == 11  # keyword section beats the overrides dict
    assert config.maxroll.search_page_size == 30  # environment still beats the file
    assert config.logging.level == "DEBUG"  # a section not overridden keeps the environment


def test_overrides_merge_nested_sections_setting_by_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nested override changes one job's setting and leaves its siblings to other sources."""
    monkeypatch.setenv("D3IS_SCHEDULER__JOBS__CLEANUP_LOGS__INTERVAL_MINUTES", "5")
    config = load_config(
        overrides={"scheduler": {"jobs": {"cleanup_logs": {"enabled": False}}}},
    )
    cleanup = BUILTIN_JOBS.get("cleanup_logs").settings(config)
    assert (cleanup.enabled, cleanup.interval_minutes) == (False, 5)
    assert BUILTIN_JOBS.get("scrape_guides").settings(config).enabled is True


def test_environment_false_ignores_every_d3is_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With environment=False neither D3IS_ settings nor D3IS_CONFIG_FILE are read."""
    monkeypatch.setenv("D3IS_CONFIG_FILE", str(_toml(tmp_path, "[maxroll]\nmax_concurrency = 8\n")))
    monkeypatch.setenv("D3IS_MAXROLL__BEARER_TOKEN", "from-the-shell")
    monkeypatch.setenv("D3IS_HOME", str(tmp_path / "shell-home"))
    config = load_config(environment=False, maxroll={"search_page_size": 40})
    assert config.maxroll.bearer_token is None
    assert config.maxroll.max_concurrency == 4
    assert config.maxroll.search_page_size == 40
    assert config.home is None
    # An explicit file is still read without the environment.
    assert load_config(Path(tmp_path / "workers.toml"), environment=False).maxroll.max_concurrency


def test_invalid_override_is_a_config_error_naming_it() -> None:
    """A bad explicit value fails like a bad file value: one message naming setting and value."""
    with pytest.raises(ConfigError, match=r"maxroll\.max_concurrency = 0"):
        load_config(environment=False, maxroll={"max_concurrency": 0})
    with pytest.raises(ConfigError, match=r"maxroll\.nonsense: unknown setting"):
        load_config(environment=False, maxroll={"nonsense": 1})


def test_home_roots_every_relative_path(tmp_path: Path) -> None:
    """Defaults and relative paths go under home; absolute paths and server URLs stay."""
    home = tmp_path / "install"
    config = load_config(environment=False, home=home)
    assert config.home == home
    assert config.database.url == f"sqlite+aiosqlite:///{home}/cache/d3_items.sqlite"
    assert config.database.sqlite_path == home / "cache" / "d3_items.sqlite"
    assert config.cache.dir == home / "cache"
    assert config.logging.dir == home / "logs"
    assert config.scheduler.job_store_path == home / "cache" / "scheduler.sqlite"

    config = load_config(
        environment=False,
        home=home,
        database={"url": "sqlite+aiosqlite:///data/index.sqlite?timeout=5"},
        cache={"dir": "/var/cache/d3is"},
        scheduler={"job_store_url": "sqlite:///jobs/store.sqlite"},
    )
    assert config.database.url == f"sqlite+aiosqlite:///{home}/data/index.sqlite?timeout=5"
    assert config.cache.dir == Path("/var/cache/d3is")
    assert config.scheduler.job_store_url == f"sqlite:///{home}/jobs/store.sqlite"

    postgres = "postgresql+asyncpg://u@db/d3is"
    config = load_config(environment=False, home=home, database={"url": postgres})
    assert config.database.url == postgres


def test_home_from_the_environment_and_sections_given_as_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D3IS_HOME sets home; a section passed as a model object is rooted as well."""
    monkeypatch.setenv("D3IS_HOME", str(tmp_path))
    assert load_config().logging.dir == tmp_path / "logs"
    config = AppConfig(
        home=tmp_path, database=DatabaseConfig(url="sqlite+aiosqlite:///index.sqlite")
    )
    assert config.database.sqlite_path == tmp_path / "index.sqlite"


def test_defaults_are_unchanged_without_home() -> None:
    """Without home the relative defaults stay relative to the working directory."""
    config = load_config(environment=False)
    assert config.home is None
    assert config.cache.dir == Path("cache")
    assert config.database.url == "sqlite+aiosqlite:///cache/d3_items.sqlite"


async def test_one_home_isolates_a_whole_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime configured with only `home` writes its files there and nothing in the cwd."""
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    config = load_config(environment=False, home=home)
    configure_app_logging(config)
    async with WorkerRuntime(config):
        pass
    assert (home / "cache" / "d3_items.sqlite").is_file()
    assert (home / "cache" / "scheduler.sqlite").is_file()
    assert (home / "logs" / "workers.log").is_file()
    assert list(cwd.iterdir()) == []
