"""The index read API: what builds use, what none uses, guides and their builds.

Async, SQLAlchemy Core, SQLite and PostgreSQL; plain dataclasses out. Items are reported by name
with every id that name has, because players know items by name and Maxroll lists some of them
under several ids; the salvage rule follows the same idea (see the views' migration,
migrations/versions/r0002_item_views.py).
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from d3_item_salvager.config import AppConfig, DatabaseConfig
from d3_item_salvager.data.query_models import (
    AmbiguousGuideError,
    BuildInfo,
    CatalogEntry,
    GuideInfo,
    ItemReport,
    ItemUse,
    ItemVariant,
    UnknownClassError,
    UnknownGuideError,
    UsedItem,
)
from d3_item_salvager.data.read_only import read_only_index
from d3_item_salvager.data.schema import USAGE_CONTEXTS, builds, guides, item_usages, items
from d3_item_salvager.maxroll.models import CLASS_NAMES

KNOWN_CLASSES = tuple(sorted(CLASS_NAMES))
# The qualities worth a keep-or-salvage decision (as in the salvage_candidates view).
SALVAGE_QUALITIES = ("legendary", "set")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")

# A usage's class is its build's (the planner profile's), as in the item_usage view (0004); the
# guide's own class is another attribute (`guide_class`).
_usage_class = builds.c.class_name
# How close a name must be to be suggested for one that matched nothing (difflib's ratio).
SUGGESTION_CUTOFF = 0.6


def name_key(text: str) -> str:
    """A name as searched: case-folded, letters and digits only ("Kadala's Boon" -> "kadalasboon")."""
    return _NOT_ALNUM.sub("", text.casefold())


def class_key(text: str) -> str:
    """A class as stored ("Demon Hunter", "demon-hunter", "d3-demon-hunter" -> "demonhunter").

    Raises:
        UnknownClassError: not one of the seven classes.
    """
    key = name_key(text.strip().casefold().removeprefix("d3-"))
    if key not in CLASS_NAMES:
        raise UnknownClassError(text, KNOWN_CLASSES)
    return key


def guide_slug(url: str) -> str:
    """The last path segment of a guide URL: what players type to name a guide."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def is_exact_match(report: ItemReport, query: str) -> bool:
    """The report's item is the one asked for by its whole name or one of its ids."""
    wanted = name_key(query)
    return query.strip() in report.item.ids or bool(wanted and name_key(report.item.name) == wanted)


def _use_order(use: ItemUse) -> tuple[str, str, int, str, str, str]:
    return (use.guide_title, use.build_name, use.build_id, use.context, use.slot, use.item_id)


@dataclass(frozen=True, slots=True)
class _ItemRow:
    item_id: str
    name: str
    slot: str | None
    quality: str
    set_name: str | None


def _slot_list(slot: str | None) -> tuple[str, ...]:
    return tuple(slot.split(",")) if slot else ()


def _entries(rows: Iterable[_ItemRow]) -> dict[str, CatalogEntry]:
    """Item rows grouped by case-folded name, keyed by it."""
    grouped: dict[str, list[_ItemRow]] = defaultdict(list)
    for row in rows:
        grouped[row.name.casefold()].append(row)
    entries = {}
    for key, group in grouped.items():
        group.sort(key=lambda row: row.item_id)
        entries[key] = CatalogEntry(
            name=group[0].name,
            ids=tuple(row.item_id for row in group),
            slots=tuple(dict.fromkeys(row.slot for row in group if row.slot)),
            qualities=tuple(dict.fromkeys(row.quality for row in group)),
            set_name=next((row.set_name for row in group if row.set_name), None),
            variants=tuple(
                ItemVariant(row.item_id, row.quality, _slot_list(row.slot), row.set_name)
                for row in group
            ),
        )
    return entries


