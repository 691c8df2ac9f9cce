"""WorkerRuntime start-up leaves the host's loop free, and freeze_gc stays harmless to the host.

No timing: each test checks on which thread a slow start-up step ran.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest

import d3_item_salvager.data.migrations.runner as migrations_runner
import d3_item_salvager.maxroll.http as maxroll_http
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config


def record_threads(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace module.name by a wrapper that notes the thread of every call."""
    threads: list[int] = []
    original = getattr(module, name)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, recorded)
    return threads


async def test_a_new_index_schema_is_created_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrades = record_threads(monkeypatch, migrations_runner, "_upgrade_locked")
    async with WorkerRuntime(make_config(tmp_path), run_scheduler=False):
        pass
    assert upgrades
    assert threading.get_ident() not in upgrades


async def test_the_http_client_and_its_ssl_context_are_built_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = record_threads(monkeypatch, maxroll_http, "build_http_client")
    async with WorkerRuntime(make_config(tmp_path), run_scheduler=False):
        pass
    assert len(builds) == 1
    assert builds[0] != threading.get_ident()


def frozen(value: object) -> bool:
    """Whether the cyclic collector no longer tracks `value` (frozen objects are out of reach)."""
    return not any(candidate is value for candidate in gc.get_objects())


async def test_freeze_gc_never_unfreezes_what_the_host_froze(tmp_path: Path) -> None:
    """The host froze objects of its own: on exit the runtime leaves everything frozen."""
    host_state: list[object] = [object()]
    gc.freeze()
    try:
        config = make_config(tmp_path)
        async with WorkerRuntime(config, run_scheduler=False, freeze_gc=True) as runtime:
            assert frozen(runtime.container)
        assert frozen(host_state)
    finally:
        gc.unfreeze()
    assert not frozen(host_state)
