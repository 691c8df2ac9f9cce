"""Domain records read from Maxroll documents. All frozen: parsers build them, nobody mutates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class ItemUsage:
    """One item a build uses, in one slot of one context."""

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


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One record of the master item table.

    `slot` is the equipment slot, or the slots joined by "," when the item type fits several
    (rings: "leftfinger,rightfinger"); None when the item type is unknown.
    """

    item_id: str
    name: str
    slot: str | None
    quality: str
    set_name: str | None = None
