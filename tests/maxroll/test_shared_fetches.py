"""Two jobs of one runtime asking for the same Maxroll documents at once make one request each."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import anyio

from d3_item_salvager.testing.fake_maxroll import ITEM_DATA_PATH, SEARCH_PATH, FakeMaxroll, Fault
from d3_item_salvager.workers.runs import RunResult
from d3_item_salvager.workers.runtime import WorkerRuntime
from tests.conftest import make_config

GATEWAY_LOGGER = "d3_item_salvager.maxroll.gateway"


class SharingWatch(logging.Handler):
    """Sets an event when the gateway says a caller joined the fetch of a document."""

    def __init__(self, documents: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.joined = {document: anyio.Event() for document in documents}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "sharing a fetch already in flight":
            self.joined[getattr(record, "document")].set()  # noqa: B009 - an extra field


async def test_sync_and_cache_refresh_starting_together_share_the_search_and_data_json(
    tmp_path: Path, fake_maxroll: FakeMaxroll
) -> None:
    """On a first start, scrape_guides and refresh_cache run together: the fake holds the
    first search and data.json requests until the other job has joined them, and counts one
    listing's search pages and a single data.json request."""
    config = make_config(tmp_path, maxroll=fake_maxroll.config_values())
    # The server holds each of these until the test lets it answer (in its own thread).
    gates = {SEARCH_PATH: threading.Event(), ITEM_DATA_PATH: threading.Event()}

    def hold(_method: str, path: str) -> Fault | None:
        gate = gates.get(path)
        if gate is not None:
            gate.wait(30)
        return None

    fake_maxroll.fault_hook = hold
    watch = SharingWatch(["guide list", "item data"])
    logger = logging.getLogger(GATEWAY_LOGGER)
    logger.addHandler(watch)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    results: dict[str, RunResult] = {}
    try:
        async with WorkerRuntime(config, run_scheduler=False) as runtime:

            async def run(job: str) -> None:
                results[job] = await runtime.run_job(job)

            async with anyio.create_task_group() as group:
                group.start_soon(run, "scrape_guides")
                group.start_soon(run, "refresh_cache")
                try:
                    with anyio.fail_after(30):
                        await watch.joined["guide list"].wait()
                        gates[SEARCH_PATH].set()
                        await watch.joined["item data"].wait()
                        gates[ITEM_DATA_PATH].set()
                finally:
                    for gate in gates.values():
                        gate.set()
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
    assert {job: result.outcome for job, result in results.items()} == {
        "scrape_guides": "success",
        "refresh_cache": "success",
    }
    assert fake_maxroll.count(ITEM_DATA_PATH) == 1
    shared_search = fake_maxroll.count(SEARCH_PATH)

    fake_maxroll.reset_log()  # one listing alone asks for as many search pages
    async with WorkerRuntime(config, run_scheduler=False) as runtime:
        alone = await runtime.run_job("refresh_cache")
    assert alone.outcome == "success"
    assert shared_search == fake_maxroll.count(SEARCH_PATH)
