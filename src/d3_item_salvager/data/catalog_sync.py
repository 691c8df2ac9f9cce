"""Bring the `items` table in line with the whole item catalog (data.json).

The index holds every catalog item, used or not, so that "which items does no build use" can be
asked. A catalog change (a renamed item, a new set) reaches the table as soon as a new data.json
is loaded, without waiting for a guide to change. Rows are diffed: an unchanged catalog writes
nothing.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from d3_item_salvager.data.schema import items
from d3_item_salvager.maxroll.catalog import ItemCatalog
from d3_item_salvager.maxroll.models import CatalogItem

_Values = tuple[str, str | None, str, str | None]


def _values(record: CatalogItem) -> _Values:
    return (record.name, record.slot, record.quality, record.set_name)


def _row(item_id: str, values: _Values) -> dict[str, str | None]:
    name, slot, quality, set_name = values
    return {"id": item_id, "name": name, "slot": slot, "quality": quality, "set_name": set_name}


async def sync_catalog_items(connection: AsyncConnection, catalog: ItemCatalog) -> int:
    """Insert missing catalog items and update changed ones; return how many rows changed.

    Rows the catalog does not list are kept: an alias id (stored when a profile used it) takes
    its item's details, and a placeholder for an unknown id stays, since usages point at it.
    """
    stored: dict[str, _Values] = {
        row.id: (row.name, row.slot, row.quality, row.set_name)
        for row in await connection.execute(select(items))
    }
    new_rows: list[dict[str, str | None]] = []
    changed_rows: list[dict[str, str | None]] = []
    listed: set[str] = set()
    for record in catalog:
        listed.add(record.item_id)
        values = _values(record)
        if record.item_id not in stored:
            new_rows.append(_row(record.item_id, values))
        elif stored[record.item_id] != values:
            changed_rows.append(_row(record.item_id, values))
    for item_id, values in stored.items():
        if item_id in listed:
            continue
        alias_of = catalog.get(item_id)
        if alias_of is not None and _values(alias_of) != values:
            changed_rows.append(_row(item_id, _values(alias_of)))
    if new_rows:
        await connection.execute(items.insert(), new_rows)
    if changed_rows:
        await connection.execute(
            update(items)
            .where(items.c.id == bindparam("item_id"))
            .values(
                name=bindparam("new_name"),
                slot=bindparam("new_slot"),
                quality=bindparam("new_quality"),
                set_name=bindparam("new_set_name"),
            ),
            [
                {
                    "item_id": row["id"],
                    "new_name": row["name"],
                    "new_slot": row["slot"],
                    "new_quality": row["quality"],
                    "new_set_name": row["set_name"],
                }
                for row in changed_rows
            ],
        )
    return len(new_rows) + len(changed_rows)
