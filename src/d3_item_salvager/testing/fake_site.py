"""A synthetic Maxroll site: guides, planner profiles and item data in the real formats.

Documents are generated, not copied: each page carries the traps of docs/maxroll-formats.md (script
copies of planner URLs, altar and follower planners outside Variants, fake 9-digit numbers, repeated
planner elements) so that a parser that falls for one of them gets the wrong answer. `build_site`
makes a site of any size for tests and benchmarks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

GEAR_SLOTS = (
    "head", "shoulders", "neck", "torso", "waist", "hands", "wrists", "legs", "feet",
    "leftfinger", "rightfinger", "mainhand", "offhand",
)  # fmt: skip
FOLLOWER_SLOTS = tuple(slot for slot in GEAR_SLOTS if slot != "offhand") + ("follower",)
CLASSES = ("barbarian", "crusader", "demonhunter", "monk", "necromancer", "witchdoctor", "wizard")
CLASS_SLUGS = {name: "d3-" + {"demonhunter": "demon-hunter", "witchdoctor": "witch-doctor"}.get(
    name, name) for name in CLASSES}  # fmt: skip

# Item types used by the synthetic catalog: type -> slot (a concrete slot or a meta-slot).
ITEM_TYPES = {
    "helm": "head", "shoulders": "shoulders", "amulet": "neck", "chestarmor": "torso",
    "belt": "waist", "gloves": "hands", "bracers": "wrists", "pants": "legs", "boots": "feet",
    "ring": "finger", "sword": "onehand", "axe2h": "twohand", "shield": "offhand",
    "enchantressfocus": "follower",
}  # fmt: skip
TYPE_FOR_SLOT = {
    "head": "helm", "shoulders": "shoulders", "neck": "amulet", "torso": "chestarmor",
    "waist": "belt", "hands": "gloves", "wrists": "bracers", "legs": "pants", "feet": "boots",
    "leftfinger": "ring", "rightfinger": "ring", "mainhand": "sword", "offhand": "shield",
    "follower": "enchantressfocus",
}  # fmt: skip
META_SLOTS = {
    "finger": ["leftfinger", "rightfinger"],
    "onehand": ["mainhand", "offhand"],
    "twohand": ["mainhand"],
}

PageShape = Literal["minified", "pretty", "no-variants"]


@dataclass
class Planner:
    """A planner profile document: a list of profiles, each slot -> item id."""

    planner_id: str
    class_name: str
    profiles: list[dict[str, Any]]

    def document(self) -> bytes:
        data = {
            "profiles": self.profiles,
            "class": self.class_name,
            "name": f"Planner {self.planner_id}",
            "activeProfile": max(len(self.profiles) - 1, 0),
            "active": {"skills": [True, True]},
            "curstat": {"x": 1},
        }
        outer = {
            "id": self.planner_id,
            "date": "2025-01-02 03:04:05",
            "name": f"Planner {self.planner_id}",
            "class": self.class_name,
            "data": json.dumps(data),  # JSON inside JSON, as Maxroll sends it
            "game": "d3",
            "userId": 1,
            "public": True,
            "season": None,
            "tags": "",
        }
        return json.dumps(outer).encode()


@dataclass
class Guide:
    """A build guide: its search hit fields and the planners its page shows."""

    guide_id: int
    slug: str
    title: str
    class_name: str
    modified_unix: int
    variant_planners: list[str]
    core_planner: str
    follower_planners: list[str]
    altar_planner: str
    shape: PageShape = "minified"
    # Real pages are ~420 kB: ~150 kB of article markup and ~265 kB of scripts (real_size).
    filler_bytes: int = 0

    @property
    def permalink(self) -> str:
        return f"https://maxroll.gg/d3/guides/{self.slug}"

    def expected_planners(self) -> list[str]:
        """The planner ids the format notes' rule reads from this guide's page, in page order."""
        if self.shape != "no-variants":
            return list(self.variant_planners)
        every = [self.variant_planners[0], self.core_planner, *self.variant_planners]
        return list(dict.fromkeys(every + self.follower_planners))

    def hit(self) -> dict[str, Any]:
        return {
            "id": str(self.guide_id),
            "post_title": self.title,
            "permalink": self.permalink,
            "category": "Guides",
            "taxonomies": {
                "category": ["guides"],
                "classes": [f"d3-set-of-{self.slug[:8]}", CLASS_SLUGS[self.class_name]],
            },
            "post_modified_unix": self.modified_unix,
            "lang": "en",
            "blog": "d3",
            "tags": None,
            # embed_id is stale on purpose: never a guide marker nor a planner of the guide.
            "skills": {"embed_id": "111111111", "params": {"set": "0"}},
        }


@dataclass
class Site:
    """Everything the fake Maxroll serves."""

    guides: list[Guide] = field(default_factory=list)
    planners: dict[str, Planner] = field(default_factory=dict)
    catalog: list[dict[str, Any]] = field(default_factory=list)
    other_hits: list[dict[str, Any]] = field(default_factory=list)
    extra_data_bytes: int = 0

    def search_hits(self) -> list[dict[str, Any]]:
        """Guides interleaved with resource and meta posts, as the real index mixes them."""
        hits: list[dict[str, Any]] = []
        others = list(self.other_hits)
        for guide in self.guides:
            hits.append(guide.hit())
            if others:
                hits.append(others.pop(0))
        return hits + others

    def guide_by_slug(self, slug: str) -> Guide | None:
        return next((guide for guide in self.guides if guide.slug == slug), None)

    def item_data(self) -> bytes:
        """data.json: items plus the type, meta-slot and set tables, padded to a realistic size."""
        payload = {
            "items": self.catalog,
            "itemTypes": {
                name: {"slot": slot, "name": name.title()} for name, slot in ITEM_TYPES.items()
            },
            "metaSlots": {name: {"slots": slots} for name, slots in META_SLOTS.items()},
            "itemSets": {"synthset": {"name": "Synthetic Battlegear"}},
            "legendaryGems": {"gem_x": {"name": "Not Gear"}},
            "cosmeticItems": [{"id": "Cosmetic_1", "name": "Wings"}],
            "padding": "x" * self.extra_data_bytes,
        }
        return json.dumps(payload).encode()

    def guide_page(self, guide: Guide) -> str:
        return render_guide_page(guide)


def _planner_div(planner_id: str, set_index: str, kind: str, pretty: bool) -> str:
    if pretty:
        return (
            '<div\n      class="d3planner-build w-full"\n'
            f'      data-d3planner-id="{planner_id}"\n      data-d3planner-set="{set_index}"\n'
            f'      data-d3planner-type="{kind}"\n      style="width:360px"\n    ></div>'
        )
    return (
        f'<div class="d3planner-build w-full" data-d3planner-id="{planner_id}" '
        f'data-d3planner-set="{set_index}" data-d3planner-type="{kind}" style="width:360px"></div>'
    )


def render_guide_page(guide: Guide) -> str:
    """A guide page with the real structure and every trap around the Variants planners."""
    pretty = guide.shape == "pretty"
    nl = "\n" if pretty else ""
    heading = "h3" if pretty else "h2"  # follower/gems heading depth differs between pages
    script_urls = (
        [
            f"https://www.maxroll.gg/d3planner/{pid}?set=0\\u0026amp;scale=0.9"
            for pid in guide.variant_planners
        ]
        + [f"https://www.maxroll.gg/d3planner-ptr/{pid}?scale=1" for pid in guide.follower_planners]
        + [
            f"https://maxroll.gg/d3/d3planner/{guide.altar_planner}#1\\u0026altar",
            "https://www.d3planner.com/481464426?set=6",  # third-party, only in the script
        ]
    )
    remix = {
        "state": {
            "loaderData": {
                f"posts-{guide.slug[:5]}": {
                    "post": {"id": guide.guide_id, "content": " ".join(script_urls)},
                    "image": "https://assets.example/503808014.webp",
                }
            }
        }
    }
    variant_divs = []
    for position, pid in enumerate(guide.variant_planners):
        # Each planner appears twice in the tabs, with different sets: de-duplication is needed.
        variant_divs.append(
            f'<div class="tab" data-tab="{position}">'
            + _planner_div(pid, str(position), "paperdoll", pretty)
            + _planner_div(pid, "", "paperdoll", pretty)
            + "</div>"
        )
    variants_section = (
        ""
        if guide.shape == "no-variants"
        else (
            f'<h2 class="text-2xl"{nl} id="variants-header">Variants{nl}</h2>{nl}'
            f'<div class="tabs"><ul><li>Nephalem Rifts</li><li>GR Solo Push</li></ul>'
            f'{nl.join(variant_divs)}<figure class="empty"></figure></div>{nl}'
        )
    )
    intro_planner = guide.variant_planners[0] if guide.variant_planners else guide.core_planner
    no_variants_gear = (
        nl.join(_planner_div(pid, "0", "paperdoll", pretty) for pid in guide.variant_planners)
        if guide.shape == "no-variants"
        else ""
    )
    followers = nl.join(
        _planner_div(pid, "0", "paperdoll", pretty) for pid in guide.follower_planners
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><title>{guide.title}</title></head><body>{nl}'
        f'<nav><h2 class="hidden">Menu</h2></nav><main><article>{nl}'
        f'<h2 id="introduction-header">Introduction</h2>'
        f"{_planner_div(intro_planner, '0', 'paperdoll', pretty)}{nl}"
        f'<h2 id="core-setup-header">Core Setup</h2>'
        f"{_planner_div(guide.core_planner, '0', 'paperdoll', pretty)}{nl}"
        f"{no_variants_gear}{nl}"
        f'<h2 id="global-stat-priorities-header">Global Stat Priorities</h2>'
        f'<{heading} id="altar">Altar "Optimal Path"</{heading}>'
        f"{_planner_div(guide.altar_planner, '1', 'altar', pretty)}{nl}"
        f'<{heading} id="follower">Follower{nl} (Enchantress)</{heading}><h4 id="h-1"></h4>'
        f"{followers}{nl}"
        f"{variants_section}"
        f'<h2 id="video-header-{guide.guide_id}">Video</h2><p>Watch 503808014.</p>{nl}'
        f'<h2 id="mechanics-header">Mechanics</h2>'
        f'<span class="d3planner-item">Some Item Name</span>{nl}'
        f"{_filler_markup(guide.filler_bytes * 3 // 8)}"
        f"</article></main>{nl}"
        f"<script>window.__remixContext = {json.dumps(remix)};</script>"
        f"{_filler_script(guide.filler_bytes * 5 // 8)}"
        f"</body></html>"
    )


def _filler_markup(size: int) -> str:
    """About `size` bytes of article paragraphs, as many elements per kB as a real page."""
    paragraph = (
        '<div class="section"><p>Stack Area Damage and <a href="/d3/items/some-item">Some '
        "Item</a> before pushing; see Convention of Elements for the timing of your burst.</p>"
        "</div>"
    )
    return paragraph * (size // len(paragraph))


def _filler_script(size: int) -> str:
    """About `size` bytes of script, as the page's bundled JSON state is."""
    if size <= 0:
        return ""
    chunk = '{"k":"value","n":12345,"list":[1,2,3],"text":"lorem ipsum dolor"},'
    return f"<script>window.__state = [{chunk * (size // len(chunk))}{{}}];</script>"


