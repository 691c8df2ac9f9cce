"""How the players' commands show answers: rich tables for people, one JSON document for scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from d3_item_salvager.data.query_models import CatalogEntry, GuideInfo, ItemReport, UsedItem


def _ids(entry: CatalogEntry) -> str:
    return ", ".join(entry.ids)


def _slots(entry: CatalogEntry) -> str:
    return ", ".join(entry.slots) or "-"


def limit_note(shown: int, total: int) -> str | None:
    """A line saying that a list was cut, or None when it was not."""
    if shown >= total:
        return None
    return f"showing {shown} of {total}; --limit 0 shows all"


def used_items_table(items: Sequence[UsedItem], title: str) -> Table:
    """Used items, narrow enough for 80 columns (`item NAME` or --json give ids and sets)."""
    table = Table(title=title, title_justify="left")
    table.add_column("Item", no_wrap=True)
    table.add_column("Quality")
    table.add_column("Slot")
    table.add_column("Builds", justify="right")
    table.add_column("Guides", justify="right")
    table.add_column("Classes")
    table.add_column("Contexts")
    for used in items:
        entry = used.item
        classes = ", ".join(used.classes) if len(used.classes) <= 2 else f"{len(used.classes)}"
        table.add_row(
            entry.name, ", ".join(entry.qualities), _slots(entry), str(used.builds),
            str(used.guides), classes, ", ".join(used.contexts),
        )  # fmt: skip
    return table


def catalog_table(entries: Sequence[CatalogEntry], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("Item", "Ids", "Slot", "Quality", "Set"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry.name, _ids(entry), _slots(entry), ", ".join(entry.qualities),
            entry.set_name or "",
        )  # fmt: skip
    return table


def guides_table(guides: Sequence[GuideInfo]) -> Table:
    table = Table(title="Guides in the index", title_justify="left")
    for column in ("Guide", "Class", "Builds", "Title"):
        table.add_column(column)
    for guide in guides:
        table.add_row(guide.slug, guide.class_name or "", str(len(guide.builds)), guide.title)
    return table


def print_item_report(console: Console, report: ItemReport, limit: int | None) -> None:
    """One item: its ids and verdict, then every use (up to `limit`)."""
    entry = report.item
    details = ", ".join(filter(None, (", ".join(entry.qualities), entry.set_name, _slots(entry))))
    console.print(f"[bold]{entry.name}[/bold] ({details})", highlight=False)
    console.print(f"  ids: {_ids(entry)}", highlight=False)
    if not report.used:
        verdict = "salvage candidate" if report.salvage_candidate else "not a legendary or set item"
        console.print(f"  used by no build: {verdict}", highlight=False)
        return
    builds = len({use.build_id for use in report.uses})
    guides = len({use.guide_id for use in report.uses})
    console.print(f"  KEEP: used by {builds} build(s) in {guides} guide(s)", highlight=False)
    uses = report.uses if limit is None else report.uses[:limit]
    table = Table()
    for column in ("Guide", "Build", "Class", "Context", "Slot", "Id"):
        table.add_column(column)
    for use in uses:
        table.add_row(use.guide_slug, use.build_name, use.class_name or "", use.context,
                      use.slot, use.item_id)  # fmt: skip
    console.print(table)
    note = limit_note(len(uses), len(report.uses))
    if note:
        console.print(f"  {note}", highlight=False)


def items_document(
    scope: dict[str, Any], items: Sequence[UsedItem] | Sequence[CatalogEntry], total: int
) -> dict[str, Any]:
    """The `items --json` document."""
    return {"scope": scope, "total": total, "items": [item.to_dict() for item in items]}


def item_document(query: str, reports: Sequence[ItemReport]) -> dict[str, Any]:
    """The `item --json` document."""
    return {"query": query, "matches": [report.to_dict() for report in reports]}
