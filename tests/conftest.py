"""Shared fixtures: a clean environment, a config rooted in tmp_path, and a container."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from d3_item_salvager.config import AppConfig, JobConfig, load_config
from d3_item_salvager.container import Container, open_container
from d3_item_salvager.logging_setup import LOGGER_NAME
from d3_item_salvager.testing import FakeMaxroll
from d3_item_salvager.testing.fake_site import Site, build_site
from tests.index_reader import IndexReader
from tests.postgres_server import postgres  # noqa: F401 - a fixture, shared by every test folder


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No D3IS_ variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("D3IS_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Handlers installed by one test are closed before the next."""
    yield
    for name in (LOGGER_NAME, "apscheduler"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.propagate = True


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> AppConfig:
    """A config whose every file lives under tmp_path; sections override the test defaults."""
    base: dict[str, dict[str, Any]] = {
        # Relative paths land under `home`, i.e. tmp_path.
        "database": {"url": "sqlite+aiosqlite:///index.sqlite"},
        "cache": {"dir": "cache"},
        "logging": {"dir": "logs"},
        # Tests decide when jobs run: new jobs wait for their interval, as on a restart.
        "scheduler": {
            "job_store_path": "scheduler.sqlite",
            "run_new_jobs_at_once": False,
        },
        "maxroll": {
            "retry_initial_backoff_seconds": 0,
            "retry_max_backoff_seconds": 0,
            "request_timeout_seconds": 5,
        },
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return load_config(overrides=base, environment=False, home=tmp_path)


def only_jobs(**enabled: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`[scheduler.jobs]` sections that enable just these built-in jobs (with their settings) and
    disable every other one of the registry, so a job added to it later stays out of the test."""
    from d3_item_salvager.workers.builtin_jobs import BUILTIN_JOBS

    unknown = set(enabled) - set(BUILTIN_JOBS.ids)
    assert not unknown, f"not built-in jobs: {unknown}"
    return {
        job_id: {**enabled[job_id]} if job_id in enabled else {"enabled": False}
        for job_id in BUILTIN_JOBS.ids
    }


def with_interval_seconds(config: AppConfig, job_id: str, seconds: float) -> AppConfig:
    """`config` with one job's interval set to `seconds`, even below the 1-second minimum.

    Operators may not configure intervals under a second; soak tests and benchmarks need
    thousands of runs quickly, so they bypass validation here on purpose (model_copy does not
    validate).
    """
    jobs = config.scheduler.jobs
    section = jobs.by_id().get(job_id, JobConfig())
    job = section.model_copy(update={"interval_minutes": seconds / 60})
    scheduler = config.scheduler.model_copy(update={"jobs": jobs.model_copy(update={job_id: job})})
    return config.model_copy(update={"scheduler": scheduler})


@pytest.fixture
def config(tmp_path: Path) -> AppConfig:
    """A default test config rooted in tmp_path."""
    return make_config(tmp_path)


@pytest.fixture
async def container(config: AppConfig) -> AsyncIterator[Container]:
    """A container with its resources open, closed after the test."""
    async with open_container(config) as container:
        yield container


@pytest.fixture
def site() -> Site:
    """A small synthetic Maxroll site."""
    return build_site(5)


@pytest.fixture
def fake_maxroll(site: Site) -> Iterator[FakeMaxroll]:
    """The fake Maxroll serving `site` on 127.0.0.1 (overrides the kit's fixture of that name)."""
    with FakeMaxroll(site=site) as fake:
        yield fake


@pytest.fixture
def live_config(tmp_path: Path, fake_maxroll: FakeMaxroll) -> AppConfig:
    """A config rooted in tmp_path whose Maxroll endpoints point at the fake server."""
    return make_config(tmp_path, maxroll=fake_maxroll.config_values())


@pytest.fixture
async def live_container(live_config: AppConfig) -> AsyncIterator[Container]:
    """A container wired to the fake Maxroll, resources open."""
    async with open_container(live_config) as container:
        yield container


@pytest.fixture(params=["sqlite", "postgresql"])
def any_backend_config(
    request: pytest.FixtureRequest, tmp_path: Path, fake_maxroll: FakeMaxroll
) -> AppConfig:
    """The fake Maxroll's config with the index on SQLite, then on PostgreSQL (when available).

    A test module opts in with `live_config = any_backend_config` style overrides.
    """
    database: dict[str, Any] = {}
    if request.param == "postgresql":
        database = {"url": request.getfixturevalue("postgres").asyncpg_url}
    return make_config(tmp_path, maxroll=fake_maxroll.config_values(), database=database)


@pytest.fixture
def index(any_backend_config: AppConfig) -> Iterator[IndexReader]:
    """Reads the index of `any_backend_config`, whichever database it is."""
    reader = IndexReader(any_backend_config)
    yield reader
    reader.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def job_store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`scheduler` settings putting the job store (run history, lease, APScheduler's jobs) on
    SQLite, the default, then on PostgreSQL (skipped without TEST_POSTGRES_URL)."""
    if request.param == "postgresql":
        return {"job_store_url": request.getfixturevalue("postgres").psycopg_url}
    return {}


@pytest.fixture(params=["sqlite-url", "postgresql"])
def lease_store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`scheduler` settings for a job store led through its lease row: a SQLite store named by
    URL, then PostgreSQL (skipped without TEST_POSTGRES_URL). A SQLite store named by path is
    led through the lock beside it instead (leader_lock.py)."""
    if request.param == "postgresql":
        return {"job_store_url": request.getfixturevalue("postgres").psycopg_url}
    folder = request.getfixturevalue("tmp_path")
    return {"job_store_url": f"sqlite:///{folder / 'lease-store.sqlite'}"}
