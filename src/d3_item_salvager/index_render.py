"""How the players' commands show answers: tables for people, one JSON document for scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console

from d3_item_salvager.data.query_models import CatalogEntry, GuideInfo, ItemReport, UsedItem
from d3_item_salvager.index_tables import Column, print_line, print_plain, print_table

# Maxroll's slot keys as players say them.
SLOT_WORDS = {
    "leftfinger": "left finger", "rightfinger": "right finger", "mainhand": "main hand",
    "offhand": "off hand",
}  # fmt: skip


def readable_slots(slots: Sequence[str]) -> str:
    """Slots as words, each once: ("mainhand,offhand", "offhand") -> "main hand or off hand"."""
    keys = dict.fromkeys(key for slot in slots for key in slot.split(",") if key)
    return " or ".join(SLOT_WORDS.get(key, key) for key in keys) or "-"


def limit_note(shown: int, total: int) -> str | None:
    """A line saying that a list was cut, or None when it was not."""
    if shown >= total:
        return None
    return f"showing {shown} of {total}; --limit 0 shows all"


def print_note(console: Console, note: str | None) -> None:
    if note:
        print_line(console, note)


def print_used_items(console: Console, items: Sequence[UsedItem], title: str) -> None:
    """Used items; `classes` are the classes of the builds using each."""
    columns = (
        Column("Item", identifier=True), Column("Quality"), Column("Slot"),
        Column("Builds", right=True), Column("Guides", right=True), Column("Classes"),
        Column("Contexts"),
    )  # fmt: skip
    rows = [
        (
            used.item.name,
            ", ".join(used.item.qualities),
            readable_slots(used.item.slots),
            str(used.builds),
            str(used.guides),
            ", ".join(used.classes),
            ", ".join(used.contexts),
        )
        for used in items
    ]
    print_table(console, title, columns, rows)


def print_catalog(console: Console, entries: Sequence[CatalogEntry], title: str) -> None:
    columns = (
        Column("Item", identifier=True), Column("Quality"), Column("Slot"), Column("Set"),
        Column("Ids", identifier=True),
    )  # fmt: skip
    rows = [
        (
            entry.name,
            ", ".join(entry.qualities),
            readable_slots(entry.slots),
            entry.set_name or "",
            ", ".join(entry.ids),
        )
        for entry in entries
    ]
    print_table(console, title, columns, rows)


def print_guides(console: Console, guides: Sequence[GuideInfo]) -> None:
    """Guides by slug (what --guide takes), with their builds' classes and their own class."""
    columns = (
        Column("Guide", identifier=True), Column("Builds", right=True), Column("Classes"),
        Column("Guide class"), Column("Title"),
    )  # fmt: skip
    rows = [
        (
            guide.slug,
            str(len(guide.builds)),
            ", ".join(sorted({b.class_name for b in guide.builds if b.class_name})),
            guide.guide_class or "",
            guide.title,
        )
        for guide in guides
    ]
    print_table(console, "Guides in the index", columns, rows)


def _verdict(report: ItemReport) -> str:
    if report.used:
        return f"KEEP: used by {len({use.build_id for use in report.uses})} build(s)"
    return "salvage candidate" if report.salvage_candidate else "not a legendary or set item"


def print_choices(console: Console, query: str, reports: Sequence[ItemReport], total: int) -> None:
    """Several items match: their names to choose from, each with its verdict."""
    columns = (Column("Item", identifier=True), Column("Quality"), Column("Verdict"))
    rows = [(r.item.name, ", ".join(r.item.qualities), _verdict(r)) for r in reports]
    title = f"{total} items match {query!r}: ask for one by its name, or add --all to see each"
    print_table(console, title, columns, rows)
    print_note(console, limit_note(len(reports), total))


def print_item_report(console: Console, report: ItemReport, limit: int | None) -> None:
    """One item: each of its ids on its own line, its verdict, then every use (up to `limit`)."""
    entry = report.item
    console.print(f"[bold]{entry.name}[/bold]", highlight=False, markup=True, soft_wrap=True)
    builds_of = {
        v.item_id: len({u.build_id for u in report.uses if u.item_id == v.item_id})
        for v in entry.variants
    }
    variant_columns = (
        Column("  Id", identifier=True), Column("Quality"), Column("Slot"), Column("Set"),
        Column("Builds", right=True),
    )  # fmt: skip
    variant_rows = [
        (
            "  " + v.item_id,
            v.quality,
            readable_slots(v.slots),
            v.set_name or "",
            str(builds_of[v.item_id]),
        )
        for v in entry.variants
    ]
    print_plain(console, "", variant_columns, variant_rows)
    if not report.used:
        print_line(console, f"  used by no build: {_verdict(report)}")
        return
    builds = len({use.build_id for use in report.uses})
    guides = len({use.guide_id for use in report.uses})
    print_line(console, f"  KEEP: used by {builds} build(s) in {guides} guide(s)")
    uses = report.uses if limit is None else report.uses[:limit]
    columns = (
        Column("Guide", identifier=True), Column("Build"), Column("Class"), Column("Context"),
        Column("Slot"), Column("Id", identifier=True),
    )  # fmt: skip
    rows = [
        (
            use.guide_slug,
            use.build_name,
            use.class_name or "",
            use.context,
            readable_slots((use.slot,)),
            use.item_id,
        )
        for use in uses
    ]
    print_table(console, "", columns, rows)
    note = limit_note(len(uses), len(report.uses))
    print_note(console, f"  {note}" if note else None)


def items_document(
    scope: dict[str, Any], items: Sequence[UsedItem] | Sequence[CatalogEntry], total: int
) -> dict[str, Any]:
    """The `items --json` document."""
    return {"scope": scope, "total": total, "items": [item.to_dict() for item in items]}


def item_document(
    query: str, reports: Sequence[ItemReport], suggestions: Sequence[str]
) -> dict[str, Any]:
    """The `item --json` document; `suggestions` (close names) only when nothing matched."""
    document: dict[str, Any] = {"query": query, "matches": [r.to_dict() for r in reports]}
    if not reports:
        document["suggestions"] = list(suggestions)
    return document
