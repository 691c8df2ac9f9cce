"""A sync reads each guide page and profile with one worker-thread hand-off after its request.

The validators of the cached documents are read once per namespace and sync, not per document;
the index comes out the same on a first sync and on a revalidating one (every document a 304).
"""

from __future__ import annotations

import pytest

from d3_item_salvager.config import AppConfig
from d3_item_salvager.container import open_container, resolve
from d3_item_salvager.services.build_guides import BuildGuideService
from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from tests.counting_gateway import CountingGateway
from tests.index_expectations import expected_rows
from tests.index_reader import IndexReader


@pytest.fixture
def live_config(any_backend_config: AppConfig) -> AppConfig:
    cache = any_backend_config.cache.model_copy(update={"revalidate_after_minutes": 0.0})
    return any_backend_config.model_copy(update={"cache": cache})


async def test_each_document_costs_one_hand_off_on_first_and_revalidating_syncs(
    live_config: AppConfig, fake_maxroll: FakeMaxroll, index: IndexReader
) -> None:
    async with open_container(live_config) as container:
        gateway = CountingGateway(
            await resolve(container.maxroll_client),
            live_config.maxroll,
            live_config.cache,
            await resolve(container.thread_limiter),
        )
        service = BuildGuideService(
            gateway,
            await resolve(container.index_repository),
            live_config.maxroll,
            live_config.cache,
        )
        try:
            for revalidating in (False, True):
                gateway.hand_offs.clear()
                fake_maxroll.reset_log()
                summary = await service.prepare_database()
                counts = fake_maxroll.counts()
                # Guide pages, profiles and data.json (read once the first time, then fresh).
                documents = counts["guide"] + counts["profile"] + counts["data"]
                assert gateway.per_document() == documents
                assert gateway.hand_offs.count("stamps") == 2  # guide pages, profiles
                # One stamp read of its own: data.json's (whose parsed catalog is then reused
                # without reading the body back); guide pages and profiles use the session's.
                assert gateway.hand_offs.count("stamp") == 1
                assert summary.not_modified == (documents if revalidating else 0)
                assert index.rows() == expected_rows(fake_maxroll.site)
        finally:
            gateway.close()
