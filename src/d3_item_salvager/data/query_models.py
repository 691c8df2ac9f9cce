"""What the index read API returns: plain frozen dataclasses, never ORM rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from d3_item_salvager.errors import D3ItemSalvagerError


class UnknownClassError(D3ItemSalvagerError, LookupError):
    """A class name that is not one of Diablo 3's seven classes."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown class {name!r}; known classes: {', '.join(known)}")
        self.name = name


class UnknownGuideError(D3ItemSalvagerError, LookupError):
    """A guide slug, URL or id the index does not hold."""

    def __init__(self, guide: str) -> None:
        super().__init__(
            f"no guide {guide!r} in the index; `python -m d3_item_salvager guides` lists them"
        )
        self.guide = guide


class AmbiguousGuideError(D3ItemSalvagerError, LookupError):
    """A slug prefix that several guides' slugs start with."""

    def __init__(self, guide: str, candidates: tuple[str, ...]) -> None:
        super().__init__(
            f"guide {guide!r} is ambiguous: {len(candidates)} guides' slugs start with it: "
            f"{', '.join(candidates)}"
        )
        self.guide = guide
        self.candidates = candidates


@dataclass(frozen=True, slots=True)
class ItemVariant:
    """One catalog id of an item name, with its own quality, slots and set."""

    item_id: str
    quality: str
    slots: tuple[str, ...]  # the equipment slots it fits (several for rings and one-handers)
    set_name: str | None


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """An item as players know it: one name, with every catalog id that name has.

    `slots` and `qualities` merge the ids'; `variants` keeps each id's own (an ethereal and a
    legendary may share a name).
    """

    name: str
    ids: tuple[str, ...]
    slots: tuple[str, ...]
    qualities: tuple[str, ...]
    set_name: str | None
    variants: tuple[ItemVariant, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ItemUse:
    """One way one build of one guide uses an item."""

    item_id: str
    guide_id: int
    guide_slug: str
    guide_title: str
    guide_class: str | None  # the class the guide is filed under on Maxroll
    build_id: int
    build_name: str
    class_name: str | None  # the build's class (its planner profile's)
    slot: str
    context: str


@dataclass(frozen=True, slots=True)
class UsedItem:
    """An item with a summary of the builds that use it (within the asked scope); `classes` are
    the classes of those builds."""

    item: CatalogEntry
    builds: int
    guides: int
    classes: tuple[str, ...]
    contexts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ItemReport:
    """Is this item used, where and how: every use by every build, all of its ids together."""

    item: CatalogEntry
    uses: tuple[ItemUse, ...]

    @property
    def used(self) -> bool:
        return bool(self.uses)

    @property
    def salvage_candidate(self) -> bool:
        """Unused, and of a quality worth deciding about (legendary or set)."""
        return not self.uses and bool({"legendary", "set"} & set(self.item.qualities))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "used": self.used,
            "salvage_candidate": self.salvage_candidate,
        }


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """A build (planner profile) of a guide."""

    build_id: int
    name: str
    class_name: str | None
    planner_id: str
    profile_index: int


@dataclass(frozen=True, slots=True)
class GuideInfo:
    """A guide and its builds. `guide_class` is the class the guide is filed under on Maxroll;
    each build has its own `class_name` (its planner profile's), which may differ."""

    guide_id: int
    slug: str
    title: str
    url: str
    guide_class: str | None
    last_synced_at: str
    builds: tuple[BuildInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
