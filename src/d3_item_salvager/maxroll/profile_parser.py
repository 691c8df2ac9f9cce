"""Planner profile JSON -> one build per profile, with its main, Kanai and follower items.

The profile's `data` field is itself a JSON document in a string, so it is decoded twice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from d3_item_salvager.errors import ParseError
from d3_item_salvager.maxroll._json import (
    JSONDecodeError,
    load_json,
    load_json_object,
    optional_text,
)
from d3_item_salvager.maxroll.models import (
    CLASS_NAMES,
    BuildRecord,
    ItemUsage,
    PlannerProfile,
    UsageContext,
)

KANAI_SLOTS = ("weapon", "armor", "jewelry")
_MAX_ITEM_ID_LENGTH = 200


@lru_cache(maxsize=8192)
def _usage(item_id: str, slot: str, context: UsageContext) -> ItemUsage:
    """One shared `ItemUsage` per (item, slot, context): records are frozen, so sharing is safe.

    A sync parses ~170 usages per guide and holds them until the guide is written, so fresh
    records outlive young collections and make up most of what the collector walks in its
    middle generation; the same few thousand usages recur across guides. Bounded, so a host
    process never keeps more than a few MB of them.
    """
    return ItemUsage(item_id=item_id, slot=slot, context=context)


def _item_id(value: object) -> str | None:
    item_id = optional_text(value)
    if item_id is None or len(item_id) > _MAX_ITEM_ID_LENGTH:
        return None
    return item_id.strip()


def _class_name(value: object) -> str | None:
    name = optional_text(value)
    return name.strip().lower() if name and name.strip().lower() in CLASS_NAMES else None


def _equipped(slots: object, context: UsageContext, document: str, where: str) -> list[ItemUsage]:
    """Usages from a slot -> {id, ...} mapping, skipping empty `{}` entries."""
    if slots is None or slots == [] or slots == "":
        return []
    if not isinstance(slots, dict):
        raise ParseError(document, f"{where} is a {type(slots).__name__}, not an object")
    usages = []
    for slot, entry in slots.items():
        if not isinstance(entry, dict) or not entry:
            continue
        item_id = _item_id(entry.get("id"))
        if item_id is not None:
            usages.append(_usage(item_id, str(slot), context))
    return usages


def _cube(kanai: object, document: str, where: str) -> list[ItemUsage]:
    """Kanai's cube: {weapon, armor, jewelry} whose values are plain id strings."""
    if kanai is None or kanai == [] or kanai == "":
        return []
    if not isinstance(kanai, dict):
        raise ParseError(document, f"{where} is a {type(kanai).__name__}, not an object")
    usages = []
    for slot in KANAI_SLOTS:
        item_id = _item_id(kanai.get(slot))
        if item_id is not None:
            usages.append(_usage(item_id, slot, "kanai"))
    return usages


def _build(
    planner_id: str, index: int, profile: dict[str, Any], default_class: str | None, document: str
) -> BuildRecord:
    where = f"profiles[{index}]"
    usages = (
        _equipped(profile.get("items"), "main", document, f"{where}.items")
        + _cube(profile.get("kanai"), document, f"{where}.kanai")
        + _equipped(profile.get("followerItems"), "follower", document, f"{where}.followerItems")
    )
    # Unique on (item, slot, context): a repeated entry is one usage.
    unique = tuple(dict.fromkeys(usages))
    name = (optional_text(profile.get("name")) or f"Profile {index + 1}").strip()
    return BuildRecord(
        planner_id=planner_id,
        profile_index=index,
        name=name,
        class_name=_class_name(profile.get("class")) or default_class,
        usages=unique,
    )


def parse_planner_profile(body: bytes | str, planner_id: str) -> PlannerProfile:
    """The builds of one planner, `profile_index` being the position in `data.profiles`.

    Raises:
        ParseError: when the document or its `data` is not JSON, or has no `profiles` list.
    """
    document = f"planner profile {planner_id}"
    outer = load_json_object(body, document)
    data = outer.get("data")
    if isinstance(data, str):
        try:
            data = load_json(data)
        except JSONDecodeError as exc:
            raise ParseError(document, f"its 'data' field is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ParseError(document, "its 'data' field is missing or not a JSON object")
    profiles = data.get("profiles")
    if not isinstance(profiles, list):
        raise ParseError(document, "'data.profiles' is missing or not a list")
    default_class = _class_name(outer.get("class")) or _class_name(data.get("class"))
    builds = []
    for index, profile in enumerate(profiles):
        if not isinstance(profile, dict):
            raise ParseError(document, f"profiles[{index}] is not an object")
        builds.append(_build(planner_id, index, profile, default_class, document))
    name = optional_text(outer.get("name")) or optional_text(data.get("name")) or planner_id
    return PlannerProfile(
        planner_id=planner_id,
        name=name.strip(),
        class_name=default_class,
        builds=tuple(builds),
    )
