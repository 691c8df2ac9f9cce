"""The index database: schema, engine, repository (writes) and queries (reads)."""

from __future__ import annotations

from d3_item_salvager.data.queries import IndexQueries
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
from d3_item_salvager.data.repository import GuideChanges, IndexRepository, StoredGuide
from d3_item_salvager.data.schema import ensure_schema

__all__ = [
    "AmbiguousGuideError",
    "BuildInfo",
    "CatalogEntry",
    "GuideChanges",
    "GuideInfo",
    "IndexQueries",
    "IndexRepository",
    "ItemReport",
    "ItemUse",
    "ItemVariant",
    "StoredGuide",
    "UnknownClassError",
    "UnknownGuideError",
    "UsedItem",
    "ensure_schema",
]