def _catalog_item(
    item_id: str, slot: str, index: int, quality: str = "legendary"
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item_id,
        "name": f"Item {index % 97}",  # names repeat on purpose: key on id
        "type": TYPE_FOR_SLOT[slot],
        "quality": quality,
    }
    if quality == "set":
        record["set"] = "synthset"
    return record


def build_site(
    guide_count: int = 5,
    *,
    planners_per_guide: int = 2,
    profiles_per_planner: int = 3,
    items_per_slot: int = 6,
    shared_follower_planners: int = 2,
    data_padding_bytes: int = 0,
    real_size: bool = False,
    seed: int = 7,
) -> Site:
    """A consistent synthetic site: every item a profile uses is in the catalog.

    `real_size`: documents as large as real ones (a capture of each was measured): guide pages
    of ~420 kB with as many elements per kB, profiles whose items carry stats and gems (~4 kB
    per profile). Otherwise pages are ~3 kB and profiles ~2 kB, which parse far faster.
    """
    rng = random.Random(seed)
    site = Site(extra_data_bytes=data_padding_bytes)
    pool: dict[str, list[str]] = {}
    index = 0
    for slot in GEAR_SLOTS + ("follower",):
        type_slot = TYPE_FOR_SLOT[slot]
        ids = []
        for number in range(items_per_slot):
            item_id = f"Unique_{type_slot.title()}_{number:03d}_x1"
            if not any(record["id"] == item_id for record in site.catalog):
                quality = "set" if number % 3 == 0 else "legendary"
                site.catalog.append(_catalog_item(item_id, slot, index, quality))
                index += 1
            ids.append(item_id)
        pool[slot] = ids

    # A real item's stats and gems (from a captured profile), or none.
    stats: dict[str, list[int]] = (
        {"basearmor": [759], "dex": [1000], "vit": [1000], "life": [15], "sockets": [1]}
        if real_size
        else {}
    )
    gems: list[list[object]] = [[9, "diamond"]] if real_size else []

    def new_planner(planner_id: str, class_name: str, follower: bool) -> Planner:
        profiles = []
        for number in range(profiles_per_planner):
            items = {slot: {"id": rng.choice(pool[slot]), "stats": dict(stats), "ancient": True,
                            "gems": list(gems)} for slot in GEAR_SLOTS}  # fmt: skip
            if number == 0:
                items["offhand"] = {}  # an empty slot is not a usage
            follower_items: dict[str, Any] = {}
            if follower:
                follower_items = {slot: {"id": rng.choice(pool[slot])} for slot in FOLLOWER_SLOTS}
                follower_items["neck"] = {}
            profiles.append(
                {
                    "name": f"Variant {number} " if number % 2 else f"Variant {number}",
                    "class": class_name,
                    "seasonal": 0 if number % 2 else 34,
                    "items": items,
                    "kanai": {
                        "weapon": rng.choice(pool["mainhand"]),
                        "armor": rng.choice(pool["feet"]),
                        "jewelry": rng.choice(pool["leftfinger"]),
                    },
                    "follower": "enchantress" if follower else None,
                    "followerItems": follower_items,
                    "followerSkills": [None, None, None, None],
                }
            )
        return Planner(planner_id, class_name, profiles)

    followers = [str(700_000_000 + n) for n in range(shared_follower_planners)]
    for planner_id in followers:
        site.planners[planner_id] = new_planner(planner_id, "monk", follower=True)
    for number in range(guide_count):
        class_name = CLASSES[number % len(CLASSES)]
        variant_ids = [str(300_000_000 + number * 10 + n) for n in range(planners_per_guide)]
        for planner_id in variant_ids:
            site.planners[planner_id] = new_planner(
                planner_id, class_name, follower=number % 2 == 0
            )
        core = str(500_000_000 + number)
        site.planners[core] = new_planner(core, class_name, follower=False)
        site.guides.append(
            Guide(
                guide_id=1000 + number,
                slug=f"guide-{number}-{class_name}-build-guide",
                title=f"Guide {number} {class_name.title()}",
                class_name=class_name,
                modified_unix=1_750_000_000 + number,
                variant_planners=variant_ids,
                core_planner=core,
                follower_planners=followers,
                altar_planner=str(600_000_000 + number),
                shape="pretty" if number % 3 == 1 else "minified",
                filler_bytes=410_000 if real_size else 0,
            )
        )
        site.other_hits.append(
            {
                "id": str(90_000 + number),
                "post_title": f"Resource {number}",
                "permalink": f"https://maxroll.gg/d3/resources/resource-{number}",
                "category": "Resources",
                "taxonomies": {"category": ["resources"]},
                "post_modified_unix": 1_700_000_000,
                "skills": {"embed_id": "222222222"},
            }
        )
    return site
