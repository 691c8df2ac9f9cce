"""What the index must hold for a synthetic site, computed independently from the service."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from d3_item_salvager.testing.fake_site import META_SLOTS, TYPE_FOR_SLOT, Guide, Site

ITEM_TYPE_SLOTS = {
    "helm": "head", "shoulders": "shoulders", "amulet": "neck", "chestarmor": "torso",
    "belt": "waist", "gloves": "hands", "bracers": "wrists", "pants": "legs", "boots": "feet",
    "ring": ",".join(META_SLOTS["finger"]), "sword": ",".join(META_SLOTS["onehand"]),
    "axe2h": ",".join(META_SLOTS["twohand"]), "shield": "offhand", "enchantressfocus": "follower",
}  # fmt: skip


def expected_rows(site: Site) -> dict[str, set[tuple[object, ...]]]:
    """guides, builds, usages and items as sets of tuples (builds and usages by natural key)."""
    assert set(TYPE_FOR_SLOT.values()) <= set(ITEM_TYPE_SLOTS)
    guide_rows: set[tuple[object, ...]] = set()
    build_rows: set[tuple[object, ...]] = set()
    usage_rows: set[tuple[object, ...]] = set()
    used: set[str] = set()
    for guide in site.guides:
        guide_rows.add(
            (guide.guide_id, guide.permalink, guide.title, guide.class_name, guide.modified_unix)
        )
        for planner_id in guide.expected_planners():
            planner = site.planners[planner_id]
            for index, profile in enumerate(planner.profiles):
                build_rows.add(
                    (guide.guide_id, planner_id, index, profile["name"].strip(), profile["class"])
                )
                key = (guide.guide_id, planner_id, index)
                for context, slots in (
                    ("main", profile["items"]),
                    ("follower", profile["followerItems"]),
                ):
                    for slot, entry in slots.items():
                        if entry:
                            usage_rows.add((*key, entry["id"], slot, context))
                            used.add(entry["id"])
                for slot, item_id in profile["kanai"].items():
                    usage_rows.add((*key, item_id, slot, "kanai"))
                    used.add(item_id)
    # The whole catalog is stored, used or not; every used id is in the catalog.
    assert used <= {record["id"] for record in site.catalog}
    item_rows: set[tuple[object, ...]] = set()
    for record in site.catalog:
        set_name = "Synthetic Battlegear" if record.get("set") else None
        item_rows.add(
            (record["id"], record["name"], ITEM_TYPE_SLOTS[record["type"]], record["quality"],
             set_name)
        )  # fmt: skip
    return {
        "guides": guide_rows,
        "builds": build_rows,
        "item_usages": usage_rows,
        "items": item_rows,
    }


def stored_rows(database: Path) -> dict[str, set[tuple[object, ...]]]:
    """The same shape, read from the SQLite file."""
    with sqlite3.connect(database) as connection:
        return rows_from(connection)


def rows_from(connection: Any) -> dict[str, set[tuple[object, ...]]]:
    """The same shape, read through any DB-API connection (SQLite or PostgreSQL)."""
    return {
        "guides": set(connection.execute(
            "SELECT id, url, title, class_name, modified_unix FROM guides")),
        "builds": set(connection.execute(
            "SELECT guide_id, planner_id, profile_index, name, class_name FROM builds")),
        "item_usages": set(connection.execute(
            "SELECT b.guide_id, b.planner_id, b.profile_index, u.item_id, u.slot, u.context "
            "FROM item_usages u JOIN builds b ON b.id = u.build_id")),
        "items": set(connection.execute("SELECT id, name, slot, quality, set_name FROM items")),
    }  # fmt: skip


def dump_tables(database: Path) -> str:
    """Every row of every index table, including ids and sync times, for exact comparison."""
    with sqlite3.connect(database) as connection:
        tables = ["guides", "builds", "items", "item_usages"]
        return json.dumps(
            {t: sorted(map(list, connection.execute(f"SELECT * FROM {t}"))) for t in tables},
            default=str,
        )


def touch_guide(guide: Guide) -> None:
    """Make Maxroll report the guide as modified."""
    guide.modified_unix += 100
