"""pytest fixtures for apps that embed the workers; loaded through the `pytest11` entry point.

Nothing here runs unless a test asks for a fixture by name:

- `fake_maxroll`: a `FakeMaxroll` serving a small synthetic site on 127.0.0.1;
- `salvager_config`: an `AppConfig` pointing at it, every file under `tmp_path`, the shell's
  `D3IS_` variables ignored;
- `salvager_runtime`: a `WorkerRuntime` opened on that config in burst mode: it holds the lease
  and has registered the jobs, but runs them only when the test asks (`await
  runtime.run_due_jobs()`, `await runtime.run_job(...)`). Needs pytest-asyncio (strict or auto).

Override `salvager_config` in a conftest.py to change settings, e.g.
`return fake_maxroll.config(tmp_path, scheduler={"jobs": {"cleanup_logs": {"enabled": False}}})`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll

if TYPE_CHECKING:
    from d3_item_salvager.workers.runtime import WorkerRuntime

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only without pytest-asyncio installed
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture
def fake_maxroll() -> Iterator[FakeMaxroll]:
    """A fake Maxroll on a free loopback port, serving a small synthetic site."""
    with FakeMaxroll() as fake:
        yield fake


@pytest.fixture
def salvager_config(tmp_path: Path, fake_maxroll: FakeMaxroll) -> AppConfig:
    """A config for `fake_maxroll` whose files all live under `tmp_path / "d3is"`."""
    return fake_maxroll.config(tmp_path / "d3is")


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def salvager_runtime(salvager_config: AppConfig) -> AsyncIterator[WorkerRuntime]:
        """An open burst-mode `WorkerRuntime` on `salvager_config`, closed after the test."""
        # Imported here: the runtime pulls in SQLAlchemy and APScheduler, which a pytest run
        # that never asks for this fixture should not pay for.
        from d3_item_salvager.workers.runtime import WorkerRuntime

        # Burst mode: jobs run when the test says so, never behind its back.
        async with WorkerRuntime(salvager_config, burst=True) as runtime:
            yield runtime

else:  # pragma: no cover - only without pytest-asyncio installed

    @pytest.fixture
    def salvager_runtime() -> None:
        """Explains what is missing instead of failing on an unknown async fixture."""
        pytest.fail(
            "the salvager_runtime fixture needs pytest-asyncio (pip install pytest-asyncio)"
        )
