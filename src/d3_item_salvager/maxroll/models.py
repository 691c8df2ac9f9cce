"""Domain records read from Maxroll documents. All frozen: parsers build them, nobody mutates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

UsageContext = Literal["main", "kanai", "follower"]

CLASS_NAMES = frozenset(
    {"barbarian", "crusader", "demonhunter", "monk", "necromancer", "witchdoctor", "wizard"}
)


@dataclass(frozen=True, slots=True)
class GuideRecord:
    """One D3 build guide as listed by the search API."""

    guide_id: int
    title: str
    url: str
    modified_unix: int
    class_name: str | None = None


class ItemUsage(NamedTuple):
    """One item a build uses, in one slot of one context.

    A named tuple, not a dataclass: a sync hashes and compares ~170 of them per guide (to drop
    repeats, to diff against the index) and writes them as rows; a tuple's hash, equality and
    row form cost no Python-level calls.
    """

    item_id: str
    slot: str
    context: UsageContext


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """One profile of a planner: a build a guide recommends."""

    planner_id: str
    profile_index: int
    name: str
    class_name: str | None
    usages: tuple[ItemUsage, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PlannerProfile:
    """A planner and its builds (one per profile, in `data.profiles` order)."""

    planner_id: str
    name: str
    class_name: str | None
    builds: tuple[BuildRecord, ...]


class CatalogItem(NamedTuple):
    """One record of the master item table.

    `slot` is the equipment slot, or the slots joined by "," when the item type fits several
    (rings: "leftfinger,rightfinger"); None when the item type is unknown. A named tuple, as
    ItemUsage: it is also the row the index stores, with no conversion per guide.
    """

    item_id: str
    name: str
    slot: str | None
    quality: str
    set_name: str | None = None
