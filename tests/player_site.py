"""A fake site with what players ask about: one item under two ids, unused items, a magic item."""

from __future__ import annotations

from d3_item_salvager.testing.fake_site import Site
from tests.index_expectations import expected_rows

SOJ = ("Unique_Ring_Soj_x1", "Unique_Ring_Soj_p2")  # one name, two ids; only _p2 is used
UNUSED = ("Spare Helm", "Spare Boots", "Twin Belt")  # legendary or set, used by no build


def add_player_items(site: Site) -> Site:
    """Add the items to the catalog and make the first guide's first build use SOJ[1]."""
    for item_id in SOJ:
        site.catalog.append(
            {"id": item_id, "name": "Stone of Jordan", "type": "ring", "quality": "legendary"}
        )
    site.catalog.append(
        {"id": "Magic_Ring_1", "name": "Plain Ring", "type": "ring", "quality": "magic"}
    )
    for item_id, name, quality in (
        ("Unique_Helm_Spare_x1", "Spare Helm", "legendary"),
        ("Unique_Boots_Spare_x1", "Spare Boots", "set"),
        ("Unique_Belt_Twin_x1", "Twin Belt", "legendary"),
        ("Unique_Belt_Twin_p3", "Twin Belt", "legendary"),
    ):
        record = {"id": item_id, "name": name, "type": "belt", "quality": quality}
        if quality == "set":
            record["set"] = "synthset"
        site.catalog.append(record)
    first_planner = site.planners[site.guides[0].expected_planners()[0]]
    first_planner.profiles[0]["items"]["leftfinger"] = {"id": SOJ[1]}
    return site


def expected_candidates(site: Site) -> set[str]:
    """Names of legendary and set items none of whose ids any build uses."""
    used_ids = {str(row[3]) for row in expected_rows(site)["item_usages"]}
    used_names = {r["name"].casefold() for r in site.catalog if r["id"] in used_ids}
    return {
        r["name"]
        for r in site.catalog
        if r["quality"] in ("legendary", "set") and r["name"].casefold() not in used_names
    }
