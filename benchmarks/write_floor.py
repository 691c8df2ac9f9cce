"""Index writes alone: the SQLite writer against SQLAlchemy Core and against the machine's floor.

python -m benchmarks.write_floor [--guides 200]

The same synthetic guides (2 planners x 4 profiles, ~22 usages per profile) are written to three
fresh SQLite files, and the process CPU per guide is reported for each path, as ratios within
one run (the machine is shared: absolute figures are noisy, ratios much less so):
- floor: plain sqlite3, one thread, one transaction per guide, straight INSERTs with no diff;
  what the machine can do at best, kept so later changes are judged against it;
- writer: `SqliteGuideWriter`, the path a SQLite file index uses: the guide diff of
  data/guide_rows.py on the writer thread's synchronous SQLAlchemy connection;
- core: `IndexRepository` on the async engine (aiosqlite), the same diff through
  `AsyncConnection.run_sync`: the route PostgreSQL (and an in-memory SQLite index) takes.
The writer and core paths then rewrite the unchanged guides (a re-sync that changes nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks._common import config_for
from d3_item_salvager.data.engine import index_engine_resource
from d3_item_salvager.data.repository import IndexRepository
from d3_item_salvager.data.sqlite_writer import SqliteGuideWriter
from d3_item_salvager.maxroll.models import BuildRecord, CatalogItem, GuideRecord, ItemUsage

SLOTS = ("head", "shoulders", "torso", "hands", "waist", "legs", "feet", "neck", "ring", "offhand")
Guide = tuple[GuideRecord, list[BuildRecord], dict[str, CatalogItem]]


def synthetic_guides(count: int) -> list[Guide]:
    """Guides shaped like the sync benchmark's site: 8 builds of ~22 usages, 400 item ids."""
    guides: list[Guide] = []
    for g in range(count):
        builds = []
        for planner in range(2):
            for profile in range(4):
                usages = tuple(
                    ItemUsage(f"Item_{(g * 7 + profile * 13 + u) % 400}", SLOTS[u % 10], "main")
                    for u in range(20)
                ) + (
                    ItemUsage(f"Item_{(g + profile) % 400}", "kanai", "kanai"),
                    ItemUsage(f"Item_{(g + profile + 1) % 400}", "ring", "follower"),
                )
                builds.append(
                    BuildRecord(f"P{g}-{planner}", profile, f"Build {profile}", "Monk", usages)
                )
        catalog = {
            u.item_id: CatalogItem(u.item_id, u.item_id.replace("_", " "), "ring", "legendary")
            for b in builds
            for u in b.usages
        }
        guide = GuideRecord(g + 1, f"Guide {g}", f"https://site/guides/{g}", 1_700_000_000)
        guides.append((guide, builds, catalog))
    return guides


def floor_write(path: Path, guides: list[Guide], synced: str) -> None:
    """Straight inserts, one transaction per guide, no reads: the least work the rows need."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA synchronous = NORMAL")
    for guide, builds, catalog in guides:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO guides (id, url, title, class_name, modified_unix, "
            "last_synced_at, last_checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (guide.guide_id, guide.url, guide.title, guide.class_name, guide.modified_unix,
             synced, synced),
        )  # fmt: skip
        connection.executemany(
            "INSERT OR IGNORE INTO items (id, name, slot, quality, set_name) VALUES (?, ?, ?, ?, ?)",
            [(r.item_id, r.name, r.slot, r.quality, r.set_name) for r in catalog.values()],
        )
        for build in builds:
            build_id = connection.execute(
                "INSERT OR IGNORE INTO builds (guide_id, planner_id, profile_index, name, "
                "class_name) VALUES (?, ?, ?, ?, ?)",
                (guide.guide_id, build.planner_id, build.profile_index, build.name,
                 build.class_name),
            ).lastrowid  # fmt: skip
            connection.executemany(
                "INSERT OR IGNORE INTO item_usages (build_id, item_id, slot, context) "
                "VALUES (?, ?, ?, ?)",
                [(build_id, u.item_id, u.slot, u.context) for u in build.usages],
            )
        connection.execute("COMMIT")
    connection.close()


async def _engine(folder: Path) -> AsyncIterator[tuple[Path, AsyncEngine]]:
    """A fresh index file with its schema, and its engine (disposed when resumed)."""
    config = config_for({}, folder)
    path = config.database.sqlite_path
    assert path is not None
    async for engine in index_engine_resource(config.database):
        yield path, engine


async def main(count: int) -> None:
    guides = synthetic_guides(count)
    synced = datetime(2026, 1, 1, tzinfo=UTC)
    usages = sum(len(b.usages) for _, builds, _ in guides for b in builds)
    print(f"{count} guides, {usages} usages; process CPU per guide, one run:")
    with tempfile.TemporaryDirectory() as folder:
        floor = 0.0
        for name in ("floor", "writer", "core"):
            (Path(folder) / name).mkdir()
            resource = _engine(Path(folder) / name)
            path, engine = await anext(resource)
            writer = SqliteGuideWriter(path, busy_timeout_seconds=30)
            repository = IndexRepository(engine, writer if name == "writer" else None)
            for rewrite in (False, True) if name != "floor" else (False,):
                started = time.process_time()
                if name == "floor":
                    await asyncio.to_thread(floor_write, path, guides, synced.isoformat())
                else:
                    for guide, builds, catalog in guides:
                        await repository.write_guide(guide, builds, catalog, synced)
                cpu = time.process_time() - started
                floor = floor or cpu
                label = name + (" (unchanged rewrite)" if rewrite else "")
                print(
                    f"  {label:<28} {cpu / count * 1e3:6.2f} ms CPU per guide"
                    f" ({cpu / floor:.1f}x the floor)"
                )
            await writer.aclose()
            async for _ in resource:  # disposes the engine
                pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guides", type=int, default=200)
    asyncio.run(main(parser.parse_args().guides))
