"""data.json -> the item catalog: id -> name, slot, quality and set name.

Ids match exactly and case-sensitively; suffix variants (`_x1`, `_p2`) are distinct items. The
older aliases in an item's `ids` list are a fallback lookup only, never a key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from d3_item_salvager.errors import ParseError
from d3_item_salvager.maxroll._json import load_json_object, optional_text
from d3_item_salvager.maxroll.models import CatalogItem


class ItemCatalog:
    """Read-only lookup of catalog items by id, with alias fallback."""

    def __init__(self, items: Mapping[str, CatalogItem], aliases: Mapping[str, str]) -> None:
        self._items = dict(items)
        self._aliases = {alias: target for alias, target in aliases.items() if alias not in items}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self._items.values())

    def get(self, item_id: str) -> CatalogItem | None:
        """The item with this exact id, else the item that lists it as an alias, else None."""
        item = self._items.get(item_id)
        if item is None and item_id in self._aliases:
            item = self._items[self._aliases[item_id]]
        return item


def _slot_resolver(payload: dict[str, Any], document: str) -> dict[str, str | None]:
    item_types = payload.get("itemTypes")
    meta_slots = payload.get("metaSlots") or {}
    if not isinstance(item_types, dict) or not isinstance(meta_slots, dict):
        raise ParseError(document, "'itemTypes' or 'metaSlots' is not an object")
    slots: dict[str, str | None] = {}
    for type_name, info in item_types.items():
        slot = info.get("slot") if isinstance(info, dict) else None
        meta = meta_slots.get(slot) if isinstance(slot, str) else None
        if isinstance(meta, dict) and isinstance(meta.get("slots"), list):
            # A meta-slot (finger, onehand, twohand) is not an equipment slot: store the real ones.
            slots[type_name] = ",".join(str(s) for s in meta["slots"])
        else:
            slots[type_name] = slot if isinstance(slot, str) else None
    return slots


def parse_item_catalog(body: bytes | str, document: str = "item data (data.json)") -> ItemCatalog:
    """Build the catalog from data.json's `items`, `itemTypes`, `metaSlots` and `itemSets`.

    Raises:
        ParseError: when `items` is missing, an item lacks id/name/quality, or an id repeats.
    """
    payload = load_json_object(body, document)
    records = payload.get("items")
    if not isinstance(records, list) or not records:
        raise ParseError(document, "'items' is missing, empty or not a list")
    slot_of_type = _slot_resolver(payload, document)
    raw_sets = payload.get("itemSets")
    item_sets: dict[str, Any] = raw_sets if isinstance(raw_sets, dict) else {}
    items: dict[str, CatalogItem] = {}
    aliases: dict[str, str] = {}
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise ParseError(document, f"items[{position}] is not an object")
        item_id = optional_text(record.get("id"))
        name = optional_text(record.get("name"))
        quality = optional_text(record.get("quality"))
        if item_id is None or name is None or quality is None:
            raise ParseError(document, f"items[{position}] lacks an id, name or quality")
        if item_id in items:
            raise ParseError(document, f"item id {item_id!r} appears twice")
        set_key = optional_text(record.get("set"))
        set_info = item_sets.get(set_key) if set_key else None
        set_name = optional_text(set_info.get("name")) if isinstance(set_info, dict) else None
        item_type = record.get("type")
        items[item_id] = CatalogItem(
            item_id=item_id,
            name=name,
            slot=slot_of_type.get(item_type) if isinstance(item_type, str) else None,
            quality=quality,
            set_name=set_name or set_key,
        )
        for alias in record.get("ids") or []:
            if isinstance(alias, str) and alias:
                aliases.setdefault(alias, item_id)
    return ItemCatalog(items, aliases)
