"""A fake site with what players ask about: one item under two ids, unused items, a magic item,
a Barbarian-tagged guide whose builds are Necromancer builds, and one name for two items."""

from __future__ import annotations

from d3_item_salvager.testing.fake_maxroll import FakeMaxroll
from d3_item_salvager.testing.fake_site import Guide, Site
from tests.index_expectations import expected_rows

SOJ = ("Unique_Ring_Soj_x1", "Unique_Ring_Soj_p2")  # one name, two ids; only _p2 is used
UNUSED = ("Spare Helm", "Spare Boots", "Twin Belt")  # legendary or set, used by no build
# Set items only the Necromancer builds of a Barbarian-tagged guide use (one of them none uses).
RATHMA = {
    "Set_Rathma_Helm": ("Rathma's Skull Helm", "helm", "head"),
    "Set_Rathma_Chest": ("Rathma's Ribcage Plate", "chestarmor", "torso"),
    "Set_Rathma_Bracers": ("Rathma's Macabre Vambraces", "bracers", "wrists"),
    "Set_Rathma_Boots": ("Rathma's Ossified Sabatons", "boots", None),
}
# One name, two items: an ethereal one-hander (unused) and a legendary off-hand (used).
OCULUS = ("Ethereal_Oculus_x1", "Unique_Orb_Oculus_x1")
NECRO_GUIDE_SLUG = "barbarian-tagged-guide-with-rathmas-necromancer-builds-for-season-34"


def add_player_items(site: Site) -> Site:
    """Add the items and the guide; the first guide's first build uses SOJ[1]."""
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
    add_necromancer_guide(site)
    return site


def add_necromancer_guide(site: Site) -> Guide:
    """A guide filed under Barbarian whose two builds are Necromancer builds."""
    for item_id, (name, item_type, _slot) in RATHMA.items():
        site.catalog.append(
            {"id": item_id, "name": name, "type": item_type, "quality": "set", "set": "synthset"}
        )
    site.catalog.append(
        {"id": OCULUS[0], "name": "The Oculus", "type": "sword", "quality": "ethereal"}
    )
    site.catalog.append(
        {"id": OCULUS[1], "name": "The Oculus", "type": "shield", "quality": "legendary"}
    )
    editor = FakeMaxroll(site=site)  # its editing methods work without serving
    planner = editor.add_planner("necromancer", profiles=2)
    for profile in (0, 1):
        for item_id, (_name, _type, slot) in RATHMA.items():
            if slot is not None:
                editor.set_profile_item(planner, profile, slot, item_id)
        editor.set_profile_item(planner, profile, "offhand", OCULUS[1])
    editor.rename_build(planner, 1, "Rathma Army of the Dead")
    guide = editor.add_guide(
        "barbarian", planners=0, title="Season 34 Rathma Builds", slug=NECRO_GUIDE_SLUG
    )
    return editor.edit_guide(guide.slug, variant_planners=[planner])


def expected_candidates(site: Site) -> set[str]:
    """Names of legendary and set items none of whose ids any build uses."""
    used_ids = {str(row[3]) for row in expected_rows(site)["item_usages"]}
    used_names = {r["name"].casefold() for r in site.catalog if r["id"] in used_ids}
    return {
        r["name"]
        for r in site.catalog
        if r["quality"] in ("legendary", "set") and r["name"].casefold() not in used_names
    }
