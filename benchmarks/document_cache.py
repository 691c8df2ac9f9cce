"""CPU per document of the conditional-request cache: ours against hishel's, when installed.

python -m benchmarks.document_cache [--documents 1000] [--rounds 3]

Both caches sit in front of the same in-process HTTP answerer (httpx.MockTransport: 3 kB
documents with an ETag, 304 to a matching If-None-Match), so only the caches' work differs.
Per round, each cache stores every document (first fetch, 200), then revalidates every one
(conditional request, 304, body from the cache); the figure is process CPU per document.

- ours: `ConditionalDocuments` over `DocumentCache` (maxroll/revalidation.py and
  document_cache.py), one worker-thread call per document, as a sync runs it.
- hishel: `hishel.httpx.AsyncCacheTransport(rfc=True)` with `AsyncSqliteStorage`; the
  documents say `Cache-Control: no-cache`, so every request is revalidated, as a sync with
  `cache.revalidate_after_minutes = 0` does. Needs `pip install "hishel[async,httpx]"`
  (not a dependency of the project: skipped when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx

from d3_item_salvager.maxroll.client import Fetched, Validators
from d3_item_salvager.maxroll.document_cache import DocumentCache
from d3_item_salvager.maxroll.revalidation import ConditionalDocuments

BODY = b"<html>" + b"x" * 3000 + b"</html>"
ETAG = '"v1"'
NOT_MODIFIED = [0]  # 304 answers given, so the figures can show both caches revalidated


def answer(request: httpx.Request) -> httpx.Response:
    headers = {"etag": ETAG, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == ETAG:
        NOT_MODIFIED[0] += 1
        return httpx.Response(304, headers=headers)
    return httpx.Response(200, headers=headers, content=BODY)


async def in_thread(function: Callable[..., Any], *args: object) -> Any:
    return await anyio.to_thread.run_sync(function, *args)


async def ours(folder: Path, urls: list[str], concurrency: int) -> tuple[float, float]:
    """CPU per document: first fetch and store, then revalidation (304)."""
    cache = DocumentCache(folder / "documents.sqlite")
    documents = ConditionalDocuments(cache, in_thread, time.time, lambda error: None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:

        async def one(url: str) -> None:
            async def fetch(validators: Validators | None) -> Fetched:
                headers = validators.headers() if validators else {}
                response = await http.get(url, headers=headers)
                body = None if response.status_code == 304 else response.content
                return Fetched(url, body, Validators(etag=response.headers.get("etag")))

            previous = await documents.cached_stamp("pages", url)
            await documents.read(
                "pages", url, fetch, bytes, lambda result, body: body, previous=previous
            )

        figures = []
        for _ in range(2):
            async with documents.session():
                figures.append(await per_document(one, urls, concurrency))
    cache.close()
    return figures[0], figures[1]


async def hishel_cache(folder: Path, urls: list[str], concurrency: int) -> tuple[float, float]:
    from hishel import AsyncSqliteStorage  # optional: imported only when installed
    from hishel.httpx import AsyncCacheTransport  # optional: imported only when installed

    storage = AsyncSqliteStorage(database_path=folder / "hishel.sqlite")
    transport = AsyncCacheTransport(
        next_transport=httpx.MockTransport(answer), storage=storage, rfc=True
    )
    async with httpx.AsyncClient(transport=transport) as http:

        async def one(url: str) -> None:
            response = await http.get(url)
            if response.content != BODY:
                raise RuntimeError("hishel returned another body")

        figures = [await per_document(one, urls, concurrency) for _ in range(2)]
    return figures[0], figures[1]


async def per_document(
    one: Callable[[str], Awaitable[None]], urls: list[str], concurrency: int
) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def limited(url: str) -> None:
        async with slots:
            await one(url)

    started = time.process_time()
    await asyncio.gather(*(limited(url) for url in urls))
    return (time.process_time() - started) / len(urls)


async def main(count: int, rounds: int, concurrency: int) -> None:
    urls = [f"https://maxroll.example/d3/guides/guide-{n}" for n in range(count)]
    variants: dict[str, Callable[[Path, list[str], int], Awaitable[tuple[float, float]]]] = {
        "ours": ours
    }
    try:
        import anysqlite  # noqa: F401 - hishel's async SQLite storage needs it
        import hishel.httpx  # noqa: F401
    except ImportError:
        print(
            'hishel (with its async SQLite storage) is not installed: pip install "hishel[async,httpx]"'
        )
    else:
        variants["hishel"] = hishel_cache
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    not_modified = dict.fromkeys(variants, 0)
    for _ in range(rounds):
        for name, variant in variants.items():
            NOT_MODIFIED[0] = 0
            with tempfile.TemporaryDirectory() as folder:
                results[name].append(await variant(Path(folder), urls, concurrency))
            not_modified[name] += NOT_MODIFIED[0]
    print(
        f"{count} documents of {len(BODY)} bytes, concurrency {concurrency}; process CPU per document:"
    )
    for name, figures in results.items():
        store = statistics.median(first for first, _ in figures)
        revalidate = statistics.median(second for _, second in figures)
        print(
            f"  {name:7s} first fetch and store {store * 1e6:5.0f} us, "
            f"revalidation (304) {revalidate * 1e6:5.0f} us (medians of {rounds} rounds; "
            f"{not_modified[name] / rounds:.0f} answered 304 per round)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.documents, arguments.rounds, arguments.concurrency))
