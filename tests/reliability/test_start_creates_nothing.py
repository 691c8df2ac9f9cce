"""A start that stops on its configuration or its stores leaves nothing behind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.conftest import only_jobs
from tests.processes import run_cli, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a socket that does not listen: connections are refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.mark.parametrize("args", [["run", "cleanup-logs"], ["run-scheduler"]])
async def test_an_unreachable_postgres_job_store_creates_no_index_and_no_log(
    tmp_path: Path, refused_port: int, args: list[str]
) -> None:
    """Exit 2 naming scheduler.job_store_url, on one line; the default index
    (cache/d3_items.sqlite) and log file (logs/workers.log) are not created."""
    config = write_config(
        tmp_path / "workers.toml",
        {
            "scheduler": {
                "job_store_url": f"postgresql+psycopg://nobody@127.0.0.1:{refused_port}/jobs",
                "jobs": only_jobs(cleanup_logs={}),
            }
        },
    )
    code, stdout, stderr = await run_cli(*args, "--config", str(config), cwd=tmp_path)
    assert (code, stdout) == (2, ""), stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: scheduler.job_store_url: cannot use the job store (")
    assert "sqlalche.me" not in line
    created = sorted([entry.name async for entry in anyio.Path(tmp_path).iterdir()])
    assert created == ["workers.toml"]


async def test_an_unreachable_postgres_index_creates_no_job_store_and_no_log(
    tmp_path: Path, refused_port: int
) -> None:
    """With the index on an unreachable server and the default SQLite job store, `run` exits 2
    naming the index, and neither cache/scheduler.sqlite nor logs/workers.log is created."""
    config = write_config(
        tmp_path / "workers.toml",
        {
            "database": {"url": f"postgresql+asyncpg://nobody@127.0.0.1:{refused_port}/index"},
            "scheduler": {
                "jobs": only_jobs(cleanup_logs={}),
            },
        },
    )
    code, stdout, stderr = await run_cli(
        "run", "cleanup-logs", "--config", str(config), cwd=tmp_path
    )
    assert (code, stdout) == (2, ""), stderr
    [line] = stderr.strip().splitlines()
    assert "index database" in line
    created = sorted([entry.name async for entry in anyio.Path(tmp_path).iterdir()])
    assert created == ["workers.toml"]