class IndexQueries:
    """Read-only questions to the index: `IndexQueries(engine)`, or `IndexQueries.open(config)`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    @asynccontextmanager
    async def open(cls, config: AppConfig | DatabaseConfig) -> AsyncIterator[IndexQueries]:
        """`async with IndexQueries.open(config) as queries:` reads the index of a config.

        Read-only (SQLite files are opened `mode=ro`), never creates or migrates the index; the
        engine is disposed on exit.

        Raises:
            IndexDatabaseError: no synced index there, or it cannot be opened.
        """
        database = config.database if isinstance(config, AppConfig) else config
        async with read_only_index(database) as engine:
            yield cls(engine)

    # Guides

    async def guides(self, class_name: str | None = None) -> list[GuideInfo]:
        """Every guide (with a build of a class, when given) with all its builds, by title."""
        query = select(
            guides,
            builds.c.id.label("build_id"),
            builds.c.name.label("build_name"),
            builds.c.class_name.label("build_class"),
            builds.c.planner_id,
            builds.c.profile_index,
        ).outerjoin(builds, builds.c.guide_id == guides.c.id)
        if class_name is not None:
            with_class = select(builds.c.guide_id).where(
                builds.c.class_name == class_key(class_name)
            )
            query = query.where(guides.c.id.in_(with_class))
        heads: dict[int, Row[Any]] = {}
        builds_of: dict[int, list[BuildInfo]] = defaultdict(list)
        async with self._engine.connect() as connection:
            for row in await connection.execute(query):
                heads.setdefault(row.id, row)
                if row.build_id is not None:
                    builds_of[row.id].append(
                        BuildInfo(
                            row.build_id,
                            row.build_name,
                            row.build_class,
                            row.planner_id,
                            row.profile_index,
                        )
                    )
        result = [
            GuideInfo(row.id, guide_slug(row.url), row.title, row.url, row.class_name,
                      row.last_synced_at,
                      tuple(sorted(builds_of[row.id], key=lambda b: (b.planner_id, b.profile_index))))
            for row in heads.values()
        ]  # fmt: skip
        return sorted(result, key=lambda guide: (guide.title.casefold(), guide.guide_id))

    async def guide(self, reference: str) -> GuideInfo:
        """A guide by slug, URL, post id, or a prefix of one slug only.

        Raises:
            UnknownGuideError: the index holds no such guide.
            AmbiguousGuideError: the prefix starts several guides' slugs (it lists them).
        """
        wanted = reference.strip()
        every = await self.guides()
        for guide in every:
            if wanted in (guide.slug, guide.url, str(guide.guide_id)) or (
                guide_slug(wanted) == guide.slug and wanted.startswith("http")
            ):
                return guide
        prefixed = [guide for guide in every if wanted and guide.slug.startswith(wanted)]
        if len(prefixed) > 1:
            raise AmbiguousGuideError(reference, tuple(sorted(g.slug for g in prefixed)))
        if prefixed:
            return prefixed[0]
        raise UnknownGuideError(reference)

    # Items

    async def items_used(
        self,
        *,
        class_name: str | None = None,
        guide: str | None = None,
        build_id: int | None = None,
    ) -> list[UsedItem]:
        """Items the builds in scope use (all builds, a class's, a guide's or one build's).

        Most used first. Raises UnknownClassError or UnknownGuideError for an unknown scope.
        """
        conditions = await self._scope(class_name, guide, build_id)
        uses = await self._uses(conditions)
        rows = await self._item_rows()
        entries = _entries(rows)
        names = {row.item_id: row.name.casefold() for row in rows}
        by_name: dict[str, list[ItemUse]] = defaultdict(list)
        for use in uses:
            by_name[names[use.item_id]].append(use)
        result = [
            UsedItem(
                item=entries[key],
                builds=len({use.build_id for use in item_uses}),
                guides=len({use.guide_id for use in item_uses}),
                classes=tuple(sorted({use.class_name for use in item_uses if use.class_name})),
                contexts=tuple(c for c in USAGE_CONTEXTS if c in {u.context for u in item_uses}),
            )
            for key, item_uses in by_name.items()
        ]
        return sorted(result, key=lambda used: (-used.builds, used.item.name.casefold()))

    async def salvage_candidates(self, class_name: str | None = None) -> list[CatalogEntry]:
        """Legendary and set items that no current build uses (of a class's guides, when given).

        An item counts as used when any of its ids is used. By name.
        """
        conditions = await self._scope(class_name, None, None)
        rows = await self._item_rows()
        names = {row.item_id: row.name.casefold() for row in rows}
        used = {names[use.item_id] for use in await self._uses(conditions)}
        entries = _entries(rows)
        return sorted(
            (
                entry
                for key, entry in entries.items()
                if key not in used and set(entry.qualities) & set(SALVAGE_QUALITIES)
            ),
            key=lambda entry: entry.name.casefold(),
        )

    async def item(self, item_id: str) -> ItemReport | None:
        """Is the item with this id used, where and how (with every id its name has)."""
        rows = await self._item_rows()
        match = next((row for row in rows if row.item_id == item_id), None)
        if match is None:
            return None
        return (await self._reports(rows, [match.name.casefold()]))[0]

    async def find_items(self, name: str) -> list[ItemReport]:
        """Items whose name contains `name`, ignoring case and punctuation, or with that exact id.

        The exact name comes first, then names that start with it, then the rest by name.
        """
        wanted = name_key(name)
        rows = await self._item_rows()
        keys: dict[str, tuple[int, str]] = {}
        for row in rows:
            key = name_key(row.name)
            if row.item_id == name.strip() or (wanted and key == wanted):
                rank = 0
            elif wanted and key.startswith(wanted):
                rank = 1
            elif wanted and wanted in key:
                rank = 2
            else:
                continue
            folded = row.name.casefold()
            keys[folded] = min(keys.get(folded, (rank, folded)), (rank, folded))
        ordered = sorted(keys, key=lambda folded: keys[folded])
        return await self._reports(rows, ordered)

    async def suggest_names(self, name: str, limit: int = 5) -> list[str]:
        """Item names closest to `name` (for one that matched nothing), closest first."""
        names: dict[str, str] = {}
        for row in await self._item_rows():
            names.setdefault(name_key(row.name), row.name)
        close = difflib.get_close_matches(name_key(name), names, n=limit, cutoff=SUGGESTION_CUTOFF)
        return [names[key] for key in close]

    # Steps

    async def _scope(
        self, class_name: str | None, guide: str | None, build_id: int | None
    ) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if class_name is not None:
            conditions.append(_usage_class == class_key(class_name))
        if guide is not None:
            conditions.append(builds.c.guide_id == (await self.guide(guide)).guide_id)
        if build_id is not None:
            conditions.append(builds.c.id == build_id)
        return conditions

    async def _uses(self, conditions: Sequence[ColumnElement[bool]]) -> list[ItemUse]:
        query = (
            select(
                item_usages.c.item_id,
                item_usages.c.slot,
                item_usages.c.context,
                builds.c.id.label("build_id"),
                builds.c.name.label("build_name"),
                _usage_class.label("usage_class"),
                guides.c.id.label("guide_id"),
                guides.c.url,
                guides.c.title,
                guides.c.class_name.label("guide_class"),
            )
            .join(builds, builds.c.id == item_usages.c.build_id)
            .join(guides, guides.c.id == builds.c.guide_id)
            .where(*conditions)
        )
        async with self._engine.connect() as connection:
            rows = await connection.execute(query)
            uses = [
                ItemUse(
                    row.item_id,
                    row.guide_id,
                    guide_slug(row.url),
                    row.title,
                    row.guide_class,
                    row.build_id,
                    row.build_name,
                    row.usage_class,
                    row.slot,
                    row.context,
                )
                for row in rows
            ]
        return sorted(uses, key=_use_order)

    async def _item_rows(self) -> list[_ItemRow]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                select(items.c.id, items.c.name, items.c.slot, items.c.quality, items.c.set_name)
            )
            return [_ItemRow(*row) for row in rows]

    async def _reports(self, rows: list[_ItemRow], keys: Sequence[str]) -> list[ItemReport]:
        if not keys:
            return []
        entries = _entries(rows)
        wanted_ids = [item_id for key in keys for item_id in entries[key].ids]
        uses_of: dict[str, list[ItemUse]] = defaultdict(list)
        for use in await self._uses([item_usages.c.item_id.in_(wanted_ids)]):
            uses_of[use.item_id].append(use)
        reports = []
        for key in keys:
            entry = entries[key]
            uses = [use for item_id in entry.ids for use in uses_of[item_id]]
            reports.append(ItemReport(item=entry, uses=tuple(sorted(uses, key=_use_order))))
        return reports
